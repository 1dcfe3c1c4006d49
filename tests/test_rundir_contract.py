"""The run directory's readers and writers (leti.loop.rundir) and the report's reading of it
(leti.report.data), each held to what its docstring promises, on real files: what a kill, a
power loss or a hand edit leaves is written by hand and read back (no model needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from leti.config import RunConfig, dump_config
from leti.errors import LetiError
from leti.execution.records import ExecutionResult, Frame, Status
from leti.loop import rundir
from leti.loop.rundir import (
    RunDir,
    append_jsonl,
    read_json,
    read_jsonl,
    read_sample_records,
    repair_jsonl,
    replace_dir_atomic,
    sample_record_problem,
    scan_sample_records,
    write_json_atomic,
    write_text_atomic,
)
from leti.report.data import (
    IterationPoint,
    RunHistory,
    eval_counts,
    failure_counts,
    final_difference,
    load_run,
    pass_k,
    read_summary,
    shared_metric,
    steps_to_reach,
)

TASK = "synthetic:seed=0,train=4,test=4"


def _sample(pid: str = "p1", idx: int = 0, passed: bool = False, prompt: str = "def f():\n", **fields) -> dict:
    """A sample record as the loop writes it (its ExecutionResult's fields included)."""
    if passed:
        result = ExecutionResult(id=f"{pid}/{idx}", status=Status.PASSED)
    else:
        result = ExecutionResult(id=f"{pid}/{idx}", status=Status.FAILED, exception_type="AssertionError",
                                 message="assert f() == 1", frames=(Frame(2, "<module>", "assert f() == 1"),))
    return {"problem_id": pid, "sample_idx": idx, "prompt": prompt, "completion": "    return 0\n",
            **result.to_dict(), **fields}


def _jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- locking and has_output -----------------------------------------------------------------------

def test_a_second_lock_on_a_held_run_directory_fails_fast(tmp_path):
    with RunDir(tmp_path / "run").locked():
        with pytest.raises(LetiError, match="another leti process is working on this run directory"):
            with RunDir(tmp_path / "run").locked():
                pass
    with RunDir(tmp_path / "run").locked():  # released with the first
        pass


def test_has_output_counts_only_files_with_something_in_them(tmp_path):
    rd = RunDir(tmp_path / "run")
    assert not rd.has_output()
    (rd.iteration(0) / "checkpoint").mkdir(parents=True)
    rd.samples(0).write_text("")  # opened by a run killed before its first sample
    assert not rd.has_output()
    rd.samples(0).write_text(json.dumps(_sample()) + "\n")
    assert rd.has_output()


# --- metrics.jsonl --------------------------------------------------------------------------------

def test_metrics_cut_short_only_for_a_partial_last_line(tmp_path):
    rd = RunDir(tmp_path)
    assert not rd.metrics_cut_short()  # no metrics.jsonl yet
    rd.metrics_path.write_text('{"iteration": 0}\n\n{"iteration": 1}\n')  # a blank line is not a cut
    assert not rd.metrics_cut_short()
    assert read_jsonl(rd.metrics_path) == [{"iteration": 0}, {"iteration": 1}]
    rd.metrics_path.write_text('{"iteration": 0}\n{"itera')
    assert rd.metrics_cut_short() and rd.finished_iterations() == {0}


@pytest.mark.parametrize("line, message", [
    ('{"iteration": true}', "not a metrics record (no integer 'iteration')"),
    ('{"iteration": 1.0}', "not a metrics record (no integer 'iteration')"),
    ('{"iteration": 1, "eval": {"pass@1": true}}', "'eval' must be an object of numbers or null, got {\"pass@1\": true}"),
    ('{"iteration": 1, "eval": [0.5]}', "'eval' must be an object of numbers or null"),
    ('{"iteration": 0}', "iteration 0 again (also on line 1); delete the repeated line"),
    ('{"iteration": -1}', "iteration -1 is not an iteration number (0, 1, ...); delete that line"),
])
def test_a_metrics_line_of_the_wrong_shape_is_named(tmp_path, line, message):
    rd = RunDir(tmp_path)
    rd.metrics_path.write_text('{"iteration": 0}\n' + line + "\n")
    with pytest.raises(LetiError) as e:
        rd.finished_iterations()
    assert str(e.value).startswith(f"{rd.metrics_path}:2: {message}")


def test_iteration_0_and_evals_of_null_values_are_metrics_lines(tmp_path):
    rd = RunDir(tmp_path)
    rd.metrics_path.write_text('{"iteration": 0, "eval": {"pass@1": 0.5, "pass@10": null}}\n{"iteration": 1, "eval": null}\n')
    assert rd.finished_iterations() == {0, 1}


def test_append_metrics_writes_an_iteration_once_and_replace_metrics_rewrites_only_its_line(tmp_path):
    rd = RunDir(tmp_path)
    for k in (0, 1, 2):
        rd.append_metrics({"iteration": k, "wall_s": k})
    rd.append_metrics({"iteration": 1, "wall_s": 99})  # a resume writing a finished iteration again
    assert rd.metrics() == [{"iteration": k, "wall_s": k} for k in (0, 1, 2)]
    rd.replace_metrics({"iteration": 0, "wall_s": 0, "pretrain_heldout_loss": 2.5})
    assert rd.metrics() == [{"iteration": 0, "wall_s": 0, "pretrain_heldout_loss": 2.5},
                            {"iteration": 1, "wall_s": 1}, {"iteration": 2, "wall_s": 2}]


# --- atomic writes --------------------------------------------------------------------------------

def test_a_write_that_fails_midway_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "eval.json"
    write_json_atomic(path, {"pass@k": {"pass@1": 0.5}})
    before = path.read_text()
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "x" * 100_000 + "\ud800")  # fails after the first buffer went out
    assert path.read_text() == before
    write_json_atomic(path, {"pass@k": {"pass@1": 0.75}})
    assert read_json(path, ("pass@k",)) == {"pass@k": {"pass@1": 0.75}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]  # no temp file left beside it


@pytest.fixture
def disk_events(monkeypatch):
    """[("fsync", path) | ("replace", src, dst)] in the order they reach the OS: os.fsync and
    os.replace still run, each call is noted (which file an fsync'd descriptor is, from /proc)."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(rundir.os, "fsync", fsync)
    monkeypatch.setattr(rundir.os, "replace", replace)
    return events


def test_an_atomic_write_reaches_the_disk_before_its_rename_and_the_rename_after(tmp_path, disk_events):
    path = tmp_path / "d" / "train_stats.json"
    write_json_atomic(path, {"optimizer_steps": 3})
    tmp = str(path.with_name(path.name + ".tmp"))
    assert disk_events == [("fsync", tmp), ("replace", tmp, str(path)), ("fsync", str(path.parent))]


def test_a_checkpoint_directory_reaches_the_disk_before_its_rename_and_replaces_an_old_one(tmp_path, disk_events):
    final = tmp_path / "iterations" / "1" / "checkpoint"
    final.mkdir(parents=True)
    (final / "stale.bin").write_text("from a killed earlier try")
    tmp = tmp_path / "iterations" / "1" / "checkpoint.tmp"
    (tmp / "sub").mkdir(parents=True)
    (tmp / "model.bin").write_text("weights")
    (tmp / "sub" / "tokenizer.json").write_text("{}")
    replace_dir_atomic(tmp, final)
    assert sorted(str(p.relative_to(final)) for p in final.rglob("*")) == ["model.bin", "sub", "sub/tokenizer.json"]
    assert not tmp.exists()
    rename = disk_events.index(("replace", str(tmp), str(final)))
    before = {e[1] for e in disk_events[:rename] if e[0] == "fsync"}
    assert {str(tmp / "model.bin"), str(tmp / "sub" / "tokenizer.json"), str(tmp)} <= before
    assert ("fsync", str(final.parent)) in disk_events[rename:]


def test_appended_lines_reach_the_disk(tmp_path, disk_events):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, [{"iteration": 0}])
    assert disk_events == [("fsync", str(path))]


# --- read_json ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "reason"), [
    ('{"mode": "le', "Unterminated string starting at line 1 column 10"),  # was "... starting at)"
    ('{\n  "wall_s": 1,\n  "x": "a\tb"}', "Invalid control character at line 3 column 10"),
    ("", "Expecting value at line 1 column 1"),
])
@pytest.mark.parametrize("name", ["eval.json", "run.json"])
def test_read_json_says_where_the_json_broke_and_the_fix_for_that_file(tmp_path, text, reason, name):
    """JSON's reason ended in a bare "at" (the position was left out); run.json is no stage, so
    "delete it to redo that stage" named the wrong consequence."""
    path = tmp_path / name
    path.write_text(text)
    fix = ("restore it, or delete it: the run then resumes without checking its mode, task problems and process "
           "count against the ones it started with") if name == "run.json" else "delete it to redo that stage"
    with pytest.raises(LetiError) as info:
        read_json(path, ("mode",))
    assert str(info.value) == f"{path}: not valid JSON ({reason}); {fix}"


def test_read_json_names_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "eval.json"
    path.write_bytes(b'{"pass@k": "\xff"}')
    with pytest.raises(LetiError, match=r"eval\.json: not valid JSON \(not UTF-8\); delete it to redo that stage"):
        read_json(path, ("pass@k",))


@pytest.mark.parametrize("text, message", [
    ('"wall_s"', "not a leti record (no 'wall_s')"),  # a JSON string holding the key's name
    ('{"n": 1}', "not a leti record (no 'wall_s')"),  # the first required key is named
    ('{"wall_s": true, "mode": "leti"}', "'wall_s' must be a number, got true"),
    ('{"wall_s": 1.5, "mode": 3}', "'mode' must be a string, got 3"),
])
def test_read_json_names_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "record.json"
    path.write_text(text)
    with pytest.raises(LetiError) as e:
        read_json(path, ("wall_s", "mode"), fix="FIX")
    assert str(e.value) == f"{path}: {message}; FIX"


@pytest.mark.parametrize("record, ok", [
    ({"optimizer_steps": 0, "loss_mean": None, "wall_s": 0.5}, True),  # an iteration with nothing to train on
    ({"optimizer_steps": 12, "loss_mean": 1.25, "wall_s": 3}, True),
    ({"optimizer_steps": -1, "loss_mean": 1.0, "wall_s": 1.0}, False),
    ({"optimizer_steps": True, "loss_mean": 1.0, "wall_s": 1.0}, False),
    ({"optimizer_steps": 1, "loss_mean": "nan", "wall_s": 1.0}, False),
])
def test_read_json_checks_train_stats_values(tmp_path, record, ok):
    path = tmp_path / "train_stats.json"
    write_json_atomic(path, record)
    if ok:
        assert read_json(path, ("optimizer_steps", "loss_mean", "wall_s")) == record
    else:
        with pytest.raises(LetiError, match="must be"):
            read_json(path, ("optimizer_steps", "loss_mean", "wall_s"))


def test_read_json_wants_every_pass_at_k_a_number(tmp_path):
    path = tmp_path / "eval.json"
    write_json_atomic(path, {"pass@k": {"pass@1": 0.5, "pass@10": "x"}})
    with pytest.raises(LetiError, match="'pass@k' must be an object of numbers"):
        read_json(path, ("pass@k",))


# --- jsonl: scanning, repair, append --------------------------------------------------------------

def test_a_broken_line_before_the_last_is_an_error_naming_it(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(LetiError, match=rf"^{path}:3: not valid JSON; delete that line"):
        read_jsonl(path)


def test_a_last_line_cut_inside_a_multibyte_character_is_a_partial_line(tmp_path):
    """A kill can stop a write between the bytes of one UTF-8 character."""
    path = tmp_path / "samples.jsonl"
    whole = json.dumps({"completion": "é"}, ensure_ascii=False).encode()
    path.write_bytes(b'{"n": 1}\n' + whole[: whole.index("é".encode()) + 1])
    assert read_jsonl(path) == [{"n": 1}]
    append_jsonl(path, [{"n": 2}])
    assert path.read_text() == '{"n": 1}\n{"n": 2}\n'


@pytest.mark.parametrize("before", [
    '{"n": 1}\n{"n": 2',  # killed inside the second record
    '{"n": 1}\n{"n": 2}',  # killed between a record and its newline
    '{"n": 1}\n\n{"n": 2}\n',  # blank lines are kept and skipped
    "",
])
def test_append_after_a_kill_leaves_every_record_on_its_own_line(tmp_path, before):
    path = tmp_path / "samples.jsonl"
    path.write_text(before)
    append_jsonl(path, [{"n": 3}, {"n": 4}])
    kept = [json.loads(line) for line in before.splitlines(keepends=True) if line.endswith(("\n", "}"))
            and line.strip() and line.strip().endswith("}")]
    assert read_jsonl(path) == [*kept, {"n": 3}, {"n": 4}]
    text = path.read_text()
    assert text.endswith('{"n": 3}\n{"n": 4}\n') and "\n\n\n" not in text and not text.startswith("\n")
    assert text.count("\n\n") == before.count("\n\n")


def test_repair_of_a_missing_file_creates_nothing(tmp_path):
    repair_jsonl(tmp_path / "samples.jsonl")
    assert not (tmp_path / "samples.jsonl").exists()


# --- sample records -------------------------------------------------------------------------------

@pytest.mark.parametrize("edit, problem", [
    (lambda r: r.pop("problem_id"), "needs problem_id and sample_idx"),
    (lambda r: r.update(sample_idx=True), "needs problem_id and sample_idx"),
    (lambda r: r.update(sample_idx="0"), "needs problem_id and sample_idx"),
    (lambda r: r.update(passed=0), "'passed' is 0"),
    (lambda r: r.update(exception_type=["AssertionError"]), "'exception_type' is [\"AssertionError\"]"),
    (lambda r: r.update(cut_off=7), "'cut_off' is 7"),  # the report and the stop hint quote it
    (lambda r: r.update(cut_off=None), "'cut_off' is null"),  # leti leaves the key out instead
    (lambda r: r.pop("completion"), "bad or missing completion"),
    (lambda r: r.pop("passed"), "bad or missing passed"),
    (lambda r: r.update(completion=None), "bad or missing completion"),
    (lambda r: r.update(frames=[{"line": "x"}]), "bad frames"),
    (lambda r: r.update(frames=5), "bad frames"),
    # a run of identical frames is stored once with "repeat"; a hand-edited count must not blow up
    (lambda r: r.update(frames=[{"lineno": 2, "name": "f", "line": "f()", "repeat": 10**12}]), "bad frames"),
    (lambda r: r.update(frames=[{"lineno": 2, "name": "f", "line": "f()", "repeat": True}]), "bad frames"),
])
def test_what_is_not_a_sample_record_is_said(edit, problem):
    r = _sample()
    assert sample_record_problem(r) is None
    edit(r)
    assert sample_record_problem(r) == problem


def test_a_sample_record_without_its_optional_fields_is_one():
    r = _sample(passed=True)
    for name in ("exception_type", "frames", "message", "stdout"):
        r.pop(name)
    assert sample_record_problem(r) is None


def test_a_repeated_key_counts_once_its_first_record_as_read_and_as_scanned(tmp_path):
    path = _jsonl(tmp_path / "samples.jsonl", [_sample("7", 0, completion="first"), _sample("p2", 0),
                                               {**_sample("7", 0, completion="second"), "problem_id": 7}])
    assert [(n, r["completion"]) for n, r in scan_sample_records(path, "FIX")] == [(1, "first"), (2, "    return 0\n")]
    records = read_sample_records(path)
    assert sorted(records) == [("7", 0), ("p2", 0)] and records[("7", 0)]["completion"] == "first"


def test_a_bad_sample_line_is_named_with_the_callers_fix(tmp_path):
    path = _jsonl(tmp_path / "samples.jsonl", [_sample(), {**_sample(idx=1), "status": "ok"}])
    with pytest.raises(LetiError) as e:
        scan_sample_records(path, "FIX")
    assert str(e.value) == f"{path}:2: not a sample record ('status' is \"ok\"); FIX"


# --- the report's reading of a run ----------------------------------------------------------------

def _run(root: Path, metrics: list[dict], **training_text) -> RunDir:
    """A run directory with config.yaml (training_text fields overridden) and metrics.jsonl."""
    from dataclasses import replace

    cfg = RunConfig(model="unused", task=TASK)
    cfg = replace(cfg, training_text=replace(cfg.training_text, **training_text))
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(dump_config(cfg))
    _jsonl(root / "metrics.jsonl", metrics)
    return RunDir(root)


def _history(points: list[IterationPoint], name: str = "r") -> RunHistory:
    return RunHistory(name=name, root=Path(name), points=points)


def _point(k: int, steps: int = 0, **metrics) -> IterationPoint:
    return IterationPoint(iteration=k, gradient_steps=steps, train_pass_rate=None,
                          eval_pass_at_1=metrics.get("pass@1"), eval_metrics=metrics)


def test_pass_k_is_a_k_of_one_or_more_of_a_pass_metric():
    assert [pass_k(n) for n in ("pass@1", "pass@10", "pass@0", "recall@1", "pass@", "f1")] == [1, 10, None, None, None, None]


def test_load_run_orders_the_iterations_and_reads_what_each_line_says(tmp_path):
    rd = _run(tmp_path / "r", [
        {"iteration": 1, "gradient_steps_total": 4, "train_pass_rate": 0.25, "eval": {"pass@1": 1, "pass@5": None}},
        {"iteration": 0, "gradient_steps_total": 0, "train_pass_rate": None, "eval": {"pass@1": None}},
    ])
    h = load_run(rd.root)
    assert [(p.iteration, p.gradient_steps) for p in h.points] == [(0, 0), (1, 4)] and not h.metrics_cut_short
    assert h.points[1].eval_metrics == {"pass@1": 1.0} and h.points[1].eval_pass_at_1 == 1.0
    assert h.points[0].eval_pass_at_1 is None and h.points[0].eval_metrics == {}
    assert h.final_point.iteration == 1 and h.baseline_point.iteration == 0 and h.baseline_score is None
    with open(rd.metrics_path, "a") as f:
        f.write('{"iteration": 2, "gradient_st')  # killed while writing iteration 2's line
    h = load_run(rd.root)
    assert h.metrics_cut_short and [p.iteration for p in h.points] == [0, 1]


def test_a_run_whose_iteration_0_line_is_gone_has_no_baseline(tmp_path):
    rd = _run(tmp_path / "r", [{"iteration": 1, "gradient_steps_total": 4, "eval": {"pass@1": 0.5}}])
    h = load_run(rd.root)
    assert h.baseline_point is None and h.baseline_score is None and h.final_score == 0.5


def test_sample_files_deleted_after_the_run_fall_back_to_the_metrics_line(tmp_path):
    rd = _run(tmp_path / "r", [
        {"iteration": 0, "eval": None},
        {"iteration": 1, "gradient_steps_total": 3, "train_samples": 6, "train_pass_rate": 0.5,
         "train_exception_counts": {"AssertionError": 2, "NameError": 1}, "eval": None},
    ])
    p = load_run(rd.root).points[1]
    assert (p.train_samples, p.train_failures) == (6, {"AssertionError": 2, "NameError": 1})
    # the files win when they hold the samples the iteration finished with
    _jsonl(rd.samples(1), [_sample("p1", i, passed=i >= 4) for i in range(6)])
    p = load_run(rd.root).points[1]
    assert (p.train_samples, p.train_failures) == (6, {"AssertionError": 4})
    # a file cut since (2 of its 6 records left) does not
    _jsonl(rd.samples(1), [_sample("p1", 0), _sample("p1", 1, passed=True)])
    history = load_run(rd.root)
    assert (history.points[1].train_samples, history.points[1].train_failures) == (6, {"AssertionError": 2, "NameError": 1})
    assert history.samples_not_as_finished == [rd.samples(1)]


def test_eval_counts_come_from_eval_json_else_from_the_samples(tmp_path):
    rd = _run(tmp_path / "r", [{"iteration": 0, "eval": {"pass@1": 0.5}}])
    _jsonl(rd.eval_samples(0), [_sample("a", 0, passed=True), _sample("a", 1), _sample("b", 0)])
    assert load_run(rd.root).points[0].eval_counts == {"a": (2, 1), "b": (1, 0)}
    write_json_atomic(rd.eval(0), {"pass@k": {"pass@1": 0.5}, "per_problem": {"a": [4, 3], "b": [4, 0]}})
    rd.eval_samples(0).unlink()
    assert load_run(rd.root).points[0].eval_counts == {"a": (4, 3), "b": (4, 0)}
    assert eval_counts(None, [_sample("a", 0, passed=False), _sample("a", 1, passed=True)]) == {"a": (2, 1)}


def test_a_standard_error_not_stored_is_rebuilt_from_the_counts(tmp_path):
    from math import sqrt
    from statistics import stdev

    rd = _run(tmp_path / "r", [{"iteration": 0, "eval": {"pass@1": 0.25}}])  # written before stderrs were kept
    _jsonl(rd.eval_samples(0), [_sample("a", 0, passed=True), _sample("a", 1), _sample("b", 0)])
    assert load_run(rd.root).points[0].eval_stderr == {"pass@1": pytest.approx(stdev([0.5, 0.0]) / sqrt(2))}


def test_a_stored_standard_error_is_read_from_eval_json_when_the_metrics_line_lacks_it(tmp_path):
    rd = _run(tmp_path / "r", [{"iteration": 0, "eval": {"pass@1": 0.5}}])
    write_json_atomic(rd.eval(0), {"pass@k": {"pass@1": 0.5}, "pass@k_stderr": {"pass@1": 0.125},
                                   "per_problem": {"a": [1, 1], "b": [1, 0]}})
    assert load_run(rd.root).points[0].eval_stderr == {"pass@1": 0.125}
    write_json_atomic(rd.eval(0), {"pass@k": {"pass@1": 0.5}, "pass@k_stderr": {"pass@1": None},
                                   "per_problem": {"a": [1, 1]}})  # one problem: no standard error
    assert load_run(rd.root).points[0].eval_stderr == {"pass@1": None}


def test_failure_counts_are_most_common_first():
    records = [_sample(idx=0), {**_sample(idx=1), "exception_type": "NameError"},
               {**_sample(idx=2), "exception_type": "NameError"}, _sample(idx=3, passed=True)]
    assert list(failure_counts(records).items()) == [("NameError", 2), ("AssertionError", 1)]


def test_the_example_text_is_of_a_failing_sample_as_trained_on(tmp_path):
    rd = _run(tmp_path / "r", [{"iteration": 0, "eval": None}, {"iteration": 1, "eval": None}], append_eos=True)
    _jsonl(rd.samples(1), [_sample("p1", 0, passed=True, prompt="<|good|>def passing():\n"),
                           _sample("p1", 1, prompt="<|good|>def failing():\n")])
    text = load_run(rd.root).example_failure
    assert "def failing():\n" in text and "passing" not in text and "<|good|>" not in text
    assert text.endswith("<|endoftext|>")
    # a tokenizer with another end token (Llama's </s>) saved with a checkpoint: that one
    rd.checkpoint(1).mkdir(parents=True)
    (rd.checkpoint(1) / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}))
    assert load_run(rd.root).example_failure.endswith("</s>")
    rd.config_path.write_text("model: [\n")  # damaged: how the run built its texts is not known
    assert load_run(rd.root).example_failure is None


def test_a_run_that_trains_on_passing_samples_only_has_no_example_failure(tmp_path):
    rd = _run(tmp_path / "r", [{"iteration": 0, "eval": None}, {"iteration": 1, "eval": None}], keep_failures=False)
    _jsonl(rd.samples(1), [_sample("p1", 0), _sample("p1", 1, passed=True)])
    assert load_run(rd.root).example_failure is None


def test_the_example_text_has_no_end_token_unless_the_run_appended_one(tmp_path):
    rd = _run(tmp_path / "r", [{"iteration": 0, "eval": None}, {"iteration": 1, "eval": None}])
    _jsonl(rd.samples(1), [_sample("p1", 0)])
    assert "<|endoftext|>" not in load_run(rd.root).example_failure


@pytest.mark.parametrize("field, value, message", [
    ("gradient_steps_total", -1, "'gradient_steps_total' must be a count >= 0 or null, got -1"),
    ("gradient_steps_total", True, "'gradient_steps_total' must be a count >= 0 or null, got true"),
    ("train_samples", "6", "'train_samples' must be a count >= 0 or null, got \"6\""),
    ("train_exception_counts", {"NameError": "2"}, "'train_exception_counts' must be an object of counts or null"),
    ("train_exception_counts", [1], "'train_exception_counts' must be an object of counts or null"),
])
def test_a_metrics_field_the_report_reads_is_checked(tmp_path, field, value, message):
    rd = _run(tmp_path / "r", [{"iteration": 0, "eval": None, field: value}])
    with pytest.raises(LetiError) as e:
        load_run(rd.root)
    assert str(e.value).startswith(f"{rd.metrics_path}:1: {message}")


@pytest.mark.parametrize("second, message", [
    ({"iteration": 0, "eval": None}, "iteration 0 again (also on line 1)"),
    ([0], "not a metrics record (no integer 'iteration')"),
])
def test_the_report_reads_metrics_lines_as_the_loop_checks_them(tmp_path, second, message):
    rd = _run(tmp_path / "r", [{"iteration": 0, "eval": None}, second])
    with pytest.raises(LetiError) as e:
        load_run(rd.root)
    assert str(e.value).startswith(f"{rd.metrics_path}:2: {message}")


@pytest.mark.parametrize("per_problem", [{"a": [3]}, {"a": [3, 1, 0]}, {"a": [True, False]}])
def test_eval_json_per_problem_counts_must_be_n_and_c(tmp_path, per_problem):
    rd = _run(tmp_path / "r", [{"iteration": 0, "eval": {"pass@1": 0.5}}])
    write_json_atomic(rd.eval(0), {"pass@k": {"pass@1": 0.5}, "per_problem": per_problem})
    with pytest.raises(LetiError, match="'per_problem' must map each problem id to"):
        load_run(rd.root)


def test_eval_json_stderr_must_be_numbers(tmp_path):
    rd = _run(tmp_path / "r", [{"iteration": 0, "eval": {"pass@1": 0.5}}])
    write_json_atomic(rd.eval(0), {"pass@k": {"pass@1": 0.5}, "pass@k_stderr": {"pass@1": "x"}})
    with pytest.raises(LetiError, match="'pass@k_stderr' must be an object of numbers or null"):
        load_run(rd.root)


def test_first_and_last_evaluated_points_and_steps_to_reach():
    h = _history([_point(0, 0, **{"pass@1": 0.25}), _point(1, 5, **{"pass@1": 0.5}), _point(2, 9)])
    assert h.point_with("pass@1", last=False).iteration == 0 and h.point_with("pass@1", last=True).iteration == 1
    assert h.stale_final and h.final_score == 0.5 and h.baseline_score == 0.25
    assert steps_to_reach(h, 0.5) == 5 and steps_to_reach(h, 0.25) == 0 and steps_to_reach(h, 0.75) is None


def test_the_headline_metric_is_pass_at_1_else_the_smallest_k():
    assert _history([_point(0, **{"pass@10": 0.5, "pass@5": 0.25}), _point(1, **{"f1": 0.5})]).metric == "pass@5"
    assert _history([_point(0, **{"pass@10": 0.5}), _point(1, **{"pass@1": 0.25})]).metric == "pass@1"
    assert _history([_point(0, **{"f1": 0.5})]).metric is None


def test_the_shared_metric_of_runs():
    p1, p5 = _history([_point(0, **{"pass@1": 0.5})]), _history([_point(0, **{"pass@5": 0.5})])
    unevaluated = _history([_point(0)])
    assert shared_metric([p1, p1]) == "pass@1" and shared_metric([p5, unevaluated]) == "pass@5"
    assert shared_metric([p1, p5]) is None and shared_metric([unevaluated]) == "pass@1"


def _evaluated(counts: dict[str, tuple[int, int]], value: float) -> RunHistory:
    p = IterationPoint(iteration=0, gradient_steps=0, train_pass_rate=None, eval_pass_at_1=value,
                       eval_metrics={"pass@1": value}, eval_counts=counts)
    return _history([p])


def test_final_difference_is_paired_only_over_the_same_problems_with_enough_samples():
    a, b = _evaluated({"x": (1, 1), "y": (1, 0)}, 0.5), _evaluated({"x": (1, 0), "y": (1, 0)}, 0.0)
    d = final_difference(a, b)
    assert (d.mean, d.n_problems) == (0.5, 2) and d.stderr is not None  # n = k = 1 is enough for pass@1
    other = _evaluated({"x": (1, 0), "z": (1, 0)}, 0.0)
    assert final_difference(a, other) == final_difference(a, _evaluated({}, 0.0))
    plain = final_difference(a, other)
    assert (plain.mean, plain.stderr, plain.n_problems) == (0.5, None, 0)
    unknown = final_difference(_evaluated({}, 0.5), _evaluated({}, 0.25))  # per-problem results not kept
    assert (unknown.mean, unknown.stderr, unknown.n_problems) == (0.25, None, 0)


@pytest.mark.parametrize("summary, bad", [
    ([0.5], "not a demo summary (a JSON object)"),
    ({"iterations": {"textual": [{"heldout_pass_at_1": "x"}]}}, "'iterations' must map each arm"),
    ({"iterations": {"textual": []}, "textual_final_pass_at_1": "x"}, "'textual_final_pass_at_1' is \"x\""),
    ({"final_pass_at_1_stderr": {"textual": "x"}}, "'final_pass_at_1_stderr' is {\"textual\": \"x\"}"),
    ({"vs_binary": {"textual": {"difference_points": "x"}}}, "'vs_binary' is"),
])
def test_a_demo_summary_value_of_the_wrong_type_is_named(tmp_path, summary, bad):
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(LetiError) as e:
        read_summary(tmp_path)
    assert str(e.value).startswith(f"{tmp_path}/summary.json: {bad}")


def test_a_failed_block_removes_the_lock_it_created_and_only_that(tmp_path):
    """A refused `leti run` / `leti evaluate --out` in a user's folder left a .lock there, which
    `leti demo` then took for a run directory."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x\n")
    with pytest.raises(LetiError, match="refused"):
        with rundir.locked_dir(mine, "--run-dir"):
            raise LetiError("refused")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    new = tmp_path / "new"  # a directory it made, holding only its lock: removed, as before
    with pytest.raises(KeyboardInterrupt):
        with rundir.locked_dir(new, "--run-dir"):
            raise KeyboardInterrupt
    assert not new.exists()
    run = tmp_path / "run"  # a run's own lock, there before this call: kept
    with RunDir(run).locked():
        (run / "run.json").write_text("{}")
    with pytest.raises(LetiError, match="refused"):
        with RunDir(run).locked():
            raise LetiError("refused")
    assert sorted(p.name for p in run.iterdir()) == [".lock", "run.json"]
