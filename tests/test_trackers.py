"""`trainer.report_to`: a LeTI run logs its training loss to TensorBoard when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from leti.cli import main

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")


@pytest.mark.slow
def test_tensorboard_gets_the_training_loss(tmp_path, tiny_model_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", "trainer.report_to=[tensorboard]", "--set", "progress=false"]) == 0
    logs = run / "iterations" / "1" / "logs" / "leti"
    events = EventAccumulator(str(logs))
    events.Reload()
    losses = events.Scalars("train/leti_loss")
    assert losses and all(x.value > 0 for x in losses)
