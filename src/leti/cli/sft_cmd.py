"""`leti sft CONFIG [--run-dir DIR] [--set key=value ...]`: the supervised baseline (fine-tune on
the task's reference solutions, then the same evaluation as `leti run`). It trains once, for
trainer.epochs: a LeTI config's `iterations`, training-time `sampling` and feedback switches of
`training_text` are not used (the run names those it is given)."""

from __future__ import annotations

import argparse
import sys

from leti.cli.run_cmd import add_run_arguments, default_run_dir

_SUFFIX = "-sft"  # an SFT run of a LeTI config does not land in (and resume) the LeTI run's directory
_SPEC_LR, _SPEC_EPOCHS = 1e-4, 30  # the spec's supervised baseline (configs/mbpp-sft.yaml)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sft", help="supervised baseline: fine-tune on reference solutions, then evaluate",
                       description=__doc__)
    add_run_arguments(p, _SUFFIX)
    p.set_defaults(func=_main)


def sft_baseline_note(cfg) -> str | None:
    """A note when `cfg` trains with another lr/epochs than the spec's baseline: a LeTI preset's
    trainer (lr 1e-5, 3 epochs) given to `leti sft` would quietly train a weaker baseline."""
    t = cfg.trainer
    if t.learning_rate == _SPEC_LR and t.epochs == _SPEC_EPOCHS:
        return None
    return (f"leti: note: this SFT run trains with trainer.learning_rate {t.learning_rate:g} and trainer.epochs "
            f"{t.epochs}; the spec's supervised baseline is lr 1e-4 for 30 epochs "
            "(the mbpp-sft / mbpp-codegen-2b-sft presets)")


def _main(args: argparse.Namespace) -> int:
    from leti.cli import check_output_dir
    from leti.config import load_config
    from leti.loop.runner import run

    cfg = load_config(args.config, args.overrides)
    if note := sft_baseline_note(cfg):
        print(note, file=sys.stderr)
    run_dir = args.run_dir or default_run_dir(args.config, _SUFFIX)
    check_output_dir(run_dir, "--run-dir")
    return run(cfg, run_dir, mode="sft", terminal_bars=True)
