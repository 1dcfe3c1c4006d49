"""`leti` command line: thin subcommands over the library. Each subcommand lives in its own module
with `register(subparsers)`; adding one is a new module and one line in `_COMMANDS`."""

from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from leti import __version__
from leti.errors import LetiError, ReportedByLeader

# Module names under leti.cli; each defines register(subparsers) and sets a `func` default.
_COMMANDS = ["exec_cmd", "tasks_cmd", "evaluate_cmd", "run_cmd", "sft_cmd", "report_cmd", "demo_cmd", "config_cmd", "presets_cmd"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leti", description="LeTI: learn from textual interactions.")
    parser.add_argument("--version", action="version", version=f"leti {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"leti.cli.{name}").register(sub)
    return parser


def _file_in_the_way(path: Path) -> Path | None:
    """The first of `path`'s parents that exists but is not a directory (None: all fine)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_dir(path: str | Path, flag: str) -> None:
    """`flag PATH` must be (or become) a directory: a file there is one error line, before any work."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise LetiError(f"{flag} {p}: is a file, not a directory; pass a directory (new or to resume)")
    blocker = _file_in_the_way(p)
    if blocker is not None:
        raise LetiError(f"{flag} {p}: {blocker} is a file, not a directory; pass another path")


def check_output_file(path: str | Path, flag: str) -> None:
    """`flag PATH` must be (or become) a regular file: a directory or a special file there (a
    device, a FIFO, also behind a symlink) is one error line, before any work."""
    p = Path(path)
    if p.is_dir():
        raise LetiError(f"{flag} {p}: is a directory; pass a file path, e.g. {p / 'results.jsonl'}")
    if p.exists() and not p.is_file():
        # the output is written to a new file and renamed over PATH: over /dev/stdout (as root)
        # that replaced the device node itself, and the results never reached the stream
        kind = ("FIFO" if p.is_fifo() else "device" if p.is_char_device() or p.is_block_device()
                else "socket" if p.is_socket() else "special file")
        raise LetiError(f"{flag} {p}: is a {kind}, not a regular file; the results are written to a new file "
                        f"and renamed over it, so pass a file path")
    blocker = _file_in_the_way(p)
    if blocker is not None:
        raise LetiError(f"{flag} {p}: {blocker} is a file, not a directory; pass another path")


def os_error_line(e: OSError) -> str:
    """`<filename>: <strerror>` (both names for a rename), on one line."""
    reason = e.strerror or str(e) or type(e).__name__
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    text = f"{' -> '.join(names)}: {reason}" if names else reason
    return text.replace("\r", " ").replace("\n", " ")


_RESUMABLE = {"run", "sft", "demo", "evaluate"}  # `leti exec` starts OUT.partial afresh

# The fix for a write the OS refused, by errno: the error names the file, not what to do.
_OS_FIXES = {
    errno.ENOSPC: "free space on that disk (or point the output, LETI_CACHE_DIR or TMPDIR elsewhere, whichever is on it)",
    errno.EDQUOT: "free space in your quota on that disk (or point the output, LETI_CACHE_DIR or TMPDIR elsewhere)",
    errno.EFBIG: "raise the file size limit (ulimit -f) or write to another disk",
    errno.EROFS: "make it writable",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
}


def os_error_fix(e: OSError, command: str | None) -> str:
    """`; <fix>[, then run the same command again ...]` for an OSError whose errno has one, else ''."""
    fix = _OS_FIXES.get(e.errno) if e.errno is not None else None
    if fix is None:
        return ""
    if command in _RESUMABLE:
        fix += ", then run the same command again: finished work is kept"
    return f"; {fix}"


class _HubRetryFilter(logging.Filter):
    """huggingface_hub logs each retry against an unreachable hub, two lines per try, five tries,
    before the request fails; that failure is then leti's one error line (unknown model, corpus
    not loadable), so the retry lines are only noise in front of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return " thrown while requesting " not in msg and not msg.startswith("Retrying in ")


def _quiet_hub_retries() -> None:
    hub_http = logging.getLogger("huggingface_hub.utils._http")
    if not any(isinstance(f, _HubRetryFilter) for f in hub_http.filters):
        hub_http.addFilter(_HubRetryFilter())


def _stdout_closed() -> bool:
    """Whether our stdout is a pipe whose reader has gone (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLERR)
        return bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured output)
        return False


class Terminated(KeyboardInterrupt):
    """SIGTERM (SLURM preemption, `kill`) or SIGHUP (the terminal went away), raised in the main
    thread like Ctrl-C's KeyboardInterrupt, so that the same cleanup runs: the executor kills
    its sandboxed workers (a SIGTERM's default action left their cgroups behind, and without a
    sandbox their programs running), the run directory's lock is released."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextmanager
def _signals_as_exceptions() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated while a command runs; restored afterwards (main() is
    also called in-process, by tests). A signal that is ignored (nohup) stays ignored, and only
    the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            saved[signum] = signal.signal(signum, _raise_terminated)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _close_open_bars() -> None:
    """Bars that the error left open (a stage that does not close its bar on the way out) end
    their line first, so that leti's own message starts on a fresh one, not after a bar."""
    tqdm = sys.modules.get("tqdm")  # no bar without tqdm imported: nothing to import for it
    if tqdm is None:
        return
    for bar in list(tqdm.tqdm._instances):
        if not hasattr(bar, "last_print_t") and getattr(bar, "sp", None) is not None:
            # Interrupted in tqdm's __init__ between drawing the bar and starting its clock (the
            # moment a Ctrl-C at a freshly drawn bar lands): its close() takes it for never drawn
            # and leaves the line open. The clock, started now, lets close() end the line.
            bar.last_print_t = bar.start_t = bar._time()
        try:
            bar.close()
        except (OSError, ValueError):  # SIGHUP: the terminal may be gone
            pass


# The commands whose ranks work together under torchrun / accelerate launch (leti.loop.distributed).
_DISTRIBUTED = {"run", "sft"}


def _launched_processes() -> int:
    """How many processes the launcher says this one is among (1 without a launcher, or with a
    WORLD_SIZE that is no number, which `leti run` refuses in leti.loop.distributed.launch_env)."""
    world = os.environ.get("WORLD_SIZE", "1")
    return int(world) if world.isdigit() else 1


def _one_process_unless_distributed(command: str) -> None:
    """Any other command started by a multi-process launcher ran once per process on the same
    files (two `leti evaluate` on one --out: the second was refused as "another leti process")."""
    world = _launched_processes()
    if command in _DISTRIBUTED or world < 2:
        return
    if os.environ.get("RANK", "0") != "0":
        raise ReportedByLeader("")  # rank 0 says it
    raise LetiError(f"`leti {command}` runs as one process, and this launch started {world} (WORLD_SIZE={world}); "
                    "run it without torchrun / accelerate launch (only `leti run` and `leti sft` use several)")


# How gloo and NCCL report that another process of the launch went away mid-collective.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted",
              "remote process exited or there was a network error")


def _lost_peer(e: RuntimeError) -> str | None:
    """The line for a collective that failed because another rank stopped (its own output says
    why), or None. On another node the launcher does not stop this rank first, and the backend's
    error came out as a traceback through leti's code."""
    if _launched_processes() < 2:
        return None
    text = str(e)
    if type(e).__name__ != "DistBackendError" and not any(s in text for s in _PEER_GONE):
        return None
    reason = next((s for s in _PEER_GONE if s in text), type(e).__name__)
    return (f"another process of this launch stopped during a collective step ({reason}); its own output says why. "
            "Run the same command again to resume")


def _stderr_line(text: str) -> None:
    try:
        print(text, file=sys.stderr)
    except OSError:  # SIGHUP: the terminal may be gone
        pass


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line. Arguments the command does not take are reported by the command's
    own parser (its usage, not `leti`'s), with the closest of its flags for a misspelled one."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = parser  # the innermost command given (`leti tasks validate`, not `leti tasks`)
        while action := next((a for a in sub._actions if isinstance(a, argparse._SubParsersAction)), None):
            sub = action.choices[getattr(args, action.dest)]
        names = {o.removeprefix("--"): o for a in sub._actions for o in a.option_strings if o.startswith("--")}
        close = [names[m] for x in extra if x.startswith("--")
                 for m in difflib.get_close_matches(x.split("=")[0].removeprefix("--"), list(names), 1, cutoff=0.75)]
        sub.error(f"unrecognized arguments: {' '.join(extra)}" + (f" (did you mean {close[0]}?)" if close else ""))
    return args


def _with_opt_out(e: LetiError, args: argparse.Namespace) -> str:
    """A missing sandbox's message with the way to run without one that this command takes."""
    from leti.execution.sandbox import SandboxUnavailable

    if not isinstance(e, SandboxUnavailable):
        return str(e)
    if args.command in ("run", "sft"):
        return e.advise("pass --set execution.sandbox=none")
    if args.command == "demo":  # it takes no --set: its config says it
        if args.config is not None:
            return e.advise(f"set run.execution.sandbox: none in {args.config}")
        from leti.demo.config import preset_path

        return e.advise(f"pass --config with a copy of {preset_path(args.quick)} that sets run.execution.sandbox: none")
    return e.advise("pass --unsafe-no-sandbox")  # exec, evaluate, tasks validate


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _quiet_hub_retries()
    try:
        _one_process_unless_distributed(args.command)
        with _signals_as_exceptions():
            return int(args.func(args) or 0)
    except LetiError as e:
        _close_open_bars()
        if not isinstance(e, ReportedByLeader):
            text = _with_opt_out(e, args)
            # one line even when a message quotes a user value with a line break in it (a path)
            print(f"leti: error: {text}".replace("\r", " ").replace("\n", " "), file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a pipe of leti's own (a worker's): a bug, with its traceback
        # the reader of our output went away (`leti tasks list | head -1`): stop quietly, as a
        # command killed by SIGPIPE does, and keep Python's exit-time flush from failing again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as e:
        # A path the user gave that the OS refuses (a file where a folder is needed, a folder
        # where a file is, no permission, disk full): one line, not a traceback. Other
        # exceptions are bugs and keep their traceback.
        _close_open_bars()
        print(f"leti: error: {os_error_line(e)}{os_error_fix(e, args.command)}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        lost = _lost_peer(e)
        if lost is None:
            raise  # a bug: its traceback
        _close_open_bars()
        print(f"leti: error: rank {os.environ.get('RANK', '0')}: {lost}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # These commands keep what they finished (run dir / --out) and skip it when rerun.
        hint = "; run the same command again to resume" if args.command in _RESUMABLE else ""
        signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        _close_open_bars()
        _stderr_line(f"leti: {what}{hint}")
        return 128 + signum  # as a shell reports a command killed by that signal: 130, 143, 129
