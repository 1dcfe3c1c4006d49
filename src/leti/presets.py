"""The shipped run configs (leti/configs, installed with the package; `configs/` in a checkout
links to them). `leti run NAME` takes a preset by name, so a pip-installed leti runs the paper's
settings without a checkout; `leti presets` lists them, prints one to copy, or gives its path
(the accelerate configs, for `accelerate launch --config_file`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leti.errors import LetiError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class Preset:
    name: str  # the file's path under PRESET_DIR without ".yaml": "mbpp-codegen-350m", "accelerate/ddp"
    path: Path
    summary: str  # the first sentence of the file's leading comment


def list_presets() -> list[Preset]:
    """Every shipped preset, run configs first, then the accelerate launch configs, by name."""
    paths = sorted(PRESET_DIR.glob("*.yaml")) + sorted(PRESET_DIR.glob("accelerate/*.yaml"))
    return [Preset(p.relative_to(PRESET_DIR).with_suffix("").as_posix(), p, _summary(p)) for p in paths]


def find_preset(name: str) -> Preset | None:
    """The preset called `name` (".yaml" may be given too), None when there is none."""
    name = name.removesuffix(".yaml")
    return next((p for p in list_presets() if p.name == name), None)


def resolve_config(arg: str | Path) -> Path:
    """A config argument as the file to read: a path that exists as given (a user's own file wins
    over a preset of the same name), else a preset's name. A name that is neither is one error line
    listing the presets. A missing path whose file is named like a run preset (`configs/tiny-cpu.yaml`,
    as a checkout's docs write it, run where there is no checkout) is one error line naming the
    preset to run instead; any other missing path with a directory in it is left to the reader,
    which names it."""
    path = Path(arg)
    if path.exists():
        return path
    preset = find_preset(str(arg))
    if preset is not None and "/" in preset.name:  # `leti presets` lists it, so "not found" would mislead
        raise LetiError(f"{arg} is an accelerate launch config, not a run config: accelerate launch --config_file "
                        f"\"$(leti presets {preset.name} --path)\" -m leti run CONFIG")
    if preset is not None:  # a bare name
        return preset.path
    if len(path.parts) > 1:
        preset = find_preset(path.name)
        if preset is not None and "/" not in preset.name:
            raise LetiError(f"{arg}: config file not found; leti ships a preset of that name: `leti run "
                            f"{preset.name}` runs it, `leti presets {preset.name} > my.yaml` copies it to edit")
        return path
    names = ", ".join(p.name for p in list_presets() if "/" not in p.name)
    raise LetiError(f"{arg}: config file not found, and no preset has that name; pass a YAML file or one of "
                    f"{names} (`leti presets` describes them)")


def _summary(path: Path) -> str:
    """The leading comment's first sentence, on one line."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words.extend(line.lstrip("#").split())
    text = " ".join(words)
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]
