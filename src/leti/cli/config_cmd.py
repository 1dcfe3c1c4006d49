"""`leti config [CONFIG] [--set key=value ...]`: the resolved run config as YAML, every field with
its help text as a comment; without CONFIG, the defaults (the paper's run). The output is itself a
config file: `leti config > my.yaml`, edit, `leti run my.yaml`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
import typing

from leti.config import RunConfig, config_to_dict, load_config, yaml_value
from leti.errors import LetiError
from leti.execution.config import ExecutionConfig

_WIDTH = 100


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print a run config, resolved and validated, with every field's help",
                       description="Prints CONFIG (default: every default, the paper's run) after the --set "
                       "overrides, validated, as YAML with each field's help as a comment.")
    p.add_argument("config", nargs="?", default=None, help="YAML run config, or a preset's name (leti presets lists them); default: none, all defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set sampling.n=4")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from leti.loop.checks import switched_off_settings_warning
    from leti.presets import SFT_MARK, is_sft_config, resolve_config

    cfg = load_config(args.config, args.overrides)
    check_task(cfg, args.config, args.overrides)
    cfg.check_weights_dtype()  # `leti run` refuses it at start: "validated" must mean the same
    if warning := switched_off_settings_warning(cfg):  # as `leti run` warns at start
        print(warning, file=sys.stderr)
    # a config for `leti sft` keeps its mark, so `leti run` still refuses the printed copy
    sft = args.config is not None and is_sft_config(resolve_config(args.config))
    print((f"{SFT_MARK}  (a config for `leti sft`, which `leti run` refuses)\n" if sft else "") + render(cfg), end="")
    return 0


def check_task(cfg: RunConfig, path: str | None, overrides: list[str]) -> None:
    """The task spec names a registered task (a typo would pass as "validated" and fail only when
    a run starts). Its data are not read: a task file may live on the machine that runs."""
    from leti.tasks import get_task  # the registry imports task modules: only when printing

    try:
        get_task(cfg.task)
    except LetiError as e:
        # named where the value came from: the last --set of it, else the file
        given = [o for o in overrides if o.partition("=")[0].strip() == "task"]
        where = f"--set {given[-1]}" if given else f"{path}: field 'task'"
        raise LetiError(f"{where}: {e}") from None


def render(cfg: RunConfig) -> str:
    """`cfg` as YAML that load_config reads back to an equal config, each field preceded by its
    help (dataclass field metadata) as a comment."""
    return "".join(_lines(type(cfg), config_to_dict(cfg), indent=0))


def _lines(cls: type, values: dict, indent: int) -> list[str]:
    pad = " " * indent
    hints = typing.get_type_hints(cls)  # as leti.config.build resolves sections
    out = []
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help", "")
        if help_text:
            out += [f"{pad}# {line}\n" for line in textwrap.wrap(help_text, _WIDTH - indent - 2, break_on_hyphens=False, break_long_words=False)]
        if cls is ExecutionConfig and f.name == "feedback_style":
            # Left out: it follows training_text.feedback_style, and a printed copy edited there
            # alone was refused for the two differing.
            out.append(f"{pad}# {f.name}: follows training_text.feedback_style (set that one)\n")
        elif dataclasses.is_dataclass(hints[f.name]):
            out.append(f"{pad}{f.name}:\n")
            out += _lines(hints[f.name], values[f.name], indent + 2)
        else:
            out.append(f"{pad}{f.name}: {yaml_value(values[f.name])}\n")
    return out
