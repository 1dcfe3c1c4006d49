"""The run directory: the only state of a `leti run` / `leti sft`, readable by other tools.

Layout (k = 0 is the untrained model's baseline evaluation; training iterations are 1..K):

    RUN/
      config.yaml                 resolved RunConfig (every field, local paths made absolute; `leti
                                  run` compares it on resume), ending in a digest of the fields a
                                  resume may not change (a hand edit of one is refused)
      run.json                    {"mode": "leti" | "sft", "created": ISO time, "id": the run's
                                  random id (its wandb run id; it moves with the folder, and a copy shares it), "config_sealed":
                                  true (config.yaml ends in its digest line), "problems_sha256":
                                  digest of the train and eval problems, "model_files": a digest
                                  per file of a local model directory (loop.checks.model_digest;
                                  checked while the run reads the model), "model_commit": the
                                  commit sha of a hub model that every load of the run reads
                                  (loop.checks.pin_model_revision), "processes": how many
                                  the run was launched with; checked on resume}
      metrics.jsonl               one JSON line per finished iteration, in order (fields below)
      .lock                       flock held while a process works on the run
      logs/                       with trainer.report_to: tensorboard/ and wandb/, the run's one
                                  tracker session (loop/tracking.py)
      iterations/<k>/
        samples.jsonl             training samples, append-only, one per (problem_id, sample_idx):
                                  problem_id, sample_idx, prompt (as sampled, so with the
                                  <|good|> prefix from iteration 2), completion, n_prompt_tokens,
                                  n_completion_tokens, finish_reason, plus every field of the
                                  sample's ExecutionResult.to_dict(): id, status, passed, feedback,
                                  exception_type, message, frames (a run of identical frames
                                  once, with "repeat": further copies), chain (the earlier
                                  exceptions of a chained one), stdout, duration_s, ...
        samples.done              JSON marker: sampling + execution finished (counts, wall_s,
                                  model_load_s: the phase's model load, 0 when kept in memory)
        train_stats.json          TrainStats of this iteration (steps, tokens, losses, packing)
        checkpoint/               model + tokenizer after this iteration's training (older ones
                                  are deleted when keep_checkpoints is set), and a copy of
                                  train_stats.json (leti_train_stats.json): the checkpoint lands
                                  in one rename, so a kill right after it keeps the training
        eval_samples.jsonl        evaluation samples, same record format as samples.jsonl
        eval.json                 {"iteration", "split", "n", "temperature", "conditioned_on_good",
                                   "n_problems", "pass@k": {"pass@1": ...}, "pass@k_stderr": {"pass@1": ...},
                                   "task_metrics": {...}, "status_counts", "per_problem": {problem_id: [n, c]},
                                   "wall_s", "model_load_s"}; pass@k_stderr is the standard error over problems (null
                                   for one problem; absent in runs from before it, where readers
                                   rebuild it from per_problem)

metrics.jsonl line: {"iteration", "gradient_steps_total", "train_samples", "train_pass_rate",
"train_status_counts", "train_exception_counts", "train_loss_mean", "eval": {"pass@1": ...}
or null when not evaluated this iteration, "eval_stderr": {"pass@1": ...} or null (eval.json's
pass@k_stderr; absent in older runs), "pretrain_heldout_loss" (the mean token loss on the
pretraining corpus's held-out files, or null when not measured; absent in older runs), "wall_s"
(this iteration's stages), "checkpoint" (the absolute path of the iteration's checkpoint;
iteration 0: the configured model)}. Iteration 0 has train_* = null and
gradient_steps_total = 0; its pretrain_heldout_loss is added to its line when iteration 1's
training stage has measured it. SFT runs have iterations 0 and 1; their iteration 1 has no
samples files.

Resume: every finished stage leaves its file, written atomically (temp + rename), so rerunning
skips it; samples.jsonl is keyed by (problem_id, sample_idx) and a partial last line from a
kill -9 is cut off before appending, so no sample is duplicated or generated twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from leti.errors import LetiError, naming_errors
from leti.execution.records import ExecutionResult, Status
from leti.jsonl import is_number, json_error_reason

Key = tuple[str, int]


@contextmanager
def locked_dir(root: Path, flag: str, what: str = "run directory") -> Iterator[None]:
    """Hold `root/.lock` while the block runs: a second leti process on the same output
    directory (given as `flag`) fails fast instead of appending to the same files. If the block
    fails, a .lock this call created is removed again, and so is a directory it created that
    holds nothing else: a refused command leaves the folder as it was (a stray .lock in a
    user's folder made `leti demo` take it for a run directory)."""
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    lock = root / ".lock"
    lock_created = not lock.exists()
    with open(lock, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LetiError(f"{root}: another leti process is working on this {what}; wait for it or use another {flag}") from None
        try:
            yield
        except BaseException:
            # unlinked while still held (only a process that opened it in this very instant could
            # still lock the old file, and it is racing a command that fails anyway)
            if lock_created:
                lock.unlink(missing_ok=True)
            if created and not any(root.iterdir()):
                root.rmdir()
            raise


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # paths
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    def iteration(self, k: int) -> Path:
        return self.root / "iterations" / str(k)

    def samples(self, k: int) -> Path:
        return self.iteration(k) / "samples.jsonl"

    def samples_done(self, k: int) -> Path:
        return self.iteration(k) / "samples.done"

    def train_stats(self, k: int) -> Path:
        return self.iteration(k) / "train_stats.json"

    def checkpoint(self, k: int) -> Path:
        return self.iteration(k) / "checkpoint"

    def checkpoint_tmp(self, k: int) -> Path:
        """Where checkpoint k is assembled before it lands in one rename."""
        return self.iteration(k) / "checkpoint.tmp"

    def trained(self, k: int) -> bool:
        """Whether iteration k's training stage is done: its train_stats.json, or its checkpoint
        landed, or whole in checkpoint.tmp (its stats go in last), which the next run lands."""
        return self.stats_file(k) is not None

    def stats_file(self, k: int) -> Path | None:
        """The first of those files (`trained`) that holds iteration k's TrainStats; None before
        its training stage is done."""
        paths = (self.train_stats(k), self.checkpoint_stats(k), self.checkpoint_tmp(k) / self.checkpoint_stats(k).name)
        return next((path for path in paths if path.exists()), None)

    def checkpoint_stats(self, k: int) -> Path:
        """train_stats.json as saved inside the checkpoint, which lands with it in one rename."""
        return self.checkpoint(k) / "leti_train_stats.json"

    def eval_samples(self, k: int) -> Path:
        return self.iteration(k) / "eval_samples.jsonl"

    def eval(self, k: int) -> Path:
        return self.iteration(k) / "eval.json"

    def locked(self) -> AbstractContextManager[None]:
        """One process per run directory: a second `leti run` on it fails fast instead of
        appending to the same files."""
        return locked_dir(self.root, "--run-dir")

    def has_output(self) -> bool:
        """Whether any stage has written something (a sample, a checkpoint, a result)."""
        its = self.root / "iterations"
        return its.is_dir() and any(f.is_file() and f.stat().st_size > 0 for f in its.rglob("*"))

    # metrics
    def metrics(self) -> list[dict]:
        self.finished_iterations()  # every record checked: a damaged line is an error naming it
        return read_jsonl(self.metrics_path)

    def metrics_cut_short(self) -> bool:
        """Whether metrics.jsonl ends in a partial line (a process killed while writing it), which
        readers leave out and the next `leti run` on this directory writes again."""
        if not self.metrics_path.exists():
            return False
        return _scan_jsonl(self.metrics_path)[1] < self.metrics_path.stat().st_size

    def finished_iterations(self) -> set[int]:
        """The iterations metrics.jsonl has a line for, each line checked: an iteration below 0 or
        listed twice (a hand-edited file, lines of another run) is an error naming the line."""
        first: dict[int, int] = {}
        for lineno, r in _scan_jsonl(self.metrics_path)[0]:
            if not isinstance(r, dict) or isinstance(r.get("iteration"), bool) or not isinstance(r.get("iteration"), int):
                raise LetiError(f"{self.metrics_path}:{lineno}: not a metrics record (no integer 'iteration'); "
                                "delete that line to redo its iteration")
            k = r["iteration"]
            if k < 0:
                raise LetiError(f"{self.metrics_path}:{lineno}: iteration {k} is not an iteration number (0, 1, ...); "
                                "delete that line")
            if k in first:
                raise LetiError(f"{self.metrics_path}:{lineno}: iteration {k} again (also on line {first[k]}); "
                                "delete the repeated line, or the one that does not belong to this run")
            first[k] = lineno
            ev = r.get("eval")
            numbers = isinstance(ev, dict) and all(v is None or is_number(v) for v in ev.values())
            if ev is not None and not numbers:
                raise LetiError(f"{self.metrics_path}:{lineno}: 'eval' must be an object of numbers or null, got "
                                f"{json.dumps(ev)[:40]}; delete that line to redo its iteration")
        return set(first)

    def append_metrics(self, record: dict) -> None:
        if record["iteration"] in self.finished_iterations():
            return
        append_jsonl(self.metrics_path, [record])

    def replace_metrics(self, record: dict) -> None:
        """Rewrite the line of record's iteration (atomically: the whole file)."""
        records = [record if r["iteration"] == record["iteration"] else r for r in self.metrics()]
        write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records))


def run_mode(root: Path) -> str | None:
    """run.json's mode ("leti" or "sft"); None without a readable one (older runs, hand-made
    directories), which are judged as `leti run` ones."""
    try:
        mode = json.loads((root / "run.json").read_text(encoding="utf-8")).get("mode")
    except (OSError, ValueError, AttributeError):
        return None
    return mode if isinstance(mode, str) else None


def trained_on_good(mode: str | None, cfg) -> bool:
    """Whether a run's trained checkpoints are sampled and evaluated with the <|good|> prefix: only
    a `leti run` whose training texts began with reward tokens taught the model what it means
    (spec); a `leti sft` run, or one without reward tokens, uses the plain prompt. `mode` is
    run_mode's (None: judged a `leti run`), `cfg` the run's RunConfig."""
    return mode != "sft" and cfg.training_text.reward_token


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with naming_errors(tmp), open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)  # the rename itself survives a power loss


# What the run's own JSON files hold under the keys its readers use: a value of another type (a
# hand edit) was a TypeError / ValueError traceback where it was added up or formatted.
_KEY_TYPES: dict[str, tuple[Any, str]] = {
    "mode": (lambda v: isinstance(v, str), "a string"),
    "wall_s": (is_number, "a number"),
    "loss_mean": (lambda v: v is None or is_number(v), "a number"),
    "optimizer_steps": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a count"),
    "pass@k": (lambda v: isinstance(v, dict) and all(is_number(x) for x in v.values()), "an object of numbers"),
    # eval.json's optional keys (read_json's `optional`): merged into metrics lines and printed
    "task_metrics": (lambda v: isinstance(v, dict) and all(is_number(x) for x in v.values()), "an object of numbers"),
    "pass@k_stderr": (lambda v: isinstance(v, dict) and all(x is None or is_number(x) for x in v.values()),
                      "an object of numbers or nulls"),
    "per_problem": (lambda v: isinstance(v, dict) and all(
        isinstance(nc, list) and len(nc) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in nc)
        for nc in v.values()), "an object of [n, c] pairs"),
}


# run.json is no stage: deleting it loses what it records, which the run then takes anew from
# the resume (see leti.loop.checks: _run_info, check_problems_unchanged, check_processes).
RUN_JSON_FIX = ("restore it, or delete it: the run then resumes without checking its mode, task problems and "
                "process count against the ones it started with")


def read_json(path: Path, required: tuple[str, ...] = (), fix: str | None = None,
              optional: tuple[str, ...] = ()) -> Any:
    """A JSON file of the run; with `required`, an object that must have those keys, each of the
    type leti writes there, and the `optional` keys of that type where present (a file damaged or
    edited by hand is an error naming it and `fix`, not a KeyError or TypeError later). The
    default fix is a stage file's ("delete it to redo that stage"), or run.json's own."""
    if fix is None:
        fix = RUN_JSON_FIX if path.name == "run.json" else "delete it to redo that stage"
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LetiError(f"{path}: not valid JSON ({json_error_reason(e)}); {fix}") from None
    missing = [k for k in required if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise LetiError(f"{path}: not a leti record (no '{missing[0]}'); {fix}")
    for key in (*required, *(k for k in optional if isinstance(obj, dict) and k in obj)):
        ok, what = _KEY_TYPES.get(key, (lambda v: True, ""))
        if not ok(obj[key]):
            raise LetiError(f"{path}: '{key}' must be {what}, got {json.dumps(obj[key])[:40]}; {fix}")
    return obj


def sync_dir(directory: Path) -> None:
    """Every file in `directory` (and the directory itself) on the disk, not only in the page cache."""
    for f in directory.rglob("*"):
        if f.is_file():
            _fsync_path(f)
    _fsync_path(directory)


def replace_dir_atomic(tmp: Path, final: Path, synced: bool = False) -> None:
    """Move a fully written directory into place (a half-written one is never at `final`).
    Its files reach the disk first (unless the caller did so: `synced`): after a power loss the
    rename must not survive while the data it vouches for is still in the page cache and gets lost."""
    if not synced:
        sync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_path(final.parent)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan_jsonl(path: Path) -> tuple[list[tuple[int, Any]], int]:
    """([(line number, record)], byte offset after the last good line). A broken final line is
    a partial write from a killed process and is dropped; a broken line elsewhere is an error."""
    if not path.exists():
        return [], 0
    lines = path.read_bytes().splitlines(keepends=True)
    records, good_end = [], 0
    for i, line in enumerate(lines):
        if not line.strip():
            good_end += len(line)
            continue
        try:
            records.append((i + 1, json.loads(line)))
        except (json.JSONDecodeError, UnicodeDecodeError):
            if i == len(lines) - 1:
                break
            raise LetiError(f"{path}:{i + 1}: not valid JSON; delete that line (or the file) to redo it") from None
        good_end += len(line)
    return records, good_end


def read_jsonl(path: Path) -> list[dict]:
    return [r for _, r in _scan_jsonl(path)[0]]


def repair_jsonl(path: Path) -> None:
    """Cut a partial last line and make sure the file ends with a newline before appending."""
    if not path.exists():
        return
    _, good_end = _scan_jsonl(path)
    with open(path, "r+b") as f:
        f.truncate(good_end)
        if good_end:
            f.seek(good_end - 1)
            if f.read(1) != b"\n":
                f.write(b"\n")


def append_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_jsonl(path)
    with naming_errors(path), open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())  # a metrics line marks its iteration finished


_STATUSES = frozenset(s.value for s in Status)


def sample_record_problem(r: object) -> str | None:
    """What makes `r` not a sample record as leti writes them (None: it is one), in the fields
    that the loop's resume, the training texts and the report read back: a hand-edited or foreign
    line was a KeyError / TypeError from deep inside."""
    if not isinstance(r, dict) or "problem_id" not in r or isinstance(r.get("sample_idx"), bool) \
            or not isinstance(r.get("sample_idx"), int):
        return "needs problem_id and sample_idx"
    for name, ok in (("passed", lambda v: isinstance(v, bool)), ("status", lambda v: v in _STATUSES),
                     ("exception_type", lambda v: isinstance(v, (str, type(None)))),
                     ("cut_off", lambda v: isinstance(v, str))):  # the stop hint quotes it (leti writes text or nothing)
        if name in r and not ok(r[name]):
            return f"{name!r} is {json.dumps(r[name])[:40]}"
    for name in ("passed", "status", "prompt", "completion"):
        if name not in r or name in ("prompt", "completion") and not isinstance(r[name], str):
            return f"bad or missing {name}"
    try:
        ExecutionResult.from_dict(r)
    except (KeyError, TypeError, ValueError):
        return "bad frames"
    return None


def scan_sample_records(path: Path, fix: str) -> list[tuple[int, dict]]:
    """(line number, record) of a samples.jsonl / eval_samples.jsonl, each checked
    (sample_record_problem: a bad one is a LetiError naming its line, with `fix`). A partial last
    line (a kill) is left out; a key (problem_id, sample_idx) listed again counts once, its first
    record."""
    seen: set[Key] = set()
    out = []
    for lineno, r in _scan_jsonl(path)[0]:
        problem = sample_record_problem(r)
        if problem is not None:
            raise LetiError(f"{path}:{lineno}: not a sample record ({problem}); {fix}")
        key = (str(r["problem_id"]), r["sample_idx"])
        if key not in seen:
            seen.add(key)
            out.append((lineno, r))
    return out


def read_sample_records(path: Path) -> dict[Key, dict]:
    """Sample records keyed by (problem_id, sample_idx), checked; the first occurrence wins."""
    return {(str(r["problem_id"]), r["sample_idx"]): r
            for _, r in scan_sample_records(path, "delete that line to sample it again")}
