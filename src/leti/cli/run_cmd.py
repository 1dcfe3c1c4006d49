"""`leti run CONFIG [--run-dir DIR] [--set key=value ...]`: the LeTI loop, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_run_arguments(p: argparse.ArgumentParser, suffix: str = "") -> None:
    """`suffix`: what default_run_dir appends for this command (the help states the real default)."""
    p.add_argument("config", help="YAML run config, or a preset's name (leti presets lists them); every field has a paper default")
    p.add_argument("--run-dir", default=None,
                   help=f"run directory (default: runs/<config name>{suffix}); rerun on the same one to resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   # fields that `leti sft` uses too (it shares these arguments; sampling.* it does not read)
                   help="override a config field, e.g. --set trainer.learning_rate=5e-6 --set eval.n=4")


def default_run_dir(config: str, suffix: str = "") -> str:
    """runs/<config name>: the file's name less .yaml / .yml, or the preset's whole name (a stem
    cut `mbpp-qwen2.5-coder-1.5b-vllm` to `mbpp-qwen2.5-coder-1`)."""
    name = Path(config).name
    if name.lower().endswith((".yaml", ".yml")):
        name = name.rsplit(".", 1)[0]
    whole, stem = Path("runs") / (name + suffix), Path("runs") / (Path(config).stem + suffix)
    # a run started under the stem (before the name was kept whole) resumes where it is
    return str(stem if not whole.exists() and (stem / "run.json").exists() else whole)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run (or resume) LeTI iterations: sample, execute, train, evaluate",
                       description=__doc__)
    add_run_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from leti.cli import check_output_dir
    from leti.config import load_config
    from leti.loop.runner import run
    from leti.presets import refuse_sft_config_for_run

    refuse_sft_config_for_run(args.config)  # before the fields: the mode is the first mistake to name
    cfg = load_config(args.config, args.overrides)
    run_dir = args.run_dir or default_run_dir(args.config)
    check_output_dir(run_dir, "--run-dir")
    return run(cfg, run_dir, mode="leti", terminal_bars=True)
