"""GPU checks (issue: scale path). Skipped where CUDA is not available (see conftest.py); run them
on the GPU machine: `bash scripts/test.sh -m gpu`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from leti.cli import main

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")


@pytest.mark.gpu
@pytest.mark.parametrize("four_bit", [False, True], ids=["lora", "qlora"])
def test_one_lora_iteration_on_gpu(tmp_path, tiny_model_path, four_bit):
    """One `leti run` iteration with LoRA (or QLoRA: 4-bit NF4 copy, bf16 compute) on CUDA: the
    LoRA delta is merged into the saved full-precision checkpoint."""
    if four_bit:
        pytest.importorskip("bitsandbytes")
    rows = [{"id": f"t{k}", "split": "train", "prompt": f'"""\nAdd {k} to a number.\nassert add_{k}(1) == {k + 1}\n"""\n',
             "tests": f"assert add_{k}(1) == {k + 1}\n"} for k in range(1, 4)]
    rows += [{**r, "id": r["id"].replace("t", "e"), "split": "test"} for r in rows[:2]]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", f"task=jsonl:{tasks}", "--set", "device=cuda", "--set", "trainer.lora.enabled=true",
                 "--set", f"trainer.lora.load_in_4bit={str(four_bit).lower()}", "--set", "progress=false"]) == 0
    stats = json.loads((run / "iterations" / "1" / "train_stats.json").read_text())
    assert stats["optimizer_steps"] > 0
    base = load_file(Path(tiny_model_path) / "model.safetensors")
    tuned = load_file(run / "iterations" / "1" / "checkpoint" / "model.safetensors")
    name = "transformer.h.0.attn.c_attn.weight"
    assert not (base[name] == tuned[name]).all()  # LoRA delta merged into the weights
    assert tuned[name].dtype == base[name].dtype  # full precision, nothing 4-bit saved
