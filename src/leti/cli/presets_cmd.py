"""`leti presets [NAME] [--path]`: the shipped run configs. Without NAME, a list; with NAME, the
file (`leti presets mbpp-codegen-350m > my.yaml`, edit, `leti run my.yaml`) or, with --path, where
it is installed (`accelerate launch --config_file "$(leti presets accelerate/ddp --path)" ...`).
`leti run NAME` runs a preset as it is."""

from __future__ import annotations

import argparse

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
        print("\nleti run NAME runs one; leti presets NAME prints it (to copy and edit); --path gives its file.")
        return 0
    preset = find_preset(args.name)
    if preset is None:
        raise LetiError(f"{args.name}: no preset of that name; `leti presets` lists them")
    print(preset.path if args.path else preset.path.read_text(encoding="utf-8"), end="\n" if args.path else "")
    return 0
