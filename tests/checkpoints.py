"""Checks on the checkpoints a run saved, shared by the DeepSpeed tests on CPU
(test_deepspeed.py) and on a GPU (test_gpu.py)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def assert_fp32_masters(run: Path, base_model: str | Path, iterations: tuple[int, ...]) -> None:
    """Each iteration's checkpoint holds fp32 master weights: fp32, not rounded to bf16 (the base's
    fp32 values moved by fp32 updates), and moved from the base model's."""
    base = load_file(Path(base_model) / "model.safetensors")
    for it in iterations:
        tuned = load_file(run / "iterations" / str(it) / "checkpoint" / "model.safetensors")
        assert {v.dtype for v in tuned.values()} == {torch.float32}
        assert not all(torch.equal(v, v.to(torch.bfloat16).to(v.dtype)) for v in tuned.values())
        assert max((tuned[k][: base[k].shape[0]] - base[k]).abs().max().item() for k in base) > 1e-4
