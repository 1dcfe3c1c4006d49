"""The shipped run configs (leti/configs, installed with the package; `configs/` in a checkout
links to them). `leti run NAME` takes a preset by name, so a pip-installed leti runs the paper's
settings without a checkout; `leti presets` lists them, prints one to copy, or gives its path
(the accelerate configs, for `accelerate launch --config_file`).

A run config meant for `leti sft` (the supervised baseline) carries the comment line
`# leti: sft`; `leti run` refuses such a file. A comment, not a config field: it survives
`leti presets mbpp-sft > my.yaml` and `cp`, so the copy is refused too, and a user who wants the
LeTI loop on those settings deletes one line instead of learning a field that no run reads."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from leti.errors import LetiError

PRESET_DIR = Path(__file__).parent / "configs"
SFT_MARK = "# leti: sft"
_SFT_MARK_LINE = re.compile(r"^#\s*leti:\s*sft\b", re.MULTILINE)


@dataclass(frozen=True)
class Preset:
    name: str  # the file's path under PRESET_DIR without ".yaml": "mbpp-codegen-350m", "accelerate/ddp"
    path: Path
    summary: str  # the first sentence of the file's leading comment
    sft: bool  # a config for `leti sft` (its SFT_MARK line), which `leti run` refuses

    @property
    def accelerate(self) -> bool:
        """An accelerate launch config (accelerate/...), not a run config."""
        return "/" in self.name


def list_presets() -> list[Preset]:
    """Every shipped preset, run configs first, then the accelerate launch configs, by name."""
    paths = sorted(PRESET_DIR.glob("*.yaml")) + sorted(PRESET_DIR.glob("accelerate/*.yaml"))
    return [Preset(p.relative_to(PRESET_DIR).with_suffix("").as_posix(), p, _summary(p), is_sft_config(p))
            for p in paths]


def is_sft_config(path: Path) -> bool:
    """Whether the file has the SFT_MARK comment line. An unreadable file is not marked: reading
    it as a config names the problem. Nor is a pipe (`leti run /dev/stdin`, `<(...)`): it can be
    read only once, and the config loader must get its text."""
    try:
        if not path.is_file():
            return False
        return _SFT_MARK_LINE.search(path.read_text(encoding="utf-8")) is not None
    except (OSError, UnicodeDecodeError):
        return False


def refuse_sft_config_for_run(arg: str | Path) -> None:
    """`leti run ARG` on a config meant for `leti sft` is one error line naming that command
    (the LeTI loop with the baseline's 30 epochs per iteration is neither experiment)."""
    path = resolve_config(arg)
    if is_sft_config(path):
        preset = find_preset(str(arg)) if not Path(arg).exists() else None
        undo = (f"to run the LeTI loop on its settings, copy it (`leti presets {preset.name} > my.yaml`) and delete "
                f"its `{SFT_MARK}` line" if preset else f"to run the LeTI loop on it, delete its `{SFT_MARK}` line")
        raise LetiError(f"{arg}: a config for the supervised baseline (its `{SFT_MARK}` line): run it with "
                        f"`leti sft {arg}`; {undo}")


def find_preset(name: str) -> Preset | None:
    """The preset called `name` (".yaml" may be given too), None when there is none."""
    name = name.removesuffix(".yaml")
    return next((p for p in list_presets() if p.name == name), None)


def resolve_config(arg: str | Path) -> Path:
    """A config argument as the file to read: a path that exists as given (a user's own file wins
    over a preset of the same name), else a preset's name (refused while NAME.yaml or NAME.yml is
    in the current directory too). A name that is neither is one error line
    listing the presets. A missing path whose file is named like a run preset (`configs/tiny-cpu.yaml`,
    as a checkout's docs write it, run where there is no checkout) is one error line naming the
    preset to run instead; any other missing path with a directory in it is left to the reader,
    which names it."""
    path = Path(arg)
    if path.exists():
        return path
    preset = find_preset(str(arg))
    if preset is not None and preset.accelerate:  # `leti presets` lists it, so "not found" would mislead
        raise LetiError(f"{arg} is an accelerate launch config, not a run config: accelerate launch --config_file "
                        f"\"$(leti presets {preset.name} --path)\" -m leti run CONFIG")
    if preset is not None:  # a bare name
        # `leti presets NAME > NAME.yaml`, edited, then `leti run NAME`: the preset ran instead of
        # the edits without a word. Which one was meant cannot be told, so neither is guessed.
        bare = len(path.parts) == 1 and not str(arg).endswith((".yaml", ".yml"))
        copy = next((c for c in (Path(f"{arg}.yaml"), Path(f"{arg}.yml")) if c.is_file()), None) if bare else None
        if copy is not None:
            raise LetiError(f"{arg}: both the preset {preset.name} and ./{copy} exist; pass ./{copy} for your file, "
                            f"or rename it to use the preset")
        return preset.path
    if len(path.parts) > 1:
        preset = find_preset(path.name)
        if preset is not None and not preset.accelerate:
            command = "leti sft" if preset.sft else "leti run"
            raise LetiError(f"{arg}: config file not found; leti ships a preset of that name: `{command} "
                            f"{preset.name}` runs it, `leti presets {preset.name} > my.yaml` copies it to edit")
        return path
    names = ", ".join(p.name for p in list_presets() if not p.accelerate)
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
