"""`leti exec INPUT.jsonl -o OUTPUT.jsonl`: run programs in the sandbox, one output line per input."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from leti.cli import check_output_file
from leti.cli.tasks_cmd import add_execution_flags, execution_config
from leti.errors import LetiError, naming_errors, open_naming_errors
from leti.execution import Executor, Program
from leti.jsonl import read_json_lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exec", help="run programs from a JSONL file in the sandbox",
                       description="Input lines: {\"id\": ..., \"program\": \"...\", \"tests\": \"...\"} "
                       "(id and tests optional). Output: the input fields plus status, passed, "
                       "exception_type, feedback, duration_s, in input order (written to OUTPUT.partial, "
                       "renamed to OUTPUT once every program has run).")
    p.add_argument("input", type=Path, help="JSONL file of programs, one JSON object per line (fields above)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="JSONL file for the results, one line per input line, in input order (required)")
    add_execution_flags(p)
    p.set_defaults(func=run)


def read_programs(path: Path) -> tuple[list[dict], list[Program]]:
    """Every line is checked before anything runs: a bad line is one error naming it."""
    rows, programs = [], []
    # finite: its rows are written back out, as JSON
    for where, _, row in read_json_lines(path, what="input file", missing_hint="check the INPUT path", finite=True):
        if not isinstance(row, dict):
            raise LetiError(f"{where}: expected a JSON object with a 'program' field")
        if "program" not in row:
            raise LetiError(f"{where}: missing field 'program'")
        for key in ("program", "tests"):
            if key == "tests" and row.get(key) is None:  # tests are optional: null is no tests
                continue
            if key in row and not isinstance(row[key], str):
                raise LetiError(f"{where}: field '{key}' must be a string, got {_json_type(row[key])}")
        rows.append(row)
        programs.append(Program(program=row["program"], tests=row.get("tests") or "", id=row.get("id")))
    if not programs:
        # as `leti evaluate` refuses an empty samples file: "0 passed, 0 failed" and an empty
        # OUTPUT hid a wrong path or a failed step that was to write the input
        raise LetiError(f"{path}: no programs in the input file; expected JSON lines with a 'program' field each")
    return rows, programs


def _json_type(value: object) -> str:
    """A parsed value as JSON names it (null, not NoneType)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)  # null, true, false
    names = ((str, "a string"), ((int, float), "a number"), (list, "an array"))
    return next((name for kind, name in names if isinstance(value, kind)), "an object")


def run(args: argparse.Namespace) -> int:
    config = execution_config(args)
    check_output_file(args.output, "-o")
    # A symlinked OUTPUT gets the results where it points: renamed over the link, they replaced
    # it with a plain file and left its target stale. (realpath, not Path.resolve: it never
    # raises; a symlink loop stays the path given, and the results replace the looping link.)
    output = Path(os.path.realpath(args.output))
    check_output_file(output, "-o")  # the target's own path: a file where its folder should be
    if output.exists() and args.input.exists() and output.samefile(args.input):
        # the output is opened for writing before the first program runs: the input would be lost
        raise LetiError(f"-o {args.output}: is the input file; write the results to another file")
    # Lines go to OUTPUT.partial as programs finish and it becomes OUTPUT once all have run: an
    # interrupted run never leaves a shorter file that passes for the complete output, nor
    # destroys an earlier OUTPUT.
    partial = output.with_name(output.name + ".partial")
    if partial.exists() and args.input.exists() and partial.samefile(args.input):
        # rerunning a partial result (`leti exec out.jsonl.partial -o out.jsonl`): opening the
        # temporary file for writing would truncate the input, and the rename would remove it
        shown = partial if Path(args.output).is_symlink() else f"{args.output}.partial"  # the path as given
        raise LetiError(f"-o {args.output}: its temporary file {shown} is the input file; "
                        "pick another -o, or rename the input first")
    rows, programs = read_programs(args.input)
    output.parent.mkdir(parents=True, exist_ok=True)
    passed = 0
    with Executor(config) as ex, open_naming_errors(partial, "w") as out:
        futures = [ex.submit(p) for p in programs]
        bar = _bar(len(futures))
        # Ctrl-C leaves the `with`: the executor cancels the queued programs (cancel_queued)
        for row, fut in zip(rows, futures, strict=True):
            r = fut.result()
            passed += r.passed
            # only the writes name the file (a disk that refuses them): not the executor's errors
            with naming_errors(partial):
                out.write(json.dumps({**row, "status": r.status.value, "passed": r.passed,
                                      "exception_type": r.exception_type, "feedback": r.feedback,
                                      "duration_s": r.duration_s}) + "\n")
                out.flush()
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    os.replace(partial, output)
    print(f"{passed} passed, {len(programs) - passed} failed", file=sys.stderr)
    return 0


def _bar(total: int):
    if not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="execute", unit="prog")
