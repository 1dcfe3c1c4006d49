"""The demo preset: one YAML file with the warm start, the task sizes and the `leti run`
config shared by all arms (leti/demo/presets/demo.yaml, demo-quick.yaml).

    warmstart: {...}          leti.demo.warmstart.WarmStartConfig fields
    task: {train: 48, test: 40}
    run: {...}                leti.config.RunConfig fields (model/seed/task are set per arm)

Each arm's resolved RunConfig is written to its run directory as config.yaml, so any arm can
be resumed or re-run with plain `leti run`. An arm continued past the demo's iterations that way
is left alone by a rerun of the demo, whose summary compares every arm at the demo's iterations.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from leti.config import RunConfig, build, read_yaml_mapping
from leti.demo.warmstart import WarmStartConfig
from leti.errors import LetiError
from leti.tasks.synthetic import generate_problems

# Each arm's training_text settings, over the preset's run.training_text. textual and binary are
# the paper's comparison; constant and passing are the controls that separate the feedback's
# layout from its content (constant: the span without the information; passing: failures dropped,
# so none shares the `<|good|>` layout used at evaluation). See leti.feedback.training_text.
ARM_TEXT: dict[str, dict] = {
    "textual": {"textual_feedback": True},
    "binary": {"textual_feedback": False},
    "constant": {"textual_feedback": True, "feedback_content": "constant"},
    "passing": {"textual_feedback": False, "keep_failures": False},
}
ARMS = tuple(ARM_TEXT)
ARM_LABEL = {"textual": "textual feedback", "binary": "binary feedback",
             "constant": "constant feedback", "passing": "passing samples only"}
DEFAULT_ARMS = ("textual", "binary")  # the controls are opt-in: each arm costs minutes
# The demo's presets ship inside the package (package data), so that `leti demo` works from an
# installed wheel as from a checkout.
CONFIG_DIR = Path(__file__).resolve().parent / "presets"


@dataclass(frozen=True)
class DemoConfig:
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig, metadata={"help": "The offline warm-start model."})
    train_problems: int = field(default=48, metadata={"help": "Synthetic training problems per arm."})
    test_problems: int = field(default=40, metadata={"help": "Synthetic held-out problems."})
    run: dict = field(default_factory=dict, metadata={"help": "RunConfig fields shared by all arms."})

    def __post_init__(self) -> None:
        if self.train_problems < 1 or self.test_problems < 1:
            raise LetiError(f"demo task sizes must be >= 1, got train={self.train_problems}, test={self.test_problems}")
        for reserved in ("model", "seed", "task"):
            if reserved in self.run:
                raise LetiError(f"demo config: run.{reserved} is set by the demo per seed and arm; remove it")


def select_arms(arms: str | Sequence[str]) -> tuple[str, ...]:
    """`"textual,passing"` (or a sequence) -> the arms in the given order, duplicates dropped."""
    names = [a.strip() for a in (arms.split(",") if isinstance(arms, str) else arms) if a.strip()]
    unknown = [a for a in names if a not in ARM_TEXT]
    if unknown or not names:
        raise LetiError(f"unknown demo arm(s) {', '.join(unknown) or '(none given)'}; "
                        f"--arms takes a comma-separated list of {', '.join(ARMS)}")
    return tuple(dict.fromkeys(names))


def preset_path(quick: bool) -> Path:
    return CONFIG_DIR / ("demo-quick.yaml" if quick else "demo.yaml")


def load_demo_config(path: str | Path) -> DemoConfig:
    p = Path(path)
    raw = read_yaml_mapping(p, "demo config", f"check --config (the shipped demo presets are in {CONFIG_DIR})")
    if set(raw) - {"warmstart", "task", "run"}:
        raise LetiError(f"{p}: top-level fields must be warmstart, task, run; got {sorted(set(raw) - {'warmstart', 'task', 'run'})!r}")
    # A section given with a wrong type, even a falsy one ([], 0, false, null), is refused as
    # build() refuses a run config's: read as "no fields", it ran the full demo's defaults.
    task = _section(raw, "task", p)
    if set(task) - {"train", "test"}:
        raise LetiError(f"{p}: unknown field 'task.{sorted(map(str, set(task) - {'train', 'test'}))[0]}' "
                        "(known fields: train, test)")
    run = _section(raw, "run", p)
    for reserved in ("model", "seed", "task"):
        if reserved in run:
            raise LetiError(f"{p}: field 'run.{reserved}' is set by the demo per seed and arm; remove it")
    cfg = DemoConfig(
        warmstart=build(WarmStartConfig, raw.get("warmstart", {}), str(p), "warmstart."),
        train_problems=_task_size(task, "train", 48, p),
        test_problems=_task_size(task, "test", 40, p),
        run=dict(run),
    )
    _check_family_sizes(cfg, p)
    arm_config(cfg, 0, "model", "textual", where=f"{p}, section run")  # validate the run section now
    return cfg


def _section(raw: dict, name: str, p: Path) -> dict:
    """Section `name` of the demo config ({} when absent), in build()'s words when it is no mapping."""
    if name not in raw:
        return {}
    value = raw[name]
    if value is None:
        raise LetiError(f"{p}: section '{name}' is empty; give it fields, or remove it to keep its defaults")
    if not isinstance(value, dict):
        raise LetiError(f"{p}: field '{name}' must be a mapping, got {value!r}")
    return value


def _task_size(task: dict, split: str, default: int, p: Path) -> int:
    """task.train / task.test: an int, checked as build() checks run-config fields (int() would
    cut 2.7 to 2, and read True as 1)."""
    value = task.get(split, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise LetiError(f"{p}: field 'task.{split}' = {value!r} must be int")
    if value < 1:  # DemoConfig's own check names neither the file nor the field
        raise LetiError(f"{p}: field 'task.{split}' = {value} must be >= 1")
    return value


def _check_family_sizes(cfg: DemoConfig, p: Path) -> None:
    """The synthetic family has a fixed number of problems per split (the same for every seed):
    a size beyond it must fail here, not when the first arm is built after the warm start."""
    problems = generate_problems(0)
    for split, asked in (("train", cfg.train_problems), ("test", cfg.test_problems)):
        have = sum(q.split == split for q in problems)
        if asked > have:
            raise LetiError(f"{p}: field 'task.{split}' = {asked} asks for more problems than the synthetic family "
                            f"has ({have} {split} problems); use {have} or fewer")


def task_spec(cfg: DemoConfig, seed: int) -> str:
    return f"synthetic:seed={seed},train={cfg.train_problems},test={cfg.test_problems}"


def warmstart_for(cfg: DemoConfig, seed: int) -> WarmStartConfig:
    """The task's constant pools depend on the seed, so the warm start (whose corpus must avoid
    the task's constants) is built per seed too."""
    return replace(cfg.warmstart, seed=seed)


def arm_config(cfg: DemoConfig, seed: int, model: str, arm: str, corpus_dir: str | None = None,
               where: str = "demo config") -> RunConfig:
    """The RunConfig of one arm: identical for every arm except the training_text of ARM_TEXT."""
    select_arms([arm])
    raw = copy.deepcopy(cfg.run)
    raw.update(model=model, seed=seed, task=task_spec(cfg, seed))
    # a section that is no mapping (null, a list) is left as it is, for build() to name
    if isinstance(raw.get("training_text", {}), dict):
        raw["training_text"] = {**raw.get("training_text", {}), **ARM_TEXT[arm]}
    if corpus_dir is not None and isinstance(raw.get("trainer", {}), dict):
        raw["trainer"] = {**raw.get("trainer", {}), "pretrain_corpus": corpus_dir}
    return build(RunConfig, raw, where)
