"""End to end: `leti run` / `leti sft` on the tiny CPU config with a tiny offline model and a
jsonl task; kill -9 mid-iteration, resume, and check nothing is duplicated or redone."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from statistics import stdev

import pytest
import torch
import yaml
from safetensors.torch import load_file

from leti.cli import main
from leti.testing import make_tiny_model
from leti.training.trainer import OPTIMIZER_FILE

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")
ITER_FILES = ["samples.jsonl", "samples.done", "train_stats.json", "eval_samples.jsonl", "eval.json",
              "checkpoint/config.json", "checkpoint/model.safetensors", "checkpoint/tokenizer.json"]


def _problem(pid: str, split: str, k: int) -> dict:
    return {"id": pid, "split": split, "entry_point": f"add_{k}",
            "prompt": f'"""\nWrite a function to add {k} to a number.\nassert add_{k}(1) == {k + 1}\n"""\n',
            "tests": f"assert add_{k}(1) == {k + 1}\nassert add_{k}(5) == {k + 5}",
            "reference": f"def add_{k}(n):\n    return n + {k}\n"}


@pytest.fixture
def task_file(tmp_path) -> str:
    path = tmp_path / "tasks.jsonl"
    rows = [_problem(f"t{k}", "train", k) for k in range(1, 4)] + [_problem(f"e{k}", "test", k) for k in range(4, 6)]
    for row in rows[0], rows[3]:  # a problem's own stop sequences (JSONL tasks may set them)
        row["stop"] = ["e"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def _keys(path: Path) -> list[tuple[str, int]]:
    return [(r["problem_id"], r["sample_idx"]) for r in map(json.loads, path.read_text().splitlines())]


@pytest.mark.slow
def test_one_iteration_trains_and_writes_the_run_dir(tmp_path, tiny_model_path, task_file, capsys, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # a run dir given relative to where leti is started
    args = ["run", CONFIG, "--run-dir", "run", "--set", f"model={tiny_model_path}", "--set", f"task={task_file}"]
    assert main(args) == 0
    assert (run / "config.yaml").exists() and (run / "run.json").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["model"] == tiny_model_path
    for name in ITER_FILES:
        assert (run / "iterations" / "1" / name).exists(), name
    assert (run / "iterations" / "0" / "eval.json").exists()

    # parameters changed: a transformer weight differs between the base model and the checkpoint
    base = load_file(Path(tiny_model_path) / "model.safetensors")
    tuned = load_file(run / "iterations" / "1" / "checkpoint" / "model.safetensors")
    name = "transformer.h.0.attn.c_attn.weight"
    assert base[name].shape == tuned[name].shape and not (base[name] == tuned[name]).all()

    samples = [json.loads(x) for x in (run / "iterations" / "1" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 2
    assert {"status", "passed", "feedback", "exception_type", "completion", "prompt"} <= set(samples[0])
    assert not any(s["prompt"].startswith("<|good|>") for s in samples)  # iteration 1: plain prompt
    # t1 and e4 stop at "e" in both phases; the other problems have no stop sequences.
    evals = [json.loads(x) for x in (run / "iterations" / "1" / "eval_samples.jsonl").read_text().splitlines()]
    own = [s for s in samples + evals if s["problem_id"] in ("t1", "e4")]
    assert own and not any("e" in s["completion"] for s in own)
    assert any(s["finish_reason"] == "stop" for s in own)
    assert any("e" in s["completion"] for s in samples + evals if s["problem_id"] not in ("t1", "e4"))
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [0, 1]
    # absolute: relative to where each start or resume was launched from, one run's lines disagreed
    assert [m["checkpoint"] for m in metrics] == [tiny_model_path, str((run / "iterations" / "1" / "checkpoint").resolve())]
    assert metrics[0]["gradient_steps_total"] == 0 and metrics[1]["gradient_steps_total"] > 0
    assert set(metrics[1]["eval"]) == {"pass@1", "pass@2"} and metrics[1]["train_samples"] == 6
    ev = json.loads((run / "iterations" / "1" / "eval.json").read_text())
    assert ev["conditioned_on_good"] is True and ev["n_problems"] == 2
    stats = json.loads((run / "iterations" / "1" / "train_stats.json").read_text())
    assert stats["pretrain_batches"] > 0 and stats["packing_efficiency"] >= 0.9
    # the split benchmarks/bench_iteration.py extrapolates by: fixed start-up vs what grows
    assert 0 < stats["steps_s"] <= stats["wall_s"]
    phases = [json.loads((run / "iterations" / k / name).read_text())
              for k, name in (("0", "eval.json"), ("1", "samples.done"), ("1", "eval.json"))]
    assert all(0 <= p["model_load_s"] <= p["wall_s"] for p in phases) and phases[0]["model_load_s"] > 0
    # Standard errors over the 2 held-out problems, beside pass@k: eval.json, metrics.jsonl, report.
    for k, m in ((0, metrics[0]), (1, metrics[1])):
        ev_k = json.loads((run / "iterations" / str(k) / "eval.json").read_text())
        per_problem = [c / n for n, c in ev_k["per_problem"].values()]
        assert set(ev_k["pass@k_stderr"]) == {"pass@1", "pass@2"}
        assert ev_k["pass@k_stderr"]["pass@1"] == pytest.approx(stdev(per_problem) / math.sqrt(2), abs=1e-12)
        assert m["eval_stderr"] == ev_k["pass@k_stderr"]
    from leti.report import build_report

    build_report(run)
    p1, se1 = ev["pass@k"]["pass@1"], ev["pass@k_stderr"]["pass@1"]
    assert f"| {100 * p1:.1f} ± {100 * se1:.1f} |" in (run / "report.md").read_text()

    capsys.readouterr()
    assert main(args) == 0  # finished: says so, does nothing
    assert "already finished" in capsys.readouterr().out
    assert main(args + ["--set", "sampling.n=3"]) == 2  # changed config is refused, one line


@pytest.mark.slow
def test_an_unreadable_corpus_fails_at_run_start_and_the_fixed_config_then_runs(tmp_path, tiny_model_path, task_file,
                                                                    hub_offline, capsys):
    """The paper's corpus is streamed from the hub: without it (here: offline mode), the run stops
    in one line before it samples anything, not at the first training stage."""
    run = tmp_path / "run"
    args = ["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={task_file}"]
    assert main(args + ["--set", "trainer.pretrain_corpus=bigcode/the-stack"]) == 2
    out, err = capsys.readouterr()
    err = err.strip()
    # said before the hub is asked: without a network its retries take over a minute
    assert "leti: reading the first record of trainer.pretrain_corpus 'bigcode/the-stack' from the hub " \
        "(offline, HF_HUB_OFFLINE=1 skips the retries)\n" in out
    assert err.startswith("leti: error: trainer.pretrain_corpus: cannot load dataset 'bigcode/the-stack'")
    assert "\n" not in err and "hf auth login" in err
    (tmp_path / "empty").mkdir()
    assert main(args + ["--run-dir", str(tmp_path / "run2"), "--set", f"trainer.pretrain_corpus={tmp_path / 'empty'}"]) == 2
    assert "holds no .py files" in capsys.readouterr().err
    assert not list(run.glob("iterations/*")) and not list((tmp_path / "run2").glob("iterations/*"))
    # Nothing was produced, so the corrected config is taken (not refused as a changed resume).
    assert main(args + ["--set", "eval.split=train", "--set", "eval.max_problems=1", "--set", "sampling.temperature=0",
                        "--set", "sampling.vllm.dtype=float32"]) == 0
    captured = capsys.readouterr()
    assert "leti: warning: train_split and eval.split are both 'train'" in captured.err
    assert ("leti: warning: sampling.vllm.dtype does nothing with sampling.backend: hf (set sampling.backend: vllm "
            "to use it)\n") in captured.err
    assert ("leti: warning: sampling.n: temperature 0 is greedy decoding, so the 2 samples of each problem are one "
            "program repeated; an iteration trains on n copies") in captured.err and "eval.n:" not in captured.err
    assert "resuming" not in captured.out
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["pretrain_corpus"] == "stdlib"


def test_lora_target_modules_that_match_no_layer_fail_at_run_start(tmp_path, tiny_model_path, task_file, capsys):
    """Llama's layer names on GPT-2: one line at run start, before the iteration-0 evaluation and
    any sampling, not when the first training stage wraps the model."""
    run = tmp_path / "run"
    args = ["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={task_file}",
            "--set", "trainer.lora.enabled=true", "--set", "trainer.lora.target_modules=[q_proj, v_proj]",
            "--set", "trainer.carry_optimizer_state=false"]  # merged adapters start new: no AdamW state to carry
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leti: error: trainer.lora.target_modules=['q_proj', 'v_proj'] matches no layer of "
                          "GPT2LMHeadModel; its linear layers are ")
    assert "c_attn" in err and "\n" not in err
    assert not list(run.glob("iterations/*/samples.jsonl")) and not list(run.glob("iterations/*/eval*"))


@pytest.mark.slow
def test_kill_then_resume_has_no_duplicates(tmp_path, tiny_model_path, task_file, wait_for_lines):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "leti", "run", CONFIG, "--run-dir", str(run),
           "--set", f"model={tiny_model_path}", "--set", f"task={task_file}",
           "--set", "sampling.n=6", "--set", "sampling.batch_size=1", "--set", "sampling.max_new_tokens=16",
           "--set", "eval.n=1", "--set", "eval.ks=[1]", "--set", "eval.max_problems=1",
           "--set", "trainer.pretrain_mix_ratio=0", "--set", "progress=false"]
    samples = run / "iterations" / "1" / "samples.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_lines(proc, samples, 1, timeout=50)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(_keys(samples))
    assert 1 <= n_before < 18
    with open(samples, "a") as f:
        f.write('{"problem_id": "t1", "sample_')  # what a kill during a write leaves behind

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"leti: resuming {run}: iteration 0 finished; iteration 1 goes on" in done.stdout
    keys = _keys(samples)
    assert len(keys) == len(set(keys)) == 3 * 6
    assert set(keys) == {(f"t{k}", i) for k in range(1, 4) for i in range(6)}
    metrics = [json.loads(x)["iteration"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [0, 1]

    # The killed-and-resumed run holds what an uninterrupted run with the same seed holds.
    straight = tmp_path / "straight"
    assert main(["run", CONFIG, "--run-dir", str(straight), *cmd[7:]]) == 0  # cmd[7:]: the --set flags
    assert _results(run) == _results(straight)


def _results(run: Path) -> dict:
    """What a run computed, without timings and paths: samples, evaluations, metrics, weights."""
    def strip(rec: dict) -> dict:
        return {k: v for k, v in rec.items() if k not in ("duration_s", "wall_s", "checkpoint", "engine_startup_s", "model_load_s", "steps_s")}

    out: dict = {"metrics": [strip(json.loads(x)) for x in (run / "metrics.jsonl").read_text().splitlines()]}
    for it in sorted((run / "iterations").iterdir()):
        for name in ("samples.jsonl", "eval_samples.jsonl"):
            if (it / name).exists():
                recs = [strip(json.loads(x)) for x in (it / name).read_text().splitlines()]
                out[f"{it.name}/{name}"] = sorted(recs, key=lambda r: (r["problem_id"], r["sample_idx"]))
        for name in ("eval.json", "train_stats.json"):
            if (it / name).exists():
                out[f"{it.name}/{name}"] = strip(json.loads((it / name).read_text()))
        if (it / "checkpoint" / "model.safetensors").exists():
            out[f"{it.name}/weights"] = {k: v.tolist() for k, v in load_file(it / "checkpoint" / "model.safetensors").items()}
    return out


@pytest.mark.slow
def test_a_kill_just_after_the_checkpoint_landed_does_not_train_again(tmp_path, tiny_model_path, task_file, capsys):
    """train_stats.json is written after the checkpoint's rename (an fsync later), and a kill in
    between lost a finished training: the resume trained again. This is the state that kill
    leaves: checkpoint/ in place; no train_stats.json, evaluation or metrics line of iteration 1."""
    run = tmp_path / "run"
    args = ["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={task_file}",
            "--set", "trainer.pretrain_mix_ratio=0", "--set", "progress=false"]
    assert main(args) == 0
    want = _results(run)
    it = run / "iterations" / "1"
    weights = it / "checkpoint" / "model.safetensors"
    saved_at = weights.stat().st_mtime_ns
    for name in ("train_stats.json", "eval_samples.jsonl", "eval.json"):
        (it / name).unlink()
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    capsys.readouterr()

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "iteration 1 goes on from its saved stages" in out and "training on" not in out
    assert weights.stat().st_mtime_ns == saved_at
    assert _results(run) == want


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(tmp_path, tiny_model_path, task_file, wait_for_lines):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "leti", "run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
           "--set", f"task={task_file}", "--set", "sampling.n=6", "--set", "sampling.batch_size=1",
           "--set", "trainer.pretrain_mix_ratio=0", "--set", "progress=false"]
    # A shell's background job (`cmd &`) ignores SIGINT and its children inherit that, and Python
    # then installs no KeyboardInterrupt handler: give the run the default, as a terminal would.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_lines(proc, run / "iterations" / "1" / "samples.jsonl", 1, timeout=50)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "leti: interrupted; run the same command again to resume"


@pytest.mark.slow
def test_sft_trains_on_references(tmp_path, tiny_model_path, task_file, capsys):
    run = tmp_path / "sft"
    assert main(["sft", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", f"task={task_file}", "--set", "trainer.pretrain_mix_ratio=0", "--set", "eval.temperature=0"]) == 0
    # the LeTI config's loop settings are named as unused, not ignored silently
    out, err = capsys.readouterr()
    assert "leti: warning: eval.n: temperature 0 is greedy decoding, so the 2 samples of each problem are one " \
        "program repeated; pass@k for every k is pass@1; set eval.n: 1\n" in err
    assert "leti: note: `leti sft` does not use iterations=1, sampling.max_new_tokens=24, sampling.n=2: " in err
    assert "reference solutions fail" not in err
    assert "2 eval problems x 2, one training stage of 1 epoch\n" in out
    stats = json.loads((run / "iterations" / "1" / "train_stats.json").read_text())
    assert stats["n_texts"] == 3 and stats["pretrain_batches"] == 0
    assert not (run / "iterations" / "1" / "samples.jsonl").exists()
    ev = json.loads((run / "iterations" / "1" / "eval.json").read_text())
    assert ev["conditioned_on_good"] is False
    assert json.loads((run / "run.json").read_text())["mode"] == "sft"
    # what sft does not use may change on resume; what it uses may not
    assert main(["sft", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={task_file}",
                 "--set", "trainer.pretrain_mix_ratio=0", "--set", "sampling.n=5", "--set", "iterations=3",
                 "--set", "eval.temperature=0"]) == 0
    assert "is already finished" in capsys.readouterr().out
    assert main(["sft", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={task_file}",
                 "--set", "trainer.pretrain_mix_ratio=0", "--set", "eval.n=4", "--set", "eval.temperature=0"]) == 2
    assert "field 'eval.n' was 2" in capsys.readouterr().err
    # a LeTI run cannot be resumed in an SFT directory
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", f"task={task_file}"]) == 2
    capsys.readouterr()
    # nor started from its config.yaml (it ran the LeTI loop on the baseline's settings)
    assert main(["run", str(run / "config.yaml"), "--run-dir", str(tmp_path / "leti")]) == 2
    assert "a config for the supervised baseline" in capsys.readouterr().err
    assert not (tmp_path / "leti").exists()


@pytest.mark.slow
def test_sft_names_the_reference_solutions_that_fail_their_tests(tmp_path, tiny_model_path, capsys):
    """The supervised baseline trains on the references as ground truth: a wrong one weakened it
    without a word."""
    rows = [_problem("t1", "train", 1), {**_problem("t2", "train", 2), "reference": "def add_2(n):\n    return n\n"},
            _problem("e1", "test", 3)]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["sft", CONFIG, "--run-dir", str(tmp_path / "sft"), "--set", f"model={tiny_model_path}",
                 "--set", f"task=jsonl:{path}", "--set", "trainer.pretrain_mix_ratio=0", "--set", "trainer.epochs=1",
                 "--set", "eval.n=1", "--set", "eval.ks=[1]", "--set", "execution.memory_mb=2048"]) == 0
    # with the run's own limits (the memory limit is not validate's default), so it sees what the run saw
    assert (f"leti: warning: 1 of 2 reference solutions fail their own tests (t2) and are trained on all the same; "
            f"`leti tasks validate jsonl:{path} --split train --timeout 5 --memory-mb 2048` shows why\n") in capsys.readouterr().err
    assert main(["tasks", "validate", f"jsonl:{path}", "--split", "train", "--timeout", "5", "--memory-mb", "2048"]) == 1
    assert "t2" in capsys.readouterr().out


@pytest.mark.slow
def test_training_on_one_text_says_one_text(tmp_path, tiny_model_path, task_file, capsys):
    assert main(["sft", CONFIG, "--run-dir", str(tmp_path / "sft"), "--set", f"model={tiny_model_path}",
                 "--set", f"task={task_file}", "--set", "trainer.pretrain_mix_ratio=0", "--set", "max_train_problems=1",
                 "--set", "trainer.epochs=1", "--set", "eval.max_problems=1"]) == 0
    assert "leti: iteration 1: training on 1 text for 1 epoch\n" in capsys.readouterr().out
    assert main(["sft", CONFIG, "--run-dir", str(tmp_path / "short"), "--set", f"model={tiny_model_path}",
                 "--set", f"task={task_file}", "--set", "trainer.pretrain_mix_ratio=0", "--set", "max_train_problems=1",
                 "--set", "trainer.epochs=1", "--set", "eval.max_problems=1", "--set", "trainer.max_length=8"]) == 0
    assert ("leti: iteration 1: 1 of 1 training text exceeded trainer.max_length=8 tokens (cut at the end: "
            "the rest is not trained on); raise trainer.max_length to keep them\n") in capsys.readouterr().out
    # where the model's context is the cap, raising trainer.max_length would change nothing
    short = make_tiny_model(tmp_path / "short-context", n_positions=48)
    assert main(["sft", CONFIG, "--run-dir", str(tmp_path / "ctx"), "--set", f"model={short}",
                 "--set", f"task={task_file}", "--set", "trainer.pretrain_mix_ratio=0", "--set", "max_train_problems=1",
                 "--set", "trainer.epochs=1", "--set", "eval.max_problems=1", "--set", "eval.max_new_tokens=2"]) == 0
    assert ("leti: iteration 1: 1 of 1 training text exceeded the model's context of 48 tokens (cut at "
            "the end: the rest is not trained on); it caps trainer.max_length=256, so lower sampling.max_new_tokens, or "
            "shorten the feedback (execution.feedback_max_bytes) or the prompts, to keep them\n") in capsys.readouterr().out

@pytest.mark.slow
def test_a_run_without_reward_tokens_is_never_prompted_with_good(tmp_path, tiny_model_path, task_file):
    # The ablation trains no <|good|>, so prefixing it would prompt with an untrained embedding.
    run = tmp_path / "run"
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", f"task={task_file}", "--set", "iterations=2", "--set", "training_text.reward_token=false",
                 "--set", "trainer.pretrain_mix_ratio=0"]) == 0
    for k in (1, 2):
        it = run / "iterations" / str(k)
        prompts = [json.loads(x)["prompt"] for x in (it / "samples.jsonl").read_text().splitlines()]
        prompts += [json.loads(x)["prompt"] for x in (it / "eval_samples.jsonl").read_text().splitlines()]
        assert prompts and not any(p.startswith("<|good|>") for p in prompts), k
        assert json.loads((it / "eval.json").read_text())["conditioned_on_good"] is False


@pytest.mark.slow
def test_qlora_run_saves_plain_full_precision_checkpoints(tmp_path, tiny_model_path, task_file):
    pytest.importorskip("bitsandbytes")
    run = tmp_path / "run"
    args = ["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={task_file}",
            "--set", "iterations=2", "--set", "progress=false",
            "--set", "trainer.lora.enabled=true", "--set", "trainer.lora.load_in_4bit=true",
            "--set", "trainer.pretrain_mix_ratio=0", "--set", "trainer.carry_optimizer_state=false"]
    assert main(args) == 0
    base = load_file(Path(tiny_model_path) / "model.safetensors")
    first, second = (load_file(run / "iterations" / str(k) / "checkpoint" / "model.safetensors") for k in (1, 2))
    name = "transformer.h.0.attn.c_attn.weight"
    # Each iteration's adapters were merged into full-precision weights (iteration 2 starts from
    # checkpoint 1, whose 4-bit copy is loaded from disk), and nothing 4-bit was saved.
    assert all(t.dtype.is_floating_point and t.dtype.itemsize == 4 for t in second.values())
    assert set(second) == set(first)
    assert not (base[name] == first[name]).all() and not (first[name] == second[name]).all()
    config = json.loads((run / "iterations" / "2" / "checkpoint" / "config.json").read_text())
    assert "quantization_config" not in config


@pytest.mark.slow
@pytest.mark.parametrize("four_bit", [False, True], ids=["lora", "qlora"])
def test_adapter_checkpoints_keep_training_the_same_adapters_and_resume(tmp_path, tiny_model_path, task_file, four_bit):
    if four_bit:
        pytest.importorskip("bitsandbytes")
    common = ["--set", f"trainer.lora.load_in_4bit={str(four_bit).lower()}","--set", f"model={tiny_model_path}", "--set", f"task={task_file}", "--set", "progress=false",
              "--set", "trainer.lora.enabled=true", "--set", "trainer.lora.save=adapter",
              "--set", "trainer.pretrain_mix_ratio=0"]  # the mix is beside the point here
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["run", CONFIG, "--run-dir", str(straight), "--set", "iterations=2", *common]) == 0
    # The same run in two processes: iteration 2 starts from checkpoint 1 loaded from disk.
    assert main(["run", CONFIG, "--run-dir", str(resumed), "--set", "iterations=1", *common]) == 0
    assert main(["run", CONFIG, "--run-dir", str(resumed), "--set", "iterations=2", *common]) == 0

    def adapters(run: Path, k: int) -> dict:
        ckpt = run / "iterations" / str(k) / "checkpoint"
        assert not (ckpt / "model.safetensors").exists()  # adapters only, not the whole model
        config = json.loads((ckpt / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == tiny_model_path  # always over the original model
        return load_file(ckpt / "adapter_model.safetensors")

    first, second = adapters(straight, 1), adapters(straight, 2)
    assert any("lora_A" in k for k in first) and any("trainable_tokens" in k for k in first)
    assert not any(k.endswith("wte.weight") for k in first)  # the embedding matrix is not copied
    # Iteration 2 went on training the adapters of iteration 1 (not fresh ones).
    lora_b = next(k for k in first if "lora_B" in k)
    assert first[lora_b].abs().sum() > 0 and not (first[lora_b] == second[lora_b]).all()
    # AdamW went on with the adapters' state (trainer.carry_optimizer_state), saved with them
    stats = [json.loads((straight / "iterations" / str(k) / "train_stats.json").read_text()) for k in (1, 2)]
    assert stats[1]["optimizer_steps_before"] == stats[0]["optimizer_steps"] > 0
    assert (straight / "iterations" / "2" / "checkpoint" / OPTIMIZER_FILE).is_file()
    # Continuing from the checkpoint on disk gives the same adapters as continuing in memory.
    resumed_second = adapters(resumed, 2)
    assert set(resumed_second) == set(second)
    assert all(torch.allclose(resumed_second[k], second[k], atol=1e-6) for k in second)
    ev = [json.loads((r / "iterations" / "2" / "eval.json").read_text()) for r in (straight, resumed)]
    assert ev[0]["per_problem"] == ev[1]["per_problem"]


def test_eval_stderr_of_an_old_eval_json_is_rebuilt_from_per_problem() -> None:
    """A run resumed from an eval.json written before pass@k_stderr existed still gets one."""
    from leti.loop.stages import eval_stderr

    old = {"pass@k": {"pass@1": 0.5, "pass@2": 2 / 3}, "per_problem": {"a": [2, 1], "b": [2, 2], "c": [2, 0]}}
    got = eval_stderr(old)
    # pass@1 per problem 0.5, 1, 0; pass@2 per problem 1, 1, 0
    assert got["pass@1"] == pytest.approx(stdev([0.5, 1.0, 0.0]) / math.sqrt(3))
    assert got["pass@2"] == pytest.approx(stdev([1.0, 1.0, 0.0]) / math.sqrt(3))
    assert eval_stderr({**old, "pass@k_stderr": {"pass@1": None}}) == {"pass@1": None}  # stored wins


def test_progress_lines_print_the_evaluation_as_metrics_jsonl_holds_it(tmp_path, capsys, geneva):
    """A GENEVA run's console never showed its F1 scores (metrics.jsonl's "eval" has them), and the
    line of an iteration evaluated late (evaluate_finished: not evaluated under eval.every, then the
    last) had no ±. Both lines now print every metric of the evaluation, in one format: ± where a
    standard error exists, the task's unit. The stages read their eval.json, so no model is needed."""
    from leti.config import RunConfig
    from leti.loop.iteration import Iterations
    from leti.loop.rundir import RunDir

    rd = RunDir(tmp_path / "run")
    f1s = {"arg_i_precision": 50.0, "arg_i_recall": 25.0, "arg_i_f1": 33.3333,
           "arg_c_precision": 25.0, "arg_c_recall": 12.5, "arg_c_f1": 16.6667}
    for k in (0, 1):
        rd.iteration(k).mkdir(parents=True)
        rd.eval(k).write_text(json.dumps({"pass@k": {"pass@1": 0.25, "pass@2": 0.5}, "task_metrics": f1s,
                                          "pass@k_stderr": {"pass@1": 0.125, "pass@2": None}, "wall_s": 1.0}))
    cfg = RunConfig(model="unused", task="geneva", iterations=1)
    its = Iterations(cfg, rd, geneva, [], [], None, None, "leti", None)
    its.iteration(0, last=1)  # iteration 0: its evaluation only
    rd.append_metrics({"iteration": 1, "gradient_steps_total": 4, "eval": None, "eval_stderr": None, "wall_s": 2.0})
    its.evaluate_finished(1)  # iteration 1 finished unevaluated, then evaluated as the last
    evaluation = ("pass@1=0.2500±0.1250, pass@2=0.5000, arg_i_precision=50.0000%, arg_i_recall=25.0000%, "
                  "arg_i_f1=33.3333%, arg_c_precision=25.0000%, arg_c_recall=12.5000%, arg_c_f1=16.6667%")
    assert capsys.readouterr().out.splitlines() == [
        f"leti: iteration 0: gradient_steps_total=0, train_pass_rate=None, {evaluation}",
        f"leti: iteration 1: {evaluation}"]
    assert [r["eval"] for r in rd.metrics()] == [{"pass@1": 0.25, "pass@2": 0.5, **f1s}] * 2
