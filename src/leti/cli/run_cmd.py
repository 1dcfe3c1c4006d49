"""`leti run CONFIG [--run-dir DIR] [--set key=value ...]`: the LeTI loop, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports the loop only when a command runs
    from leti.loop.checks import Mode


def add_run_arguments(p: argparse.ArgumentParser, suffix: str = "") -> None:
    """`suffix`: what default_run_dir appends for this command (the help states the real default)."""
    p.add_argument("config", help="YAML run config, or a preset's name (leti presets lists them); every field has a paper default")
    p.add_argument("--run-dir", default=None,
                   help=f"run directory (default: for a run's own config.yaml, that run; for another config.yaml, "
                        f"runs/<its folder's name>{suffix}; else runs/<config name>{suffix}); rerun on the same one "
                        "to resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   # fields that `leti sft` uses too (it shares these arguments; sampling.* it does not read)
                   help="override a config field, e.g. --set trainer.learning_rate=5e-6 --set eval.n=4")


def own_run(config: str, mode: Mode = "leti") -> Path | None:
    """The run folder whose own config.yaml `config` is (its folder holds the run's run.json), when
    that run is of `mode`; None otherwise. An sft run's config given to `leti run` is refused
    elsewhere (presets.refuse_sft_config_for_run); a leti run's given to `leti sft` is not its run."""
    from leti.loop.rundir import run_mode

    path = Path(config)
    if path.name != "config.yaml" or not path.is_file() or not (path.parent / "run.json").is_file():
        return None
    return path.parent if (run_mode(path.parent) or "leti") == mode else None


def default_run_dir(config: str, suffix: str = "", mode: Mode = "leti") -> str:
    """The run directory when no --run-dir is given: a run's own config.yaml (own_run) resumes that
    run, where rerunning the file would otherwise start it again elsewhere. Any other config goes to
    runs/<config name>: the file's name less .yaml / .yml, or the preset's whole name (a stem cut
    `mbpp-qwen2.5-coder-1.5b-vllm` to `mbpp-qwen2.5-coder-1`); a config.yaml (config.yml) takes
    its folder's name instead, since exp1/config.yaml and exp2/config.yaml would share
    runs/config."""
    if (run := own_run(config, mode)) is not None:
        return str(run)
    name = Path(config).name
    if name.lower().endswith((".yaml", ".yml")):
        name = name.rsplit(".", 1)[0]
    stem = Path(config).stem
    if stem == "config" and Path(config).is_file():
        name = Path(config).resolve().parent.name
    whole, stem_dir = Path("runs") / (name + suffix), Path("runs") / (stem + suffix)
    # a run started under the stem (before the name was kept whole; runs/config before a
    # config.yaml took its folder's name) resumes where it is
    return str(stem_dir if not whole.exists() and (stem_dir / "run.json").exists() else whole)


def choose_run_dir(config: str, run_dir: str | None, suffix: str = "", mode: Mode = "leti") -> tuple[str, str | None]:
    """(the run directory, and what a refusal to resume there adds: None for a --run-dir given or
    a run's own folder). A default named after a file name may hold another config's run of the
    same name, whose refusal alone ("resume with the same config (--set ...)") would lead to this
    config running with that one's settings."""
    if run_dir is not None:
        return run_dir, None
    chosen = default_run_dir(config, suffix, mode)
    if own_run(config, mode) is not None:
        print(f"leti: {config} is the config.yaml of the run in {chosen}: resuming that run "
              "(give --run-dir to start a new run with it)")
        return chosen, None
    if not Path(config).is_file():  # a preset's name: its runs are its own
        return chosen, None
    named = "its folder" if Path(config).stem == "config" and Path(chosen).name != "config" + suffix else "its file name"
    return chosen, (f"{chosen} is the default --run-dir, named after {named} ({config}), so it may hold the run of "
                    "another config named alike: to start this config's own run, give it its own --run-dir")


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
    run_dir, refusal_note = choose_run_dir(args.config, args.run_dir)
    check_output_dir(run_dir, "--run-dir")
    return run(cfg, run_dir, mode="leti", terminal_bars=True, refusal_note=refusal_note)
