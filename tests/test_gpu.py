"""GPU checks (issue: scale path). Skipped where CUDA is not available (see conftest.py); run them
on the GPU machine: `bash scripts/test.sh -m gpu`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoints import assert_fp32_masters
from safetensors.torch import load_file

from leti.cli import main

ROOT = Path(__file__).resolve().parent.parent
CONFIG = str(ROOT / "configs" / "tiny-cpu.yaml")


@pytest.mark.gpu
@pytest.mark.parametrize("four_bit", [False, True], ids=["lora", "qlora"])
def test_one_lora_iteration_on_gpu(tmp_path, tiny_model_path, add_task, four_bit):
    """One `leti run` iteration with LoRA (or QLoRA: 4-bit NF4 copy, bf16 compute) on CUDA: the
    LoRA delta is merged into the saved full-precision checkpoint."""
    if four_bit:
        pytest.importorskip("bitsandbytes")
    run = tmp_path / "run"
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", f"task={add_task}", "--set", "device=cuda", "--set", "trainer.lora.enabled=true",
                 "--set", f"trainer.lora.load_in_4bit={str(four_bit).lower()}", "--set", "progress=false",
                 "--set", "trainer.carry_optimizer_state=false"]) == 0  # merged: new adapters every iteration
    stats = json.loads((run / "iterations" / "1" / "train_stats.json").read_text())
    assert stats["optimizer_steps"] > 0
    base = load_file(Path(tiny_model_path) / "model.safetensors")
    tuned = load_file(run / "iterations" / "1" / "checkpoint" / "model.safetensors")
    name = "transformer.h.0.attn.c_attn.weight"
    assert not (base[name] == tuned[name]).all()  # LoRA delta merged into the weights
    assert tuned[name].dtype == base[name].dtype  # full precision, nothing 4-bit saved


@pytest.mark.gpu
@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed-zero3"])
def test_sharded_training_on_one_gpu(tmp_path, tiny_model_path, add_task, strategy):
    """The shipped FSDP and ZeRO-3 accelerate configs, one process on one GPU (the lent machines
    have one): training, the gather of the sharded weights into the leader's checkpoint, and
    the evaluation of the rebuilt model. Accelerate enables FSDP only on GPUs, so this is FSDP's
    only test; DeepSpeed also runs on CPU with two processes (tests/test_deepspeed.py)."""
    if strategy.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(ROOT / "configs" / "accelerate" / f"{strategy}.yaml"), "--num_processes", "1",
           "-m", "leti", "run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
           "--set", f"task={add_task}", "--set", "device=cuda", "--set", "progress=false",
           "--set", "trainer.carry_optimizer_state=false"]  # sharded AdamW state is not carried
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "leti: run finished" in proc.stdout
    assert (run / "iterations" / "1" / "eval.json").exists()  # the rebuilt model sampled
    base = load_file(Path(tiny_model_path) / "model.safetensors")
    tuned = load_file(run / "iterations" / "1" / "checkpoint" / "model.safetensors")
    assert sorted(tuned) == sorted(base) and {v.dtype for v in tuned.values()} == {base[k].dtype for k in base}
    assert max((tuned[k][: base[k].shape[0]] - base[k]).abs().max().item() for k in base) > 0


@pytest.mark.gpu
def test_zero2_in_bf16_keeps_fp32_master_weights_over_two_iterations_on_gpu(tmp_path, tiny_model_path, add_task):
    """tests/test_deepspeed.py's bf16 ZeRO-2 check on CUDA (one process): DeepSpeed runs the
    module in bf16 there for real, and both iterations' checkpoints must hold its fp32 masters."""
    pytest.importorskip("deepspeed")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(ROOT / "configs" / "accelerate" / "deepspeed-zero2.yaml"), "--num_processes", "1",
           "-m", "leti", "run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
           "--set", f"task={add_task}", "--set", "device=cuda", "--set", "progress=false",
           "--set", "trainer.mixed_precision=bf16", "--set", "iterations=2", "--set", "eval.every=2",
           "--set", "trainer.carry_optimizer_state=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_fp32_masters(run, tiny_model_path, (1, 2))


@pytest.mark.gpu
def test_a_gpu_index_beyond_the_visible_ones_is_one_line(tmp_path, tiny_model_path, add_task, capsys):
    import torch

    count = torch.cuda.device_count()
    assert main(["run", CONFIG, "--run-dir", str(tmp_path / "run"), "--set", f"model={tiny_model_path}",
                 "--set", f"task={add_task}", "--set", f"device=cuda:{count}", "--set", "progress=false"]) != 0
    err = capsys.readouterr().err
    assert f"device='cuda:{count}' but only {count} CUDA GPU" in err and "Traceback" not in err
