"""DeepSpeed ZeRO through the shipped accelerate configs, for real: DeepSpeed runs on CPU
(its CPU accelerator over gloo), so `accelerate launch --config_file configs/accelerate/
deepspeed-zero{2,3}.yaml --num_processes 2` trains here exactly as it would on GPUs, minus the
kernels. ZeRO-3 includes the gather of the sharded weights into rank 0's checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoints import assert_fp32_masters
from procs import free_port
from safetensors.torch import load_file

from leti.errors import LetiError
from leti.training.config import TrainerConfig
from leti.training.sharded import check_sharding

ROOT = Path(__file__).resolve().parent.parent
CONFIG = str(ROOT / "configs" / "tiny-cpu.yaml")


def _launch(accelerate_config: str, run_dir: Path, args: list[str], precision: str = "no") -> subprocess.CompletedProcess:
    """`accelerate launch` of a shipped accelerate config on 2 CPU processes (fp32 by default).
    DeepSpeed splits AdamW's state over the ranks, which leti does not carry between iterations."""
    if accelerate_config.startswith("deepspeed"):
        args = [*args, "--set", "trainer.carry_optimizer_state=false"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(ROOT / "configs" / "accelerate" / f"{accelerate_config}.yaml"),
           "--num_processes", "2", "--mixed_precision", precision, "--main_process_port", str(free_port()),
           "-m", "leti", "run", CONFIG, "--run-dir", str(run_dir), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_zero2_and_zero3_train_the_same_weights_as_ddp(tmp_path, tiny_model_path, add_task):
    """The same run under DDP, ZeRO-2 and ZeRO-3 gives the same checkpoint (up to reduction
    order). With gradient accumulation and clipping set away from the DeepSpeed configs' old
    fixed values, this also checks that leti's trainer.* settings reach DeepSpeed (without
    that, ZeRO-2 differed from DDP by 1e-3 here); under ZeRO-3 it checks the gather."""
    pytest.importorskip("deepspeed")
    common = ["--set", f"model={tiny_model_path}", "--set", f"task={add_task}",
              "--set", "progress=false", "--set", "sampling.n=4",
              "--set", "trainer.gradient_accumulation_steps=2", "--set", "trainer.max_grad_norm=0.5"]
    ckpt = {}
    for strategy in ["ddp", "deepspeed-zero2", "deepspeed-zero3"]:
        run = tmp_path / strategy
        proc = _launch(strategy, run, common)
        assert proc.returncode == 0, f"{strategy}: {proc.stderr[-3000:]}"
        assert proc.stdout.count("leti: run finished") == 1
        if strategy == "ddp":  # DeepSpeed is installed but unused: Accelerate's import of it stays quiet
            assert "unable to detect" not in proc.stderr + proc.stdout
        assert json.loads((run / "iterations" / "1" / "eval.json").read_text())["sampled_by_rank"] == [2, 2]
        stats = json.loads((run / "iterations" / "1" / "train_stats.json").read_text())
        assert stats["optimizer_steps"] == 2  # 4 batches on this rank (2 LeTI + 2 pretraining) / 2
        ckpt[strategy] = load_file(run / "iterations" / "1" / "checkpoint" / "model.safetensors")

    base = load_file(Path(tiny_model_path) / "model.safetensors")
    ddp = ckpt["ddp"]
    # vocabulary rows beyond the base model's are LeTI's added tokens; compare the shared part
    moved = max((ddp[k][: base[k].shape[0]] - base[k]).abs().max().item() for k in base)
    assert moved > 1e-4
    for strategy in ["deepspeed-zero2", "deepspeed-zero3"]:
        got = ckpt[strategy]
        assert sorted(got) == sorted(ddp)
        assert all(v.dtype == ddp[k].dtype for k, v in got.items())  # fp32 run: the gather stays fp32
        diff = max((got[k] - ddp[k]).abs().max().item() for k in ddp)
        assert diff < 1e-5, (strategy, diff)


@pytest.mark.slow
def test_zero3_in_bf16_saves_the_gathered_16bit_weights_as_the_models_dtype(tmp_path, tiny_model_path, add_task):
    """The shipped ZeRO-3 config's precision (bf16): rank 0 gathers 16-bit weights, so the fp32
    checkpoint holds bf16 values (rounded once per iteration, as documented) and has moved."""
    pytest.importorskip("deepspeed")
    import torch

    run = tmp_path / "bf16"
    proc = _launch("deepspeed-zero3", run, ["--set", f"model={tiny_model_path}", "--set", f"task={add_task}",
                                            "--set", "progress=false", "--set", "trainer.mixed_precision=bf16"],
                   precision="bf16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    base = load_file(Path(tiny_model_path) / "model.safetensors")
    tuned = load_file(run / "iterations" / "1" / "checkpoint" / "model.safetensors")

    def in_bf16(weights: dict) -> bool:
        return all(torch.equal(v, v.to(torch.bfloat16).to(v.dtype)) for v in weights.values())

    assert {v.dtype for v in tuned.values()} == {torch.float32}
    assert in_bf16(tuned) and not in_bf16(base)
    assert max((tuned[k][: base[k].shape[0]] - base[k]).abs().max().item() for k in base) > 1e-3


@pytest.mark.slow
def test_zero2_in_bf16_hands_on_its_fp32_master_weights_across_iterations(tmp_path, tiny_model_path, add_task):
    """In bf16 DeepSpeed casts the model's own weights to bf16 and keeps fp32 ones in its
    optimizer; the leader kept the bf16 module, so the second iteration's AdamW refused it (and
    every checkpoint was rounded to bf16). Now both checkpoints hold the fp32 master weights."""
    pytest.importorskip("deepspeed")

    run = tmp_path / "bf16"
    proc = _launch("deepspeed-zero2", run, ["--set", f"model={tiny_model_path}", "--set", f"task={add_task}",
                                            "--set", "progress=false", "--set", "trainer.mixed_precision=bf16",
                                            "--set", "iterations=2", "--set", "eval.every=2"], precision="bf16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_fp32_masters(run, tiny_model_path, (1, 2))


def test_lora_under_deepspeed_in_16_bits_is_refused_at_start(monkeypatch):
    """DeepSpeed's bf16 casts the frozen weights too, which have no fp32 copy to come back from."""
    for key, value in {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}.items():
        monkeypatch.setenv(key, value)
    lora = {"enabled": True}
    from leti.training.config import LoraSettings

    with pytest.raises(LetiError, match="LoRA under DeepSpeed in bf16/fp16 rounds the frozen model weights"):
        check_sharding(TrainerConfig(mixed_precision="bf16", lora=LoraSettings(**lora)))
    check_sharding(TrainerConfig(mixed_precision="no", lora=LoraSettings(**lora)))


@pytest.mark.parametrize("precision, fix", [
    ("bf16", "use the accelerate/ddp launch config (leti presets accelerate/ddp --path), or accelerate/deepspeed-zero2 "
             "with trainer.mixed_precision: no (DeepSpeed in bf16 rounds LoRA's frozen weights)"),
    ("no", "use the accelerate/ddp or accelerate/deepspeed-zero2 launch config (leti presets NAME --path)"),
])
def test_lora_under_zero3_is_refused_naming_a_launch_that_trains_it(monkeypatch, precision, fix):
    """It named ZeRO-2 in bf16 too, which the precision check then refused in turn."""
    from leti.training.config import LoraSettings

    for key, value in {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}.items():
        monkeypatch.setenv(key, value)
    cfg = TrainerConfig(mixed_precision=precision, lora=LoraSettings(enabled=True))
    with pytest.raises(LetiError) as refused:
        check_sharding(cfg)
    assert str(refused.value).startswith("LoRA/QLoRA with FSDP or ZeRO-3 is not supported") and str(refused.value).endswith(fix)
    # what it names passes the same checks: ZeRO-2 without mixed precision, and DDP (no DeepSpeed) as configured
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    check_sharding(TrainerConfig(mixed_precision="no", lora=LoraSettings(enabled=True)))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    check_sharding(cfg)


@pytest.mark.slow
def test_lora_is_refused_under_zero3_before_sampling_and_trains_under_zero2(tmp_path, tiny_model_path, add_task):
    pytest.importorskip("deepspeed")
    pytest.importorskip("bitsandbytes")  # QLoRA
    common = ["--set", f"model={tiny_model_path}", "--set", f"task={add_task}",
              "--set", "progress=false", "--set", "trainer.lora.enabled=true"]
    proc = _launch("deepspeed-zero3", tmp_path / "zero3", common)
    assert proc.returncode != 0
    assert "leti: error: LoRA/QLoRA with FSDP or ZeRO-3 is not supported" in proc.stderr
    assert not (tmp_path / "zero3" / "iterations").exists()  # refused at start, nothing sampled

    base = load_file(Path(tiny_model_path) / "model.safetensors")
    for name, extra in [("lora", []), ("qlora", ["--set", "trainer.lora.load_in_4bit=true"])]:
        proc = _launch("deepspeed-zero2", tmp_path / name, [*common, *extra])
        assert proc.returncode == 0, proc.stderr[-3000:]
        tuned = load_file(tmp_path / name / "iterations" / "1" / "checkpoint" / "model.safetensors")
        assert sorted(tuned) == sorted(base)  # merged: a plain model
        assert max((tuned[k][: base[k].shape[0]] - base[k]).abs().max().item() for k in base) > 1e-4


@pytest.mark.parametrize("env, trainer, error", [
    ({"ACCELERATE_GRADIENT_CLIPPING": "1.0"}, {"max_grad_norm": 0.5},
     "the DeepSpeed config sets gradient_clipping: 1.0 but trainer.max_grad_norm is 0.5"),
    ({"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"}, {},
     "the DeepSpeed config sets gradient_accumulation_steps: 4 but trainer.gradient_accumulation_steps is 1"),
    ({"ACCELERATE_GRADIENT_CLIPPING": "auto", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "auto"}, {"max_grad_norm": 0.5}, None),
    ({"ACCELERATE_GRADIENT_CLIPPING": "0.5", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "2"},
     {"max_grad_norm": 0.5, "gradient_accumulation_steps": 2}, None),
])
def test_a_deepspeed_config_that_would_override_the_trainer_is_refused(monkeypatch, env, trainer, error):
    """What `accelerate launch` puts in the environment for a DeepSpeed config, checked at run
    start: DeepSpeed's own gradient accumulation / clipping would silently win over trainer.*."""
    for key, value in {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2", **env}.items():
        monkeypatch.setenv(key, value)
    if error is None:
        check_sharding(TrainerConfig(**trainer))
    else:
        with pytest.raises(LetiError, match=error):
            check_sharding(TrainerConfig(**trainer))


def test_a_deepspeed_config_with_its_own_optimizer_is_refused(monkeypatch, tmp_path):
    """A DeepSpeed JSON config (`deepspeed_config_file`) may bring an optimizer or scheduler;
    leti's trainer builds its own, and Accelerate would fail deep inside `prepare`."""
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_clipping": "auto",
                                "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
                                "scheduler": {"type": "WarmupLR"}}))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(path))
    with pytest.raises(LetiError, match="has its own optimizer and scheduler"):
        check_sharding(TrainerConfig())
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_clipping": "auto"}))
    check_sharding(TrainerConfig(gradient_accumulation_steps=1))  # the plugin reads 1 from a JSON without it


def test_fsdp_without_a_gpu_is_refused_at_run_start(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: FSDP can run (tests/test_gpu.py)")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_USE_ORIG_PARAMS", "true")  # as accelerate/fsdp.yaml; without it, weight decay is refused first
    with pytest.raises(LetiError, match="FSDP needs GPUs"):
        check_sharding(TrainerConfig())
