"""Bad input through the real CLI: exit code 2, one line on stderr naming the file, line or
field and the fix, no traceback, and nothing run or written before the refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from leti.cli import main
from leti.config import dump_config, load_config


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("leti: error: "), err
    return err


@pytest.fixture
def config(tmp_path: Path, add_task: str) -> Path:
    """A small run config on the add_task problems (offline: no pretraining mix)."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": str(tmp_path / "no-model-needed"), "device": "cpu", "task": add_task, "iterations": 1,
        "progress": False, "sampling": {"n": 2, "max_new_tokens": 8}, "eval": {"n": 2, "ks": [1]},
        "execution": {"workers": 1}, "trainer": {"epochs": 1, "batch_size": 2, "max_length": 64, "pretrain_mix_ratio": 0},
    }))
    return path


# --- config values ------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    # nan passed every range check and failed (or silently crashed every program) mid-run
    ("sampling.temperature=.nan", "field 'sampling.temperature' = nan must be a finite number"),
    ("execution.timeout_s=.nan", "field 'execution.timeout_s' = nan must be a finite number"),
    ("execution.timeout_s=.inf", "field 'execution.timeout_s' = inf must be a finite number"),
    # eval's sampling settings were only checked by the sampler, under the name 'sampling.'
    ("eval.temperature=-1", "eval.temperature must be >= 0 (0 = greedy), got -1.0"),
    ("eval.top_p=0", "eval.top_p must be in (0, 1] (1.0 = off), got 0.0"),
    ("sampling.top_p=1.5", "sampling.top_p must be in (0, 1] (1.0 = off), got 1.5"),
    # torch refused these only when the optimiser was built, after a sampling phase
    ("trainer.adam_beta1=2", "trainer.adam_beta1 must be in [0, 1), got 2.0"),
    ("trainer.adam_beta2=-0.5", "trainer.adam_beta2 must be in [0, 1), got -0.5"),
    # silently meant "no clipping" / "train nothing" / "no limit" / "every program crashes"
    ("trainer.max_grad_norm=-1", "trainer.max_grad_norm must be >= 0 (0 = no clipping), got -1.0"),
    ("trainer.lora.alpha=0", "trainer.lora.alpha must be >= 1, got 0"),
    ("execution.file_size_mb=-1", "execution.file_size_mb must be >= 0, got -1"),
    ("execution.open_files=-1", "execution.open_files must be >= 1, got -1"),
    ("execution.max_output_bytes=-1", "execution.max_output_bytes must be >= 0, got -1"),
    ("execution.max_processes=2", "execution.max_processes must be >= 4, got 2"),
    ("eval.ks=[1,1]", "eval.ks=[1, 1] repeats a k; list each k once"),
    # a typo's 10**20 ran out of memory (iterations, n), traced back (lora.r), or, from 2**43 MiB,
    # overflowed the sandbox's rlimits so that every program crashed and was trained on as such
    ("iterations=100000000000000000000", "iterations must be at most 1000000, got 100000000000000000000"),
    ("sampling.n=1000001", "sampling.n must be at most 1000000, got 1000001"),
    ("eval.n=1000001", "eval.n must be at most 1000000, got 1000001"),
    ("execution.memory_mb=8796093022208", "execution.memory_mb must be at most 1099511627776 (MiB, 2**40), got 8796093022208"),
    ("execution.file_size_mb=1099511627777",
     "execution.file_size_mb must be at most 1099511627776 (MiB, 2**40), got 1099511627777"),
    ("trainer.lora.r=65537", "trainer.lora.r must be at most 65536, got 65537"),
])
def test_out_of_range_values_are_refused_before_the_run_starts(config, tmp_path, capsys, override, message):
    run_dir = tmp_path / "run"
    assert main(["run", str(config), "--run-dir", str(run_dir), "--set", override]) == 2
    assert one_error_line(capsys) == f"leti: error: --set {override}: {message}"
    assert not run_dir.exists()


def test_the_largest_memory_and_file_size_limits_still_run_programs():
    # the bound above is what the sandbox's rlimits still take: a program runs and passes
    from leti.execution import ExecutionConfig, Executor, Program
    from leti.execution.config import MAX_LIMIT_MB

    config = ExecutionConfig(workers=1, memory_mb=MAX_LIMIT_MB, file_size_mb=MAX_LIMIT_MB)
    program = Program(program="open('out', 'wb').write(b'a' * (2 << 20))\nx = bytearray(50 << 20)\n",
                      tests="assert len(x) == 50 << 20\n")
    with Executor(config, progress=False) as ex:
        (result,) = ex.run([program])
    assert result.passed, result.feedback


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_fp16_mixed_precision_on_a_cpu_is_refused_before_sampling(config, tmp_path, tiny_model_path, capsys):
    # Accelerate trained fp32 under 'fp16' on a CPU without a word, after a whole sampling phase
    run_dir = tmp_path / "run"
    args = ["--run-dir", str(run_dir), "--set", f"model={tiny_model_path}", "--set", "trainer.mixed_precision=fp16"]
    assert main(["run", str(config), *args]) == 2
    assert one_error_line(capsys) == ("leti: error: trainer.mixed_precision='fp16' needs a CUDA GPU and none is "
                                      "visible; use 'bf16', 'auto' or 'no' on a CPU")
    assert not (run_dir / "iterations").exists()


def test_a_section_given_twice_in_the_yaml_is_refused_not_silently_reset(config, tmp_path, capsys):
    # PyYAML keeps the last `sampling:`, so n: 2 went back to the default 128 without a word
    config.write_text(config.read_text() + "sampling:\n  temperature: 0.5\n")
    line = config.read_text().splitlines().index("sampling:") + 1
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    assert one_error_line(capsys) == (f"leti: error: {config}: field 'sampling' appears twice (lines {line} and "
                                      f"{len(config.read_text().splitlines()) - 1}); keep one and merge the two")


def test_append_eos_without_an_eos_token_is_refused_at_run_start(config, tmp_path, tiny_model_path, add_task, capsys):
    task_file = Path(add_task.removeprefix("jsonl:"))  # references, for sft to get as far as the tokenizer
    rows = [{**json.loads(line), "reference": "pass\n"} for line in task_file.read_text().splitlines()]
    task_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = tmp_path / "no-eos-model"
    shutil.copytree(tiny_model_path, model)
    tok_config = json.loads((model / "tokenizer_config.json").read_text())
    tok_config.pop("eos_token")
    tok_config.pop("bos_token")  # GPT-2 style: the same token
    (model / "tokenizer_config.json").write_text(json.dumps(tok_config))
    run_dir = tmp_path / "run"
    args = ["--run-dir", str(run_dir), "--set", f"model={model}", "--set", "training_text.append_eos=true"]
    for command in ("run", "sft"):  # sft appended nothing instead, silently
        assert main([command, str(config), *args]) == 2
        assert one_error_line(capsys) == (
            f"leti: error: training_text.append_eos is true but the tokenizer of '{model}' has no eos_token; "
            "set training_text.append_eos: false, or give the tokenizer an eos_token")
        assert not (run_dir / "iterations").exists()  # refused before any sampling
        assert not (run_dir / "config.yaml").exists()  # and before the run directory is written
    # the same for the corpus's separator, which failed when training began, after sampling
    args = ["--run-dir", str(run_dir), "--set", f"model={model}", "--set", "trainer.pretrain_eos_separator=true",
            "--set", "trainer.pretrain_mix_ratio=1", "--set", "trainer.pretrain_corpus=stdlib"]
    assert main(["run", str(config), *args]) == 2
    assert one_error_line(capsys) == (
        f"leti: error: trainer.pretrain_eos_separator is true but the tokenizer of '{model}' has no eos_token; "
        "set trainer.pretrain_eos_separator: false, or give the tokenizer an eos_token")
    assert not (run_dir / "iterations").exists()


@pytest.mark.parametrize("corpus", ["./no-such-corpus", "~/no-such-corpus", "/no/such/corpus"])
def test_a_pretraining_corpus_path_that_is_missing_is_named_as_a_path(config, tmp_path, capsys, monkeypatch, corpus):
    # was: "cannot load dataset (HFValidationError: Repo id must use alphanumeric chars ...)"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    args = ["run", str(config), "--run-dir", str(tmp_path / "run"), "--set", "trainer.pretrain_mix_ratio=1",
            "--set", f"trainer.pretrain_corpus={corpus}"]
    assert main(args) == 2
    where = str(Path(corpus).expanduser())
    assert one_error_line(capsys) == (f"leti: error: trainer.pretrain_corpus: no directory '{where}'; point it at a "
                                      "directory of .py files, 'stdlib', or a Hugging Face dataset name")
    (tmp_path / "no-such-corpus").mkdir()
    (tmp_path / "no-such-corpus" / "a.py").write_text("x = 1\n")
    if not corpus.startswith("/"):  # the same path, once it exists, is read (~ expanded)
        from leti.training.data import iter_corpus

        assert list(iter_corpus(corpus, 5)) == ["x = 1\n"]


def test_a_pretraining_corpus_is_checked_past_files_that_are_not_utf8_and_for_its_split_at_run_start(config, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.py").write_bytes(b"caf\xe9 = 1\n")  # Latin-1
    run_dir = tmp_path / "run"
    args = ["run", str(config), "--run-dir", str(run_dir), "--set", "trainer.pretrain_mix_ratio=1",
            "--set", f"trainer.pretrain_corpus={corpus}"]
    assert main(args) == 2
    assert one_error_line(capsys) == (f"leti: error: trainer.pretrain_corpus '{corpus}': none of its 1 .py file can be "
                                      "read as UTF-8 (a.py); save them as UTF-8, or point it at other Python sources or 'stdlib'")
    # one readable file: the held-out split (0.1 of 1 file) left none to train on, said only at
    # the first training stage, after iteration 0's evaluation and iteration 1's sampling
    (corpus / "b.py").write_text("x = 1\n")
    assert main(args) == 2
    assert one_error_line(capsys) == (
        "leti: error: trainer.pretrain_heldout_fraction 0.1 of 1 corpus files leaves none to train on; use more files "
        "(trainer.pretrain_max_files) or a smaller fraction (1 other file not UTF-8, left out: a.py)")
    assert not (run_dir / "iterations").exists()
    # the first file not UTF-8 was "yielded no text" although b.py is fine: now the corpus passes,
    # and the run goes on as far as loading the (missing) model
    assert main([*args, "--set", "trainer.pretrain_heldout_fraction=0"]) == 2
    assert "no-model-needed" in one_error_line(capsys)
    (corpus / "c.py").write_text("y = 2\n")
    assert main(args) == 2
    assert "no-model-needed" in one_error_line(capsys)
    assert main([*args, "--set", "trainer.pretrain_max_files=2"]) == 2  # files past the limit do not count
    assert "0.1 of 1 corpus files leaves none to train on" in one_error_line(capsys)


# --- task specs and task files -------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("humaneval:x", "task spec 'humaneval:x': task 'humaneval' takes no argument; write humaneval"),
    ("jsonl", "task 'jsonl' needs an argument: write jsonl:ARG, e.g. jsonl:my_tasks.jsonl"),
])
def test_a_task_spec_with_a_wrong_argument_is_one_line(capsys, spec, message):
    assert main(["tasks", "show", spec]) == 2
    assert one_error_line(capsys) == f"leti: error: {message}"


def test_task_file_encoding_errors_name_the_line_and_a_bom_is_accepted(tmp_path, capsys):
    good = '{"id": "a", "prompt": "x = 1\\n", "tests": "assert x == 1"}\n'
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(good.encode() + '{"id": "b", "prompt": "# café\\n", "tests": "assert 1"}\n'.encode("latin-1"))
    assert main(["tasks", "show", f"jsonl:{bad}", "a"]) == 2
    assert one_error_line(capsys) == f"leti: error: {bad}:2: byte 0xe9 is not UTF-8; save the task file as UTF-8"
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + good.encode())
    assert main(["tasks", "show", f"jsonl:{bom}", "a"]) == 0


def test_humaneval_style_tests_without_the_check_call_are_refused(tmp_path, capsys):
    # the tests only defined check(): every program passed, the wrong reference included
    row = {"id": "add", "prompt": "def add(a, b):\n", "entry_point": "add", "reference": "    return a - b\n",
           "tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n"}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert main(["tasks", "validate", f"jsonl:{path}", "--workers", "1"]) == 2
    assert one_error_line(capsys) == (f"leti: error: {path}:1: field 'tests' defines check() but never calls it, so "
                                      "every program would pass; add a last line `check(add)` (HumanEval's tests "
                                      "need it; leti adds nothing to the tests)")


@pytest.mark.parametrize("field", ["id", "prompt", "tests", "meta"])
def test_a_lone_surrogate_escape_in_a_task_file_is_named(tmp_path, capsys, field):
    # json.loads accepts "\ud800" alone; the task then failed at sampling (the tokenizer's TypeError)
    # or scoring (UnicodeEncodeError digesting the program), a traceback from deep inside
    row = {"id": "a", "prompt": "x = 1\n", "tests": "assert x == 1", "meta": {"note": "n"}}
    row[field] = {"note": "n\ud800"} if field == "meta" else row[field] + "  # \ud800"
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": "b", "prompt": "x = 1\\n", "tests": "assert x == 1"}\n' + json.dumps(row) + "\n")
    assert main(["tasks", "show", f"jsonl:{path}", "b"]) == 2
    assert one_error_line(capsys) == (f"leti: error: {path}:2: field '{field}' holds a lone surrogate escape "
                                      "(\\ud800-\\udfff without its pair), which is not text; fix or remove that escape")
    pair = tmp_path / "pair.jsonl"  # a whole pair is one character (an emoji) and fine
    pair.write_text('{"id": "a", "prompt": "# \\ud83d\\ude00\\n", "tests": "assert 1"}\n')
    assert main(["tasks", "show", f"jsonl:{pair}", "a"]) == 0


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
def test_a_line_separator_inside_a_json_string_does_not_end_the_line(tmp_path, capsys, char):
    # JSON allows these raw in strings (json.dumps(..., ensure_ascii=False) writes them so), but
    # str.splitlines() cut the line there: "not valid JSON (Unterminated string)"
    rows = [{"id": "a", "prompt": f"# one{char}two\n", "tests": "assert 1", "meta": {"note": f"x{char}y"}},
            {"id": "b", "prompt": "x = 1\n", "tests": "assert x == 1"}]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert main(["tasks", "show", f"jsonl:{path}", "a"]) == 0
    assert f"# one{char}two" in capsys.readouterr().out
    path.write_text(path.read_text(encoding="utf-8") + "{bad\n", encoding="utf-8")  # line numbers count real lines
    assert main(["tasks", "show", f"jsonl:{path}", "a"]) == 2
    assert one_error_line(capsys).startswith(f"leti: error: {path}:3: not valid JSON")
    crlf, cr = tmp_path / "crlf.jsonl", tmp_path / "cr.jsonl"  # Windows and old Mac line ends still end lines
    crlf.write_bytes(path.read_bytes().replace(b"\n", b"\r\n").removesuffix(b"{bad\r\n"))
    cr.write_bytes(path.read_bytes().replace(b"\n", b"\r").removesuffix(b"{bad\r"))
    assert main(["tasks", "show", f"jsonl:{crlf}", "b"]) == 0 and main(["tasks", "show", f"jsonl:{cr}", "b"]) == 0


def test_stop_sequences_hidden_in_meta_are_refused(tmp_path, capsys):
    # meta["stop"] is where parsed stops live: "abc" there stopped at every a, b and c
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": "a", "prompt": "x", "tests": "assert 1", "meta": {"stop": "abc"}}\n')
    assert main(["tasks", "show", f"jsonl:{path}"]) == 2
    assert one_error_line(capsys) == (f"leti: error: {path}:1: 'stop' inside 'meta' is reserved; give stop "
                                      "sequences as the top-level field 'stop'")


# --- command-line flags --------------------------------------------------------------------------

@pytest.mark.parametrize("timeout", ["nan", "inf"])
def test_a_non_finite_timeout_flag_is_refused_not_a_run_of_crashes(tmp_path, capsys, timeout):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"program": "x = 1", "tests": "assert x == 1"}\n')
    assert main(["exec", str(inp), "-o", str(tmp_path / "out.jsonl"), "--timeout", timeout]) == 2
    assert one_error_line(capsys).startswith("leti: error: --timeout must be ")
    assert not (tmp_path / "out.jsonl").exists()


def test_evaluate_refuses_a_k_above_n_before_drawing(tmp_path, add_task, tiny_model_path, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", "--task", add_task, "--split", "test", "--model", tiny_model_path, "--out", str(out),
            "--n", "1", "--k", "1,5", "--max-new-tokens", "4", "--device", "cpu"]
    assert main(argv) == 2
    assert one_error_line(capsys) == ("leti: error: --k 1,5: k=5 needs at least 5 samples per problem, --n is 1; "
                                      "raise --n or lower --k")
    assert not out.exists()


def test_demo_refuses_a_thread_count_below_one(tmp_path, capsys):
    assert main(["demo", "--run-dir", str(tmp_path / "demo"), "--quick", "--threads", "0"]) == 2
    assert one_error_line(capsys) == "leti: error: --threads 0: must be >= 1 (leave it out for torch's choice)"


def test_demo_refuses_a_negative_seed_before_its_warm_start(tmp_path, capsys):
    # was: a warm start and iteration 0, then "sampling.seed=-4 must be an integer >= 0"
    assert main(["demo", "--run-dir", str(tmp_path / "demo"), "--quick", "--seed", "-5"]) == 2
    assert one_error_line(capsys) == "leti: error: --seed must be >= 0, got -5"
    assert not (tmp_path / "demo").exists()


# --- damaged run directories ---------------------------------------------------------------------

def _run_dir(tmp_path: Path, config: Path) -> Path:
    """A run directory as `leti run` leaves it after iteration 0."""
    rd = tmp_path / "run"
    (rd / "iterations" / "0").mkdir(parents=True)
    (rd / "config.yaml").write_text(dump_config(load_config(config)))
    (rd / "run.json").write_text('{"mode": "leti", "created": "2026-01-01T00:00:00+00:00"}\n')
    (rd / "iterations" / "0" / "eval_samples.jsonl").write_text('{"problem_id": "p4", "sample_idx": 0}\n')
    return rd


@pytest.mark.parametrize("damage, message", [
    (("config.yaml", "model: [\n"), "{rd}/config.yaml: damaged, not valid YAML; restore it"),
    (("config.yaml", "- 1\n"), "{rd}/config.yaml: damaged, not a mapping of fields; restore it"),
    (("run.json", "[1]"), "{rd}/run.json: not a leti record (no 'mode'); restore it, or delete it: the run then resumes without checking"),
    (("metrics.jsonl", '{"iteration": 0}\n{"x": 1}\n'),
     "{rd}/metrics.jsonl:2: not a metrics record (no integer 'iteration'); delete that line"),
    (("iterations/0/eval.json", "[]"), "{rd}/iterations/0/eval.json: not a leti record (no 'pass@k'); delete it"),
    (("iterations/1/samples.done", "{}"), "{rd}/iterations/1/samples.done: not a leti record (no 'wall_s'); delete it"),
])
def test_a_damaged_run_directory_file_is_named_on_resume(config, tmp_path, capsys, damage, message):
    rd = _run_dir(tmp_path, config)
    if damage[0].startswith("iterations/1/"):
        (rd / "metrics.jsonl").write_text('{"iteration": 0}\n')  # iteration 1 goes on from its files
    name, text = damage
    (rd / name).parent.mkdir(parents=True, exist_ok=True)
    (rd / name).write_text(text)
    assert main(["run", str(config), "--run-dir", str(rd)]) == 2
    assert one_error_line(capsys).startswith("leti: error: " + message.format(rd=rd))


def test_report_names_a_damaged_metrics_line(config, tmp_path, capsys):
    rd = _run_dir(tmp_path, config)
    (rd / "metrics.jsonl").write_text('{"iteration": 0}\n{"x": 1}\n')
    assert main(["report", str(rd)]) == 2
    assert one_error_line(capsys).startswith(f"leti: error: {rd}/metrics.jsonl:2: not a metrics record")


def test_a_resumed_run_refuses_a_task_file_edited_since_it_started(config, tmp_path, add_task, capsys):
    rd = _run_dir(tmp_path, config)  # started before run.json kept the problems' digest
    assert main(["run", str(config), "--run-dir", str(rd)]) == 2  # adopts the digest, then: no model
    assert "no-model-needed" in one_error_line(capsys)
    task_file = Path(add_task.removeprefix("jsonl:"))
    task_file.write_text(task_file.read_text().replace("assert add_4(1) == 5", "assert add_4(1) == 6"))
    before = (rd / "config.yaml").read_text()
    assert main(["run", str(config), "--run-dir", str(rd), "--set", "iterations=9"]) == 2
    assert one_error_line(capsys) == (f"leti: error: task '{add_task}': its problems (ids, prompts, tests or "
                                      f"references) changed since the run in {rd} started (an edited task file, "
                                      "or another leti's prompts); restore them or use a new --run-dir")
    # refused, the run directory is as it was (config.yaml said iterations: 9, and the report
    # then called the run unfinished)
    assert (rd / "config.yaml").read_text() == before


def test_sft_without_reference_solutions_is_refused_before_evaluating(config, tmp_path, add_task, capsys):
    run_dir = tmp_path / "sft"
    assert main(["sft", str(config), "--run-dir", str(run_dir)]) == 2
    assert one_error_line(capsys) == (f"leti: error: task '{add_task}' split 'train' has no reference solutions; "
                                      "`leti sft` trains on them: add 'reference' to the problems or set train_split")
    assert not run_dir.exists() or not any(p.name != ".lock" for p in run_dir.iterdir())  # nothing written


def test_sft_says_which_problems_it_leaves_out_for_want_of_a_reference(config, tmp_path, add_task, capsys):
    task_file = Path(add_task.removeprefix("jsonl:"))
    rows = [json.loads(line) for line in task_file.read_text().splitlines()]
    rows[0]["reference"] = "def add_1(x):\n    return x + 1\n"
    task_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["sft", str(config), "--run-dir", str(tmp_path / "sft")]) == 2  # no model: stops after the line
    assert "the reference solutions of 1 of 3 train problems (2 problems without one left out)" in capsys.readouterr().out


def test_a_task_without_the_eval_split_is_refused_before_the_run_dir_is_written(config, tmp_path, add_task, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", str(config), "--run-dir", str(run_dir), "--set", "eval.split=validation"]) == 2
    assert one_error_line(capsys).startswith(f"leti: error: task '{add_task}' has no problems in split 'validation'")
    assert not run_dir.exists() or not any(p.name != ".lock" for p in run_dir.iterdir())


def _synthetic_train_size() -> int:
    from leti.tasks.synthetic import generate_problems

    return sum(p.split == "train" for p in generate_problems(0))  # the family the default seed draws from


@pytest.mark.parametrize("spec, message", [
    ("synthetic:train=100000", "synthetic:train=100000 asks for more problems than the family has ({n} train "
                               "problems); use train={n} or fewer"),
    ("synthetic:seed=1,seed=2", "synthetic task option 'seed' is given twice in 'seed=1,seed=2'; give it once"),
])
def test_synthetic_sizes_beyond_the_family_and_repeated_options_are_refused(capsys, spec, message):
    assert main(["tasks", "show", spec]) == 2
    assert one_error_line(capsys) == f"leti: error: {message.format(n=_synthetic_train_size())}"


@pytest.mark.parametrize("spec", ["eae-jsonl:test=", "eae-jsonl:=data.jsonl"])
def test_an_eae_spec_item_without_a_name_or_a_path_is_named(capsys, spec):
    # `test=` used to read the current directory as the data file, `=x` made a split named ''
    assert main(["tasks", "show", spec]) == 2
    item = spec.removeprefix("eae-jsonl:")
    assert one_error_line(capsys) == (f"leti: error: task spec '{spec}': '{item}' needs a name and a path, "
                                      "e.g. test=PATH or ontology=PATH")


@pytest.mark.parametrize("ev", ['5', '{"pass@1": "x"}'])
def test_report_names_a_metrics_line_whose_eval_is_not_an_object_of_numbers(config, tmp_path, capsys, ev):
    rd = _run_dir(tmp_path, config)
    (rd / "metrics.jsonl").write_text(f'{{"iteration": 0, "eval": {ev}}}\n')
    assert main(["report", str(rd)]) == 2
    assert one_error_line(capsys) == (f"leti: error: {rd}/metrics.jsonl:1: 'eval' must be an object of numbers or "
                                      f"null, got {json.dumps(json.loads(ev))}; delete that line to redo its iteration")


HUB_ANNOUNCE = "leti: loading model '{}' from the hub (offline, HF_HUB_OFFLINE=1 skips the retries)"


@pytest.fixture
def stub_hub() -> Iterator[tuple[str, list[str]]]:
    """A local stand-in for the Hugging Face hub (HF_ENDPOINT=its URL): a file's first two
    requests fail with 503, as every request to a hub out of reach fails, and then the repository
    does not exist. huggingface_hub takes its not-offline path, a retry included, in about a second:
    against a hub out of reach its backoff sleeps 1+2+4+8+8 s, which no setting shortens
    (HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT bound a request, and the name lookup fails
    at once). Yields (URL, the requests it got)."""
    import http.server
    import threading

    seen: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            if "/resolve/" not in self.path or sum("/resolve/" in r for r in seen) <= 2:
                self.send_response(503)
            else:
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("X-Error-Message", "Repository not found")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_a_hub_model_that_cannot_be_loaded_is_one_line_on_stderr_after_one_saying_it_reads_the_hub(tmp_path, add_task,
                                                                                                    stub_hub):
    # Offline, every retry used to print two lines of its own in front of leti's error line, and
    # the ~25 s of retries went by with nothing said.
    url, seen = stub_hub
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf"))  # an empty cache: the files are asked for
    argv = ["evaluate", "--task", add_task, "--split", "test", "--model", "nobody/no-such-model-leti-test",
            "--n", "1", "--out", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, "-m", "leti", *argv], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and err.startswith("leti: error: 'nobody/no-such-model-leti-test'"), err
    assert proc.stdout.splitlines().count(HUB_ANNOUNCE.format("nobody/no-such-model-leti-test")) == 1, proc.stdout
    assert sum(r.startswith("HEAD ") and "/resolve/" in r for r in seen) >= 3, seen  # asked, and asked again


@pytest.fixture
def hub_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading any model from the hub fails at once, with the hub not in offline mode; each
    test starts with no model announced yet."""
    import huggingface_hub.constants

    import leti.model

    loads = leti.model.AutoConfig.from_pretrained

    def unreachable(name, *args, **kwargs):
        if Path(name).is_dir():
            return loads(name, *args, **kwargs)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(leti.model.AutoConfig, "from_pretrained", unreachable)
    monkeypatch.setattr(leti.model, "_ANNOUNCED_HUB", set(), raising=False)


def test_a_hub_model_is_announced_once_and_an_adapter_s_hub_base_too(hub_fails, tmp_path, capsys):
    from leti.errors import LetiError
    from leti.model import load_model_and_tokenizer, load_tokenizer

    with pytest.raises(LetiError, match="nor loadable from the hub"):
        load_tokenizer("nobody/model-leti-test")  # the run's start checks
    with pytest.raises(LetiError, match="nor loadable from the hub"):
        load_model_and_tokenizer("nobody/model-leti-test", device="cpu")  # its loader, later
    assert capsys.readouterr().out == HUB_ANNOUNCE.format("nobody/model-leti-test") + "\n"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path":
                                                             "nobody/base-leti-test", "r": 2, "target_modules": ["c_attn"]}))
    with pytest.raises(LetiError, match="names base model 'nobody/base-leti-test'"):
        load_model_and_tokenizer(str(adapter), device="cpu")
    assert capsys.readouterr().out == HUB_ANNOUNCE.format("nobody/base-leti-test") + "\n"


def test_no_hub_line_offline_or_for_a_local_model(hub_fails, tiny_model_path, monkeypatch, capsys):
    import huggingface_hub.constants

    from leti.errors import LetiError
    from leti.model import load_tokenizer

    load_tokenizer(tiny_model_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1: no retries to wait for
    with pytest.raises(LetiError):
        load_tokenizer("nobody/model-leti-test")
    assert capsys.readouterr().out == ""


def test_a_list_field_given_as_a_scalar_says_how_to_write_a_list(config, tmp_path, capsys):
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run"), "--set", "eval.ks=1,10"]) == 2
    assert one_error_line(capsys) == ("leti: error: --set eval.ks=1,10: field 'eval.ks' = '1,10' must be a list, "
                                      "written [a, b] in YAML")


def test_a_relative_task_path_that_is_missing_names_the_directory_it_was_looked_for_in(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["tasks", "show", "jsonl:my_tasks.jsonl"]) == 2
    assert one_error_line(capsys) == (f"leti: error: my_tasks.jsonl: task file not found (relative to the current "
                                      f"directory {tmp_path}); check the path in jsonl:PATH")


def test_a_run_refused_before_it_wrote_anything_leaves_no_folder(config, tmp_path, capsys):
    """A missing task file: the refusal left runs/NAME holding only its .lock."""
    run = tmp_path / "runs" / "new"
    assert main(["run", str(config), "--run-dir", str(run), "--set", f"task=jsonl:{tmp_path}/nosuch.jsonl"]) == 2
    assert "task file not found" in one_error_line(capsys)
    assert not run.exists()
    run.mkdir(parents=True)  # one that was there before is left as it was
    assert main(["run", str(config), "--run-dir", str(run), "--set", f"task=jsonl:{tmp_path}/nosuch.jsonl"]) == 2
    assert run.is_dir()


def test_exec_refuses_to_write_over_its_input(tmp_path, capsys):
    inp = tmp_path / "programs.jsonl"
    text = '{"program": "x = 1", "tests": "assert x == 1"}\n'
    inp.write_text(text)
    assert main(["exec", str(inp), "-o", str(tmp_path / "." / "programs.jsonl")]) == 2
    assert one_error_line(capsys) == (f"leti: error: -o {tmp_path}/programs.jsonl: is the input file; "
                                      "write the results to another file")
    assert inp.read_text() == text


@pytest.mark.parametrize("flag", [["--n", "3"], ["--prompt-prefix", "<|good|>"], ["--backend", "vllm"], ["--max-new-tokens", "8"]])
def test_evaluate_refuses_generation_flags_with_samples_instead_of_ignoring_them(tmp_path, add_task, capsys, flag):
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"task_id": "p4", "completion": "    return 0\\n"}\n')
    out = tmp_path / "out"
    assert main(["evaluate", "--task", add_task, "--split", "test", "--samples", str(samples), "--out", str(out), *flag]) == 2
    assert one_error_line(capsys) == (f"leti: error: {flag[0]} applies to --model (drawing samples); --samples are "
                                      "scored as they are")
    assert not (out / "results.json").exists()


def test_a_checkpoint_deleted_by_hand_is_named_when_the_run_goes_on_from_it(config, tmp_path, capsys):
    rd = _run_dir(tmp_path, config)  # iterations 0 and 1 finished, then iterations/1/checkpoint deleted
    (rd / "metrics.jsonl").write_text('{"iteration": 0}\n{"iteration": 1}\n')
    (rd / "iterations" / "1").mkdir()
    (rd / "iterations" / "1" / "train_stats.json").write_text('{"optimizer_steps": 1, "loss_mean": 1.0, "wall_s": 1}')
    assert main(["run", str(config), "--run-dir", str(rd), "--set", "iterations=2"]) == 2
    assert one_error_line(capsys) == (f"leti: error: {rd}/iterations/1/checkpoint: missing, and the run goes on from "
                                      "iteration 1's weights; restore it, or start again with a new --run-dir")


@pytest.mark.parametrize("text, kind", [("[]\n", "list"), ("0\n", "int"), ("false\n", "bool")])
def test_a_falsy_top_level_is_not_read_as_an_empty_config(tmp_path, capsys, text, kind):
    # `[]` used to mean "no fields": a full paper-default run instead of an error
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    assert one_error_line(capsys) == f"leti: error: {path}: top level must be a mapping of fields, got {kind}"


def test_a_task_path_starting_with_a_tilde_is_the_home_directory(tmp_path, monkeypatch, capsys):
    # the shell expands ~ only at the start of a word, never after "jsonl:"
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "t.jsonl").write_text('{"id": "a", "prompt": "x = 1\\n", "tests": "assert x == 1"}\n')
    assert main(["tasks", "show", "jsonl:~/t.jsonl", "a"]) == 0
    assert "assert x == 1" in capsys.readouterr().out


def test_an_error_quoting_a_value_with_a_line_break_stays_one_line(tmp_path, capsys):
    assert main(["tasks", "show", f"jsonl:{tmp_path}/two\nlines.jsonl"]) == 2
    assert one_error_line(capsys).startswith(f"leti: error: {tmp_path}/two lines.jsonl: task file not found")


def test_a_new_run_never_writes_over_a_directory_of_other_files(config, tmp_path, capsys):
    own = tmp_path / "project"
    own.mkdir()
    (own / "config.yaml").write_text(config.read_text() + "# my notes\n")
    assert main(["run", str(own / "config.yaml"), "--run-dir", str(own)]) == 2
    assert one_error_line(capsys) == (f"leti: error: {own}: not empty and not a leti run directory (it holds "
                                      "'config.yaml'); pass a new or empty --run-dir")
    assert (own / "config.yaml").read_text().endswith("# my notes\n") and not (own / "run.json").exists()


def test_a_run_killed_while_writing_its_first_file_starts_again(tmp_path):
    """Killed inside the first run.json write (found by a kill -9 fuzz: a ~30 ms window), the
    directory held only .lock and leti's own run.json.tmp, and every rerun was refused as "not a
    leti run directory"."""
    from leti.config import RunConfig
    from leti.loop.checks import check_resumable, start_run_dir
    from leti.loop.rundir import RunDir

    rd = RunDir(tmp_path / "run")
    rd.root.mkdir()
    (rd.root / ".lock").write_text("")
    (rd.root / "run.json.tmp").write_text('{"mode": "le')
    assert check_resumable(rd, RunConfig(), "leti") is False  # a new run, not a resumed one
    start_run_dir(rd, RunConfig(), "leti")
    assert json.loads((rd.root / "run.json").read_text())["mode"] == "leti" and rd.config_path.exists()


def test_a_run_directory_whose_config_was_deleted_is_not_restarted_over_its_output(config, tmp_path, capsys):
    rd = _run_dir(tmp_path, config)
    (rd / "config.yaml").unlink()
    assert main(["run", str(config), "--run-dir", str(rd)]) == 2
    assert one_error_line(capsys) == (f"leti: error: {rd}/config.yaml: missing, but {rd} holds a run's output; "
                                      "restore it or use a new --run-dir")


@pytest.mark.parametrize("flags, message", [
    (["--vllm", "dtype=float16"], "--vllm dtype=float16: engine settings apply to --backend vllm; add it or drop --vllm"),
    (["--backend", "vllm", "--device", "cpu"],
     "--device cpu: applies to --backend hf (vLLM places the model itself); drop --device"),
])
def test_evaluate_refuses_settings_of_the_backend_it_does_not_use(tmp_path, add_task, capsys, flags, message):
    out = tmp_path / "out"
    argv = ["evaluate", "--task", add_task, "--split", "test", "--model", str(tmp_path / "m"), "--out", str(out), *flags]
    assert main(argv) == 2
    assert one_error_line(capsys) == f"leti: error: {message}"
    assert not out.exists()


def test_task_tests_that_are_not_valid_python_are_refused_with_their_line(tmp_path, capsys):
    # every program of that problem would fail on the tests' own SyntaxError and train as a failure
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": "a", "prompt": "x = 1\\n", "tests": "assert x == 1\\nassert (x"}\n')
    assert main(["tasks", "show", f"jsonl:{path}"]) == 2
    assert one_error_line(capsys) == (f"leti: error: {path}:1: field 'tests' is not valid Python (line 2: '(' was "
                                      "never closed); fix the tests")


def test_a_future_import_in_task_tests_is_refused_with_its_line(tmp_path, capsys):
    """Legal in the tests alone, a SyntaxError after prompt + program: the reference and every
    sample would fail and train as failures."""
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "def f():\n", "reference": "    return 1\n",
                                "tests": "'''docstring'''\nfrom __future__ import annotations\nassert f() == 1\n"}) + "\n")
    assert main(["tasks", "show", f"jsonl:{path}"]) == 2
    assert one_error_line(capsys) == (f"leti: error: {path}:1: field 'tests' has a 'from __future__' import (its line 2), "
                                      "which Python allows only at the start of a program, and the tests run after the "
                                      "prompt and the program; move it to the start of the prompt")
    path.write_text(json.dumps({"id": "a", "prompt": "from __future__ import annotations\ndef f():\n",
                                "reference": "    return 1\n", "tests": "assert f() == 1\n"}) + "\n")
    assert main(["tasks", "validate", f"jsonl:{path}"]) == 0  # at the start of the prompt it works


def test_a_cut_weights_file_is_one_line_naming_the_model_directory(tmp_path, add_task, tiny_model_path, capsys):
    """A checkpoint whose model.safetensors was cut (a full disk, a copy stopped half way):
    `leti evaluate --model` (and a resumed run) say which directory, not a SafetensorError."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_path, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    argv = ["evaluate", "--task", add_task, "--split", "test", "--model", str(model), "--n", "1",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"leti: error: model directory {model} could not be loaded ("), err


def test_leti_run_asks_the_hub_for_a_model_it_does_not_have_once(tmp_path, add_task, stub_hub):
    """The start checks' tokenizer load swallowed the hub's refusal, and the model's load then
    went through huggingface_hub's retries again (~25 s each offline) to say the same line."""
    url, seen = stub_hub
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf"))
    argv = ["run", "tiny-cpu", "--set", "model=nobody/no-such-model-leti-test", "--set", f"task={add_task}",
            "--run-dir", str(tmp_path / "run")]
    proc = subprocess.run([sys.executable, "-m", "leti", *argv], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and err.startswith("leti: error: 'nobody/no-such-model-leti-test'"), err
    # two 503s, then "no such repository": nothing asked after that
    assert sum("/resolve/" in r for r in seen) == 3, seen
    assert not (tmp_path / "run" / "iterations").exists()


def test_a_relative_corpus_path_that_reads_as_a_hub_id_is_also_named_as_a_path(config, tmp_path, capsys, monkeypatch,
                                                                                 hub_offline):
    """'runs/corpus' is a valid hub id (org/name): the hub is asked, and its error alone did not
    say that the directory the user meant does not exist."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    args = ["run", str(config), "--run-dir", str(tmp_path / "run"), "--set", "trainer.pretrain_mix_ratio=1",
            "--set", "trainer.pretrain_corpus=runs/corpus"]
    assert main(args) == 2
    err = one_error_line(capsys)
    assert err.startswith("leti: error: trainer.pretrain_corpus: cannot load dataset 'runs/corpus'")
    assert f"; no directory {tmp_path / 'runs' / 'corpus'} exists either" in err
    (tmp_path / "runs").rmdir()  # no local directory 'runs': a hub id, and nothing is said of paths
    assert main(args) == 2
    assert "exists either" not in one_error_line(capsys)
