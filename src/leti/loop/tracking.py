"""Experiment trackers (`trainer.report_to`): one tracker session per leti run, opened by the
leader's loop (runner._lead) and closed when the run ends or fails. Steps are the run's
cumulative optimizer steps (metrics.jsonl's gradient_steps_total; iteration 0 at step 0), so the
curves of every iteration line up on one axis.

    RUN/logs/tensorboard/   TensorBoard event files: one per (re)start of the run
    RUN/logs/wandb/         wandb's files: one wandb run per leti run (a stable id, resumed)

A kill -9 during a training stage leaves that stage's logged steps behind, and the resumed stage
logs them again: TensorBoard opens with purge_step at the first step after the stages whose
training finished (step 0 before any did), which hides the killed attempt's later events.
wandb plots against its own metric "gradient_steps" (define_metric), not its `step=`, which must
only grow: a resumed run's re-logged steps, and an evaluation logged at a step already passed,
are kept, not dropped.

`check_trackers` refuses at run start what would fail only when the session opens or logs (a
tracker not installed, wandb without a login or with a setting it rejects).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from leti.config import config_to_dict, flatten_config
from leti.errors import LetiError, first_line
from leti.loop.rundir import RunDir, read_json

# Fields of a metrics.jsonl line that are not logged as scalars: the step itself; the held-out
# loss, which the training stage logged at the same step (eval/pretrain_heldout_loss); and the
# exception counts, keyed by class names the sampled programs choose (a tag each, without bound).
_NOT_LOGGED = ("gradient_steps_total", "pretrain_heldout_loss", "train_exception_counts")
STEP_METRIC = "gradient_steps"  # wandb's x axis for every leti metric


def check_trackers(report_to: list[str]) -> None:
    """Each tracker in trainer.report_to is installed, and wandb logged in unless its mode is
    offline or disabled, and its settings valid (checked at run start, before RunTracker starts
    wandb)."""
    import importlib.util

    for tracker, module in (("tensorboard", "tensorboard"), ("wandb", "wandb")):
        if tracker in report_to and importlib.util.find_spec(module) is None:
            raise LetiError(f"trainer.report_to includes '{tracker}' but it is not installed; `pip install {module}` or remove it")
    if "wandb" in report_to:
        _check_wandb_login()


def _wandb_error(error: Exception) -> LetiError:
    """wandb failing to start a run (no login and the like), in wandb's words, one line."""
    return LetiError(f"trainer.report_to: wandb could not start ({first_line(error)}); run `wandb login`, "
                     "set WANDB_MODE=offline, or remove wandb from trainer.report_to")


def _wandb_settings_error(error: Exception) -> LetiError | None:
    """A setting wandb's Settings rejects (WANDB_MODE=bogus: a 40-line pydantic traceback from
    wandb.init), one line naming the WANDB_* variable, or wandb's settings file, that gave it;
    None for another error, or where this wandb or pydantic reads otherwise (wandb's own words then)."""
    try:
        return _settings_refusal(error)
    except Exception:  # noqa: BLE001
        return None


def _settings_refusal(error: Exception) -> LetiError | None:
    from wandb.sdk.wandb_settings import Settings

    # pydantic's ValidationError (wandb's dependency, not leti's: known by its name and errors())
    def rejected(e: Exception) -> bool:
        return type(e).__name__ == "ValidationError" and callable(getattr(e, "errors", None)) and bool(e.errors())

    if not rejected(error):
        return None
    first = error.errors()[0]
    key, value = ".".join(str(x) for x in first.get("loc", ())), first.get("input")
    fix = "or remove wandb from trainer.report_to"
    for name, text in sorted(os.environ.items()):
        if name.startswith("WANDB_"):
            try:  # the variable alone, read as wandb reads it: the one that gives the rejected setting
                Settings(quiet=True).update_from_env_vars({name: text})
            except Exception as alone:  # noqa: BLE001
                if not rejected(alone) or alone.errors()[0].get("loc") != first.get("loc"):
                    continue
                return LetiError(f"trainer.report_to: wandb rejects {name}={text!r} ({first.get('msg')}); "
                                 f"set {name} to a value wandb accepts or unset it, {fix}")
    return LetiError(f"trainer.report_to: wandb rejects its setting {key}={value!r} ({first.get('msg')}; from "
                     f"wandb's settings files or arguments); fix it, {fix}")


def wandb_start_error(error: Exception) -> LetiError:
    """Whatever wandb.init raised, as one line."""
    return _wandb_settings_error(error) or _wandb_error(error)


def _check_wandb_login() -> None:
    """Refuse, as wandb.init would at the first training stage (after a sampling phase), an
    online wandb without credentials. Read as wandb reads them: its mode and host from its
    settings files and WANDB_* variables, then the key from this session's login, WANDB_API_KEY
    (or WANDB_IDENTITY_TOKEN_FILE), the .netrc or the settings; without logging in, prompting or
    the network (where a terminal is attached wandb.init would prompt, hours later: refused too).
    Where unsure (SageMaker's secrets, a wandb whose internals moved) it passes: wandb.init says."""
    from wandb.errors import Error as WandbError
    from wandb.errors import UsageError

    try:
        from wandb.integration.sagemaker import is_using_sagemaker
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth
        from wandb.sdk.wandb_settings import Settings

        if is_using_sagemaker():
            return
        current = getattr(wandb_setup, "_singleton", None)
        if current is not None and getattr(current, "_pid", None) == os.getpid():
            settings = current.settings  # this process's wandb already read them; wandb.init uses those
        else:
            # what wandb_setup's _load_settings reads, without creating wandb's process singleton
            # (it starts a thread, and wandb.init would then ignore later WANDB_* changes);
            # quiet: wandb.init, not the start check, says which settings files it loads
            settings = Settings(quiet=True)
            config_dir = os.getenv("WANDB_CONFIG_DIR")
            settings.settings_system = str(Path(config_dir).expanduser() / "settings" if config_dir
                                           else Path("~", ".config", "wandb", "settings").expanduser())
            settings.update_from_system_settings()
            settings.update_from_env_vars(dict(os.environ))
        if settings._offline or settings._noop:  # WANDB_MODE=offline/dryrun/disabled: no login
            return
        host = wbauth.HostUrl(settings.base_url, app_url=settings.app_url)
        if (wbauth.session_credentials(host=host) or os.getenv("WANDB_API_KEY") or os.getenv("WANDB_IDENTITY_TOKEN_FILE")
                or wbauth.read_netrc_auth(host=host) or settings.api_key):
            return
    except WandbError as e:  # a malformed key in the .netrc: wandb.init raises the same
        raise _wandb_error(e) from None
    except Exception as e:
        # an invalid WANDB_MODE (wandb.init raised pydantic's whole traceback, after a sampling
        # phase): refused now; another wandb version's internals: wandb.init says
        if (refusal := _wandb_settings_error(e)) is not None:
            raise refusal from None
        return
    raise _wandb_error(UsageError("No API key configured. Use `wandb login` to log in."))  # wandb.init's words


def flat_config(cfg: Any) -> dict[str, Any]:
    """The whole run config as dotted keys (training_text.textual_feedback, trainer.lora.r, ...)."""
    return flatten_config(config_to_dict(cfg))


def record_scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics.jsonl line under tracker names: "eval" -> eval/pass@1 (and the
    task's metrics, e.g. eval/f1), train_* -> train/* (train/pass_rate, train/status_counts/passed),
    the rest as they are (iteration, wall_s, eval_stderr/pass@1)."""
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, v in value.items():
                put(f"{name}/{key}", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)

    for key, value in record.items():
        if key not in _NOT_LOGGED:
            put("train/" + key[len("train_"):] if key.startswith("train_") else key, value)
    return out


def finished_steps(rd: RunDir) -> int:
    """The cumulative optimizer steps of the iterations whose training stage finished (a resumed
    run does not train them again, so what they logged stays): the last metrics line's
    gradient_steps_total, plus the stages trained since it (none or one, usually). Read as the loop
    reads them (iteration._steps_before); a stats file that cannot be read counts as unfinished
    (purging too much hides events, and never stops the run)."""
    total, k = 0, 1
    records = [r for r in rd.metrics() if isinstance(r.get("gradient_steps_total"), int)]
    if records:
        last = max(records, key=lambda r: r["iteration"])
        total, k = last["gradient_steps_total"], last["iteration"] + 1
    while (path := rd.stats_file(k)) is not None:
        try:
            steps = read_json(path, ("optimizer_steps",))["optimizer_steps"]
        except LetiError:
            return total
        total += steps if isinstance(steps, int) else 0
        k += 1
    return total


def wandb_run_id(rd: RunDir) -> str:
    """The wandb id of a leti run: run.json's random id, drawn when the run started, so every
    resume joins the same wandb run even after the folder moved (a path-derived id began a new
    wandb run there). Runs from before that id: one from the folder's path and creation time."""
    info = read_json(rd.root / "run.json")
    if isinstance(info.get("id"), str) and info["id"]:
        return info["id"]
    return hashlib.sha256(f"{rd.root.resolve()}\0{info.get('created', '')}".encode()).hexdigest()[:24]


class RunTracker:
    """The run's trackers, `report_to` of 'tensorboard' and 'wandb'; `log(metrics, step)`."""

    def __init__(self, rd: RunDir, cfg: Any, report_to: list[str]) -> None:
        self.rd, self.cfg, self.report_to = rd, cfg, list(report_to)
        self._tb = None
        self._wandb = None

    def __enter__(self) -> RunTracker:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close(failed=kind is not None)

    def _open(self) -> None:
        logs = self.rd.root / "logs"
        config = flat_config(self.cfg)
        if "tensorboard" in self.report_to:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams

            finished = finished_steps(self.rd)
            # Before any stage finished, step 0 goes too: stage 1 logs the base model's held-out loss
            # there again (its first point); iteration 0's line, which nothing redoes, is logged again.
            self._tb = SummaryWriter(log_dir=str(logs / "tensorboard"), purge_step=finished + 1 if finished else 0)
            # the HParams plugin takes numbers, strings and booleans: lists and None as their text
            values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}
            for summary in hparams(values, {}):
                self._tb.file_writer.add_summary(summary)
            if not finished:
                for record in self.rd.metrics():
                    if record.get("gradient_steps_total") == 0:
                        self.log_record(record)
            self._tb.flush()
        if "wandb" in self.report_to:
            self._wandb = self._start_wandb(logs, config)

    def _start_wandb(self, logs: Path, config: dict[str, Any]) -> Any:
        import wandb

        logs.mkdir(parents=True, exist_ok=True)
        try:
            run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "leti", id=wandb_run_id(self.rd),
                             resume="allow", name=self.rd.root.name, config=config, dir=str(logs))
        except Exception as e:  # wandb's words, one line (the start check refused what it could foresee)
            raise wandb_start_error(e) from None
        # Offline, wandb cannot resume: each (re)start writes its own logs/wandb/offline-run-*-<id>
        # directory, with the same id, which `wandb sync` uploads into one run.
        try:
            run.define_metric(STEP_METRIC)
            run.define_metric("*", step_metric=STEP_METRIC)
        except Exception as e:
            raise wandb_start_error(e) from None
        return run

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not metrics:
            return
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(name, value, global_step=step)
            self._tb.flush()  # a kill -9 loses no more than the stage that it cuts short re-logs
        if self._wandb is not None:
            try:
                self._wandb.log({**metrics, STEP_METRIC: step})
            except Exception as e:
                raise LetiError(f"trainer.report_to: wandb failed to log ({first_line(e)}); remove wandb from "
                                "trainer.report_to and resume to go on without it") from None

    def log_record(self, record: dict) -> None:
        """A metrics.jsonl line, at its gradient_steps_total (a line without one, hand-edited, is
        not logged: the loop itself tolerates it)."""
        step = record.get("gradient_steps_total")
        if isinstance(step, int) and not isinstance(step, bool):
            self.log(record_scalars(record), step)

    def close(self, failed: bool = False) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            run, self._wandb = self._wandb, None
            try:
                run.finish(exit_code=1 if failed else 0)
            except Exception as e:
                if not failed:  # a failed run's own error says more
                    raise LetiError(f"trainer.report_to: wandb failed to finish its run ({first_line(e)}); the "
                                    f"run itself finished, its files are in {self.rd.root / 'logs' / 'wandb'}") from None
