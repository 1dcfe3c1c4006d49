"""Multi-process `leti run` (two CPU processes, gloo, launched with torchrun): both ranks sample
a share of the programs (data parallel) and train on shards of the batches (DDP); rank 0 alone
executes and writes the run dir."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from procs import descendants, free_port
from safetensors.torch import load_file

from leti.cli import main
from leti.training.trainer import OPTIMIZER_FILE

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")


def _pids_with_arg(arg: str) -> list[int]:
    """Processes whose command line contains `arg` (Linux /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and arg.encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:  # the process ended meanwhile
            pass
    return pids


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _torchrun(args: list[str], timeout: int = 180) -> subprocess.CompletedProcess:
    cmd = [*TORCHRUN, "-m", "leti", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _common_n3(model: str, task: str) -> list[str]:
    # batch_size 1: every sample is generated alone, so how keys are dealt to ranks cannot even
    # change floating-point rounding, and the runs must agree exactly.
    # n=3: 9 training keys, an uneven deal (5 and 4), so one rank runs a round with nothing left.
    return ["--set", f"model={model}", "--set", f"task={task}", "--set", "progress=false",
            "--set", "sampling.n=3", "--set", "sampling.batch_size=1", "--set", "eval.batch_size=1"]


@pytest.fixture(scope="module")
def single_n3(tmp_path_factory, tiny_model_path, shared_add_task) -> Path:
    """The single-process run that the two-process and two-node launches must reproduce (run
    once for both)."""
    single = tmp_path_factory.mktemp("single_n3") / "run"
    assert main(["run", CONFIG, "--run-dir", str(single), *_common_n3(tiny_model_path, shared_add_task)]) == 0
    return single


@pytest.mark.slow
def test_two_process_run_matches_single_process(tmp_path, tiny_model_path, shared_add_task, single_n3, capsys):
    common = _common_n3(tiny_model_path, shared_add_task)
    single, multi, leader = single_n3, tmp_path / "multi", tmp_path / "leader"
    proc = _torchrun(["run", CONFIG, "--run-dir", str(multi), *common])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("leti: run finished") == 1  # only rank 0 runs the loop
    alone = _torchrun(["run", CONFIG, "--run-dir", str(leader), *common, "--set", "sampling.data_parallel=false"])
    assert alone.returncode == 0, alone.stderr[-3000:]

    def samples(run: Path, name: str) -> dict:
        lines = (run / "iterations" / "1" / name).read_text().splitlines()
        recs = [json.loads(x) for x in lines]
        # each key once, whichever rank generated it
        assert len({(r["problem_id"], r["sample_idx"]) for r in recs}) == len(recs)
        return {(r["problem_id"], r["sample_idx"]): (r["completion"], r["status"]) for r in recs}

    # Training samples come from the untrained model: the same as a single process draws (same
    # seeds), whether both ranks sample or rank 0 alone.
    assert len(samples(multi, "samples.jsonl")) == 9
    assert samples(multi, "samples.jsonl") == samples(single, "samples.jsonl") == samples(leader, "samples.jsonl")
    # Evaluation samples come from the model trained over 2 ranks (not a single process's).
    assert samples(multi, "eval_samples.jsonl") == samples(leader, "eval_samples.jsonl")
    done = json.loads((multi / "iterations" / "1" / "samples.done").read_text())
    ev = json.loads((multi / "iterations" / "1" / "eval.json").read_text())
    # 9 training and 4 evaluation programs, dealt round robin to 2 ranks
    assert (done["sampled_by_rank"], ev["sampled_by_rank"]) == ([5, 4], [2, 2])
    assert "sampled_by_rank" not in json.loads((leader / "iterations" / "1" / "samples.done").read_text())

    # Each rank trained on its share of the LeTI batches (9 texts, batch 4: 3 batches alone; 2
    # ranks x 2 batches, rank 1's second a Blank filler that trains nothing), with the
    # pretraining blocks split the same way; train_stats.json counts every rank's.
    one = json.loads((single / "iterations" / "1" / "train_stats.json").read_text())
    two = json.loads((multi / "iterations" / "1" / "train_stats.json").read_text())
    assert (one["leti_batches"], two["leti_batches"]) == (3, 3)
    assert (one["pretrain_batches"], two["pretrain_batches"]) == (3, 4)  # a mixed step after each LeTI step: 3; 2 x 2 ranks
    assert one["leti_tokens"] == two["leti_tokens"]
    base = load_file(Path(tiny_model_path) / "model.safetensors")
    tuned = load_file(multi / "iterations" / "1" / "checkpoint" / "model.safetensors")
    name = "transformer.h.0.attn.c_attn.weight"
    assert not (base[name] == tuned[name]).all()
    metrics = [json.loads(x) for x in (multi / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [0, 1]
    # The base model's loss on the held-out pretraining files, measured over 2 ranks: an odd number
    # of batches of 4 (73 blocks in 19 on Python 3.11, 49 in 13 on 3.12: the corpus is the running
    # interpreter's stdlib), so one rank runs a batch more, which the other repeats without counting it.
    alone_metrics = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["pretrain_heldout_loss"] == pytest.approx(alone_metrics[0]["pretrain_heldout_loss"], rel=1e-6)
    blocks = one["pretrain_heldout_blocks"]
    assert two["pretrain_heldout_blocks"] == blocks and -(-blocks // 4) % 2 == 1, blocks

    again = _torchrun(["run", CONFIG, "--run-dir", str(multi), *common])
    assert again.returncode == 0 and "already finished" in again.stdout
    # trainer.batch_size is per process: one process would go on with half the texts per step
    capsys.readouterr()
    assert main(["run", CONFIG, "--run-dir", str(multi), *common, "--set", "iterations=2"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"leti: error: {multi}: the run trained with 2 processes (8 texts per optimizer step), now 1 (4); launch it "
        "with 2 again (trainer.batch_size is per process), or use a new --run-dir")
    assert not (multi / "iterations" / "2").exists()
    assert yaml.safe_load((multi / "config.yaml").read_text())["iterations"] == 1
    # extended by an iteration: every rank goes on from the AdamW state rank 0 saved
    more = _torchrun(["run", CONFIG, "--run-dir", str(multi), *common, "--set", "iterations=2"])
    assert more.returncode == 0, more.stderr[-3000:]
    assert "AdamW going on from iteration 1" in more.stdout
    assert (multi / "iterations" / "2" / "checkpoint" / OPTIMIZER_FILE).is_file()


@pytest.mark.slow
def test_two_process_run_killed_mid_sampling_resumes_without_duplicates(tmp_path, tiny_model_path, wait_for_lines, add_task):
    """kill -9 of the whole launch while both ranks sample; the rerun samples only what is
    missing, and the result equals a single process's (batch size 1: sharding cannot matter)."""
    import signal

    common = ["--set", f"model={tiny_model_path}", "--set", f"task={add_task}", "--set", "progress=false",
              # n=32 x 48 tokens: sampling lasts seconds (at n=8 x 16 all 24 samples came in 0.5 s,
              # a window the kill could miss)
              "--set", "sampling.n=32", "--set", "sampling.batch_size=1", "--set", "sampling.max_new_tokens=48",
              "--set", "eval.batch_size=1", "--set", "trainer.pretrain_mix_ratio=0"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main(["run", CONFIG, "--run-dir", str(single), *common]) == 0
    samples = multi / "iterations" / "1" / "samples.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "leti", "run", CONFIG, "--run-dir", str(multi), *common]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    wait_for_lines(proc, samples, 2, timeout=120)
    # torchrun starts each rank in a session of its own, so a crash of the whole launch is the
    # launcher's group plus every process working on this run directory.
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in _pids_with_arg(str(multi)):
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    n_before = len(samples.read_text().splitlines())
    assert 2 <= n_before < 3 * 32 - 2  # at least one key left for each rank

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    recs = [json.loads(x) for x in samples.read_text().splitlines()]
    keys = [(r["problem_id"], r["sample_idx"]) for r in recs]
    assert len(keys) == len(set(keys)) == 3 * 32
    done = json.loads((multi / "iterations" / "1" / "samples.done").read_text())
    assert sum(done["sampled_by_rank"]) == 3 * 32 - n_before and min(done["sampled_by_rank"]) > 0
    ref = [json.loads(x) for x in (single / "iterations" / "1" / "samples.jsonl").read_text().splitlines()]
    assert {(r["problem_id"], r["sample_idx"]): r["completion"] for r in recs} == \
        {(r["problem_id"], r["sample_idx"]): r["completion"] for r in ref}


_TRAIN_SCRIPT = """
import hashlib, json, os, sys
import torch
from safetensors.torch import save_file
from leti.model import load_model_and_tokenizer
from leti.training.config import TrainerConfig
from leti.training.trainer import train

model_path, out, accumulation = sys.argv[1], sys.argv[2], int(sys.argv[3])
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    from accelerate import PartialState

    PartialState(cpu=True)  # gloo over the CPU ranks, as leti's Group starts it
model, tok = load_model_and_tokenizer(model_path, dtype="float32", device="cpu")
for m in model.modules():  # dropout draws differ between ranks
    if isinstance(m, torch.nn.Dropout):
        m.p = 0.0
texts = [f"<|good|>def f{i}(a):\\n    return a + {i}" + "  # pad" * (3 * i % 5) + "\\n" for i in range(5)]
cfg = TrainerConfig(batch_size=1, gradient_accumulation_steps=accumulation, epochs=1, max_length=64,
                    learning_rate=1e-3, pretrain_mix_ratio=0)
drawn = []  # the state of the RNG dropout draws from, at the first training forward pass
dropout = next(m for m in model.modules() if isinstance(m, torch.nn.Dropout))
dropout.register_forward_pre_hook(lambda *_: drawn.append(hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()) if not drawn else None)
model, stats = train(model, tok, texts, cfg, progress=False)
print(f"rng {os.environ.get('RANK', '0')} {drawn[0]}", flush=True)
if int(os.environ.get("RANK", "0")) == 0:
    save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, out)  # tied: one copy each
    print(json.dumps({"leti_batches": stats.leti_batches, "steps": stats.optimizer_steps, "leti_tokens": stats.leti_tokens,
                      "loss_first": stats.loss_first, "loss_mean": stats.loss_mean}))
"""


@pytest.mark.slow
def test_two_ranks_train_each_text_once_when_the_batches_do_not_divide(tmp_path, tiny_model_path):
    """5 micro-batches over 2 ranks: the last step has one batch for two ranks. Accelerate's
    even_batches filled rank 1's with the epoch's first text, trained twice; the Blank filler
    trains nothing, so 2 ranks x 1 batch per step train what 1 process x 2 accumulated batches
    train (the same texts per step, each once), up to the order of the gradient reduction."""
    script = tmp_path / "train_five.py"
    script.write_text(_TRAIN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), tiny_model_path, str(tmp_path / "one.safetensors"), "2"],
                         capture_output=True, text=True, timeout=180, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), tiny_model_path, str(tmp_path / "two.safetensors"), "1"],
                         capture_output=True, text=True, timeout=180, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    # train_stats describe the whole stage, every rank's batches, tokens and losses (were rank
    # 0's alone: 3 batches, its own tokens' loss)
    stats_one, stats_two = (json.loads(next(x for x in p.stdout.splitlines() if x.startswith("{"))) for p in (one, two))
    # each rank draws its own dropout masks (every rank drew the same ones)
    rng = dict(line.split()[1:] for line in two.stdout.splitlines() if line.startswith("rng "))
    assert sorted(rng) == ["0", "1"] and rng["0"] != rng["1"], rng
    assert {k: stats_one[k] for k in ("leti_batches", "steps")} == {"leti_batches": 5, "steps": 3}
    assert {k: stats_two[k] for k in ("leti_batches", "steps", "leti_tokens")} == {
        k: stats_one[k] for k in ("leti_batches", "steps", "leti_tokens")}
    for key in ("loss_first", "loss_mean"):
        assert stats_two[key] == pytest.approx(stats_one[key], rel=1e-5), key
    a, b = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    base = load_file(Path(tiny_model_path) / "model.safetensors")
    name = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(a[name], base[name])
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def _two_nodes(args: list[list[str]], cwds: tuple[Path | None, Path | None] = (None, None),
               timeout: int = 180) -> tuple[list[int], list[tuple[str, str]]]:
    """Two launchers of one process each (`torchrun --nnodes 2 --node_rank R`, the documented
    multi-node command), node R running `leti ARGS[R]` in CWDS[R]: (exit codes, (stdout, stderr))."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(r),
                               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
                               "-m", "leti", *args[r]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwds[r])
             for r in (0, 1)]
    try:
        outs = [node.communicate(timeout=timeout) for node in nodes]
    finally:
        for node in nodes:  # a hang is a failure, not a stuck suite
            node.kill()
    return [node.returncode for node in nodes], outs


@pytest.mark.slow
def test_two_node_launch_matches_single_process(tmp_path, tiny_model_path, shared_add_task, single_n3):
    """Several machines, emulated on this one: two launchers of one process each (`torchrun
    --nnodes 2 --node_rank R`, the documented multi-node command), so both ranks have
    LOCAL_RANK 0 and only RANK tells them apart. Rank 1 must follow, not lead, and sample its
    share; the samples equal a single process's."""
    common = _common_n3(tiny_model_path, shared_add_task)
    single, multi = single_n3, tmp_path / "multi"
    codes, outs = _two_nodes([["run", CONFIG, "--run-dir", str(multi), *common]] * 2)
    assert codes == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert outs[0][0].count("leti: run finished") == 1 and "leti: run finished" not in outs[1][0]
    for name in ["1/samples.jsonl", "0/eval_samples.jsonl"]:
        got, ref = ([json.loads(x) for x in (run / "iterations" / name).read_text().splitlines()] for run in (multi, single))
        assert {(r["problem_id"], r["sample_idx"]): r["completion"] for r in got} == \
            {(r["problem_id"], r["sample_idx"]): r["completion"] for r in ref}, name
    assert json.loads((multi / "iterations" / "1" / "samples.done").read_text())["sampled_by_rank"] == [5, 4]


@pytest.mark.slow
def test_nodes_started_with_different_configs_are_refused_on_every_rank(tmp_path, tiny_model_path, add_task):
    """A follower samples and trains with its own config: one node whose --set (or copy of the
    YAML) differed cut other batches, and both ranks waited in DDP's collectives for 24 h.
    Now every rank refuses, in one line, before any work."""
    common = ["run", CONFIG, "--run-dir", str(tmp_path / "run"), *_common_n3(tiny_model_path, add_task)]
    codes, outs = _two_nodes([common, [*common, "--set", "trainer.batch_size=2"]], timeout=120)
    line = ("leti: error: rank 1 was started with trainer.batch_size=2 but rank 0 with trainer.batch_size=4; start "
            "every process with the same config (the same file and --set on every node)")
    assert codes[0] != 0 and codes[1] != 0
    for _, err in outs:
        assert not re.search(r'File "[^"]*/leti/', err), err[-2000:]
    # printed once, by rank 0 (a launcher shows every rank's stderr: it was there once per rank)
    assert outs[0][1].count(line) == 1 and "leti: error" not in outs[1][1]
    assert not (tmp_path / "run" / "iterations").exists()


@pytest.mark.slow
def test_a_relative_path_read_differently_on_each_node_is_named_as_such(tmp_path, tiny_model_path, add_task):
    """The same `--set model=tm` on two nodes started in different directories: rank 0 has the
    model there, rank 1 not. Refused (they would load different weights), saying why the
    "same" --set differs."""
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    node0.mkdir()
    node1.mkdir()
    (node0 / "tm").symlink_to(tiny_model_path)
    args = ["run", CONFIG, "--run-dir", str(tmp_path / "run"), *_common_n3("tm", add_task)]
    codes, outs = _two_nodes([args, args], cwds=(node0, node1), timeout=120)
    assert codes[0] != 0 and codes[1] != 0 and "leti: error" not in outs[1][1]
    assert (f"rank 1 was started with model=tm but rank 0 with model={node0 / 'tm'}; start every process with the same "
            "config (the same file and --set on every node) (a relative path is read in each process's own "
            "directory: give it as an absolute path, or start every process in the same directory)") in outs[0][1]


@pytest.mark.slow
def test_nodes_in_other_directories_share_a_relative_run_dir_and_log_to_tensorboard(tmp_path, tiny_model_path,
                                                                                    add_task):
    """Each rank loads the checkpoints rank 0 writes: a relative --run-dir was sent as it was
    given, so a node started in another directory loaded that directory's copy (a stale one
    was sampled from without a word; here none, so rank 1 stopped). And with trainer.report_to
    tensorboard every rank but the leader failed at the first training stage (Accelerate wanted a
    logging_dir, which only the leader had); the run's tracker is now the leader's alone. Iteration 2 reads iteration 1's AdamW state, whose
    path followers got relative too (rank 1: "leti_optimizer.pth: missing")."""
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    node0.mkdir()
    node1.mkdir()
    args = ["run", CONFIG, "--run-dir", "run", *_common_n3(tiny_model_path, add_task),
            "--set", "trainer.report_to=[tensorboard]", "--set", "iterations=2"]
    codes, outs = _two_nodes([args, args], cwds=(node0, node1))
    assert codes == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    metrics = (node0 / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in metrics] == [0, 1, 2]
    assert "AdamW going on from iteration 1" in outs[0][0]
    assert json.loads((node0 / "run" / "iterations" / "1" / "eval.json").read_text())["sampled_by_rank"] == [2, 2]
    # one TensorBoard session for the run, the leader's, on the run's cumulative steps
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(node0 / "run" / "logs" / "tensorboard"))
    events.Reload()
    steps = [x.step for x in events.Scalars("train/leti_loss")]
    assert steps == sorted(set(steps)) and steps[-1] == json.loads(metrics[-1])["gradient_steps_total"]
    assert not list(node1.iterdir())  # only the leader writes the run directory


@pytest.mark.slow
def test_a_leader_error_ends_every_rank_with_one_line(tmp_path, tiny_model_path, add_task):
    """A one-line LetiError on rank 0 between stages (here: nothing passed, and failures are not
    kept) ends the whole launch with a failure and that one line, not a hang or a traceback."""
    proc = _torchrun(["run", CONFIG, "--run-dir", str(tmp_path / "run"), "--set", f"model={tiny_model_path}",
                      "--set", f"task={add_task}", "--set", "progress=false",
                      "--set", "training_text.keep_failures=false"])
    assert proc.returncode != 0
    assert proc.stderr.count("leti: error: iteration 1: no sample passed, and training_text.keep_failures is false") == 1
    # torchrun prints its own ChildFailedError traceback for rank 0's exit code 2; no rank
    # raised through leti's code.
    assert not re.search(r'File "[^"]*/leti/', proc.stderr)


@pytest.mark.vllm
@pytest.mark.slow
def test_two_process_vllm_sampling_matches_single_process(tmp_path, tiny_model_path, add_task):
    """Each rank runs its own vLLM engine on its share of the keys (vLLM's CPU build here); the
    seeded samples of the untrained model (iteration 1's training samples, iteration 0's
    evaluation) equal a single process's."""
    common = ["--set", f"model={tiny_model_path}", "--set", f"task={add_task}", "--set", "progress=false",
              "--set", "sampling.n=3", "--set", "sampling.backend=vllm", "--set", "sampling.vllm.dtype=float32",
              "--set", "sampling.vllm.enforce_eager=true", "--set", "sampling.vllm.gpu_memory_utilization=0.1",
              "--set", "eval.temperature=0.8"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    _run_until([sys.executable, "-m", "leti", "run", CONFIG, "--run-dir", str(single), *common],
               single / "iterations" / "1" / "samples.done", tmp_path / "single.err")
    _run_until([*TORCHRUN, "-m", "leti", "run", CONFIG, "--run-dir", str(multi), *common],
               multi / "iterations" / "1" / "samples.done", tmp_path / "multi.err")

    def samples(run: Path, name: str) -> dict:
        recs = [json.loads(x) for x in (run / "iterations" / name).read_text().splitlines()]
        return {(r["problem_id"], r["sample_idx"]): r["completion"] for r in recs}

    for name in ["1/samples.jsonl", "0/eval_samples.jsonl"]:
        assert samples(multi, name) == samples(single, name), name
    assert len(set(samples(single, "1/samples.jsonl").values())) > 1
    done = json.loads((multi / "iterations" / "1" / "samples.done").read_text())
    ev = json.loads((multi / "iterations" / "0" / "eval.json").read_text())
    assert (done["sampled_by_rank"], ev["sampled_by_rank"]) == ([5, 4], [2, 2])


def _run_until(cmd: list[str], marker: Path, err: Path, timeout: float = 600) -> None:
    """Run `cmd` until `marker` exists, then kill it and every process it started: what the
    test compares is written by then, and the stages after it (training, and the trained model's
    evaluation, which starts one more vLLM engine per process) would only cost CI time."""
    import signal
    import time

    with open(err, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            assert proc.poll() is None, f"exited {proc.returncode} before {marker}: {err.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {marker} within {timeout:g} s: {err.read_text()[-3000:]}"
            time.sleep(0.2)
    finally:
        # torchrun starts each rank in a session of its own: kill everything below it, by pid
        while below := descendants(proc.pid):
            for pid in below:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:  # ended meanwhile
                    pass
            time.sleep(0.05)
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_a_rank_whose_peer_dies_mid_stage_says_so_in_one_line(tmp_path, tiny_model_path, wait_for_lines, add_task):
    """Two processes started as two nodes would start them (no launcher stops the survivor): the
    leader is killed while both sample, and the follower, blocked in a collective, printed gloo's
    "Connection closed by peer" traceback through leti's code. Now one line, then exit."""
    import signal
    import time

    port = free_port()
    run = tmp_path / "run"
    args = [sys.executable, "-m", "leti", "run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
            "--set", f"task={add_task}", "--set", "progress=false", "--set", "sampling.n=32",
            "--set", "sampling.batch_size=1", "--set", "sampling.max_new_tokens=48", "--set", "eval.batch_size=1"]
    base = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    leader, follower = (subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         env={**base, "RANK": str(r), "GROUP_RANK": str(r)}) for r in (0, 1))
    try:
        wait_for_lines(leader, run / "iterations" / "1" / "samples.jsonl", 2, timeout=120)
        os.kill(leader.pid, signal.SIGKILL)
        t0 = time.time()
        out, err = follower.communicate(timeout=60)
        assert time.time() - t0 < 30
    finally:
        leader.kill()
        follower.kill()
    assert follower.returncode == 2, err[-3000:]
    assert re.fullmatch(r"leti: error: rank 1: another process of this launch stopped during a collective step "
                        r"\(Connection (closed|reset) by peer\); its own output says why\. Run the same command "
                        r"again to resume", err.strip().splitlines()[-1]), err[-3000:]
    assert "Traceback" not in err


@pytest.mark.parametrize("env, message", [
    ({"RANK": "1"}, "environment variable RANK=1 is set but WORLD_SIZE is not set: a launcher (torchrun, accelerate "
                    "launch) sets them together; unset RANK to run as one process"),
    ({"LOCAL_RANK": "1"}, "environment variable LOCAL_RANK=1 is set but WORLD_SIZE is not set: a launcher (torchrun, "
                          "accelerate launch) sets them together; unset LOCAL_RANK to run as one process"),
    ({"WORLD_SIZE": "2"}, "environment variable WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT are not: a "
                          "launcher (torchrun, accelerate launch) sets them together; unset WORLD_SIZE to run as one process"),
    ({"WORLD_SIZE": "two"}, "environment variable WORLD_SIZE='two' is not an integer; unset it, or launch with torchrun / "
                            "accelerate launch, which set it"),
])
def test_stray_launcher_variables_are_one_line_before_anything_runs(tmp_path, tiny_model_path, add_task, monkeypatch,
                                                                   capsys, env, message):
    """Left in a shell, RANK=1 made `leti run` a follower of no leader (exit 0, nothing done);
    LOCAL_RANK=1 or WORLD_SIZE=2 failed inside Accelerate after iteration 0 and the sampling."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run = tmp_path / "run"
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={add_task}"]) == 2
    assert capsys.readouterr().err.strip() == f"leti: error: {message}"
    assert not run.exists()


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_single_process_command_under_a_launcher_is_refused_once(tmp_path, monkeypatch, capsys, rank):
    """`leti evaluate` under torchrun ran once per process on one --out (the second refused as
    "another leti process"); rank 0 says why, the others exit with it quietly."""
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return False\n"}) + "\n")
    for name, value in {"WORLD_SIZE": "2", "RANK": rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    assert main(["evaluate", "--task", "humaneval", "--samples", str(samples), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("" if rank == "1" else
                   "leti: error: `leti evaluate` runs as one process, and this launch started 2 (WORLD_SIZE=2); run it "
                   "without torchrun / accelerate launch (only `leti run` and `leti sft` use several)")
    assert not out.exists()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_rank_waiting_for_peers_that_never_come_ends_on_a_signal(tmp_path, tiny_model_path, add_task, sig):
    """The join blocks in C++, where Python's handlers cannot run: a rank whose peer never started
    (a typo on the other node) ignored Ctrl-C and its launcher's SIGTERM, for up to 24 hours."""
    import signal
    import time

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    alone = subprocess.Popen([sys.executable, "-m", "leti", "run", CONFIG, "--run-dir", str(tmp_path / "run"),
                              "--set", f"model={tiny_model_path}", "--set", f"task={add_task}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # waiting for rank 1 once rank 0 listens on MASTER_PORT (the join's store)
        listening = re.compile(rf"^\s*\d+: [0-9A-F]+:{port:04X} [0-9A-F]+:0000 0A ", re.M)
        deadline = time.time() + 90
        while not any(listening.search(Path(f"/proc/net/{t}").read_text()) for t in ("tcp", "tcp6")):
            assert alone.poll() is None and time.time() < deadline, alone.stderr.read()[-2000:] if alone.poll() else ""
            time.sleep(0.2)
        time.sleep(1)
        os.kill(alone.pid, getattr(signal, sig))
        alone.communicate(timeout=20)
    finally:
        alone.kill()
    assert alone.returncode == -getattr(signal, sig)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_followers_unusable_cache_dir_is_refused_at_start_by_the_leader(tmp_path, tiny_model_path, add_task):
    """Each rank writes the pretraining corpus's cache in its own $LETI_CACHE_DIR: another node's
    unusable one failed there at the first training stage, after a whole sampling phase, and the
    leader then printed gloo's traceback. Now rank 0 names it at start, and nothing is sampled."""
    port = free_port()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = tmp_path / "run"
    args = [sys.executable, "-m", "leti", "run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
            "--set", f"task={add_task}", "--set", "progress=false"]
    base = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "LETI_CACHE_DIR": str(tmp_path / "cache")}
    envs = [{**base, "RANK": "0"}, {**base, "RANK": "1", "LETI_CACHE_DIR": str(blocker / "cache")}]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for env in envs]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [2, 2], outs
    lines = outs[0][1].strip().splitlines()
    assert lines[-1].startswith("leti: error: rank 1: pretraining corpus cache: cannot write to "), lines
    assert "a-file/cache/pretrain (Not a directory); set LETI_CACHE_DIR to a writable directory" in lines[-1]
    assert outs[1][1].strip() == ""  # rank 0 says it
    assert not (run / "iterations").exists()
