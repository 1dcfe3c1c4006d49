"""`leti sft CONFIG [--run-dir DIR] [--set key=value ...]`: the supervised baseline (fine-tune on
the task's reference solutions, then the same evaluation as `leti run`). It trains once, for
trainer.epochs: a LeTI config's `iterations`, training-time `sampling` and feedback switches of
`training_text` are not used (the run names those it is given)."""

from __future__ import annotations

import argparse

from leti.cli.run_cmd import add_run_arguments, choose_run_dir

_SUFFIX = "-sft"  # an SFT run of a LeTI config does not land in (and resume) the LeTI run's directory


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sft", help="supervised baseline: fine-tune on reference solutions, then evaluate",
                       description=__doc__)
    add_run_arguments(p, _SUFFIX)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from leti.cli import check_output_dir
    from leti.config import load_config
    from leti.loop.runner import run

    cfg = load_config(args.config, args.overrides)
    run_dir, refusal_note = choose_run_dir(args.config, args.run_dir, _SUFFIX, mode="sft")
    check_output_dir(run_dir, "--run-dir")
    return run(cfg, run_dir, mode="sft", terminal_bars=True, refusal_note=refusal_note)
