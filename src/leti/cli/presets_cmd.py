"""`leti presets [NAME] [--path]`: the shipped run configs. Without NAME, a list; with NAME, the
file (`leti presets mbpp-codegen-350m > my.yaml`, edit, `leti run my.yaml`) or, with --path, where
it is installed (`accelerate launch --config_file "$(leti presets accelerate/ddp --path)" ...`).
`leti run NAME` runs a preset as it is, `leti sft NAME` a supervised baseline (a preset marked
`# leti: sft`, which `leti run` refuses)."""

from __future__ import annotations

import argparse
import textwrap

from leti.errors import LetiError

_WIDTH = 100


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the shipped run configs, print one, or give its path",
                       description=__doc__)
    p.add_argument("name", nargs="?", default=None, help="a preset (e.g. mbpp-codegen-350m, accelerate/ddp)")
    p.add_argument("--path", action="store_true", help="print the preset's installed path instead of its text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from leti.presets import find_preset, list_presets

    presets = list_presets()
    if args.name is None:
        if args.path:
            raise LetiError("--path: name a preset, e.g. leti presets accelerate/ddp --path")
        width = max(len(p.name) for p in presets)
        for p in presets:
            summary = p.summary if len(p.summary) <= _WIDTH - width - 2 else p.summary[: _WIDTH - width - 3] + "…"
            print(f"{p.name:<{width}}  {summary}")
        sft = ", ".join(p.name for p in presets if p.sft)
        print("\n" + textwrap.fill(f"leti run NAME runs one; leti sft NAME the supervised baselines: {sft}", _WIDTH,
                                   subsequent_indent="  ", break_on_hyphens=False))
        print("accelerate/*: accelerate launch --config_file \"$(leti presets NAME --path)\" -m leti run CONFIG")
        print("leti presets NAME prints one (to copy and edit); --path gives its file.")
        return 0
    preset = find_preset(args.name)
    if preset is None:
        raise LetiError(f"{args.name}: no preset of that name; `leti presets` lists them")
    print(preset.path if args.path else preset.path.read_text(encoding="utf-8"), end="\n" if args.path else "")
    return 0
