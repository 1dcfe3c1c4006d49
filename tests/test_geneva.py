"""GENEVA / EAE-as-code: class generation, verifier feedback through the real sandbox and the
host's judge, Arg-I / Arg-C scores, gold validation, and one-line errors for malformed input.
Programs that try to fake a pass: tests/test_geneva_hostile.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from leti.cli import main
from leti.errors import LetiError
from leti.evaluation.samples import Sample
from leti.execution import Status
from leti.sampling.base import cut_at_stop
from leti.tasks.eae.check import normalise, occurs_in
from leti.tasks.eae.data import read_oneie
from leti.tasks.eae.metrics import ArgCounts, parse_prediction
from leti.tasks.eae.ontology import BASE_CLASS, class_name, load_ontology, render_class, role_name
from leti.tasks.registry import get_task

DATA = Path(__file__).resolve().parents[1] / "src" / "leti" / "data" / "geneva"
# val: "The attackers were environmental terrorists upset about a new industry coming to town ."
# Attack, gold: assailant=["environmental terrorists"]; roles weapon, assailant, victim, means.
ATTACK_ID = "geneva/val/135_23605_4099594_13355_3"
GOLD_SPAN = "environmental terrorists"

DEATH_CLASS = '''class Death(Event):
    """The words in this frame describe the death of a Protagonist. A Cause of death may also be
    expressed obliquely.

    Roles:
        deceased: The entity that has died.
        sufferer: The being or entity that emotionally experiences the death of the Deceased.
    """

    deceased: list[str] = []
    sufferer: list[str] = []
'''


# ---- ontology -> classes -------------------------------------------------------------------


def test_class_snapshot_for_small_event_type():
    ontology = load_ontology(DATA / "event_ontology.json")
    assert render_class(ontology["Death"]) == DEATH_CLASS


def test_names_become_python_identifiers():
    assert class_name("Commerce_money-transfer") == "CommerceMoneyTransfer"
    assert class_name("Conflict:Attack") == "ConflictAttack"
    assert role_name("Undesirable_event") == "undesirable_event"
    assert role_name("From") == "from_"  # a keyword cannot be a keyword argument


@pytest.mark.parametrize("event_type", ["Attack", "Commerce_money-transfer", "Death", "Know"])
def test_generated_classes_run_and_take_their_roles(event_type):
    # Our own generated definitions (not model output), so running them here is safe.
    event = load_ontology(DATA / "event_ontology.json")[event_type]
    namespace: dict = {}
    exec(compile(BASE_CLASS + "\n\n" + render_class(event), "<classes>", "exec"), namespace)
    cls = namespace[event.class_name]
    first = event.roles[0].py_name
    instance = cls(**{first: ["x"]})
    assert getattr(instance, first) == ["x"]
    assert all(getattr(instance, r.py_name) == [] for r in event.roles[1:])
    with pytest.raises(TypeError, match="has no role 'nonsense'; its roles are: "):
        cls(nonsense=["x"])


# ---- problems --------------------------------------------------------------------------------


def test_splits_ids_and_prompt(geneva):
    # upstream's train file holds 547 of the val and test mentions (one under another event type),
    # val 20 of test's: taken out of the earlier split, so nothing is trained (or selected) on a
    # test prompt and its gold, nor on a test sentence's trigger under another frame label
    assert {s: len(geneva.problems(s)) for s in geneva.splits()} == {"train": 653, "val": 1422, "test": 1893}
    instances = {s: {(m.tokens, m.trigger_start, m.trigger_end) for m in geneva.mentions()[s]} for s in geneva.splits()}
    assert not instances["train"] & (instances["val"] | instances["test"]) and not instances["val"] & instances["test"]
    prompts = {s: {p.prompt for p in geneva.problems(s)} for s in geneva.splits()}
    assert not prompts["train"] & (prompts["val"] | prompts["test"]) and not prompts["val"] & prompts["test"]
    ids = [p.id for p in geneva.problems()]
    assert len(set(ids)) == len(ids)
    p = geneva.get(ATTACK_ID)
    assert p.prompt.startswith("class Event:\n")
    assert p.prompt.endswith(
        'sentence = "The attackers were environmental terrorists upset about a new industry coming to town ."\n'
        '# In the sentence, "attackers" expresses an Attack event. Its arguments:\n'
        "event = Attack("
    )
    assert p.reference == 'assailant=["environmental terrorists"])'
    assert GOLD_SPAN not in p.prompt.split("sentence = ")[0]  # gold only via the sentence itself
    assert "\n\n" in geneva.stop_sequences and "\nprint" not in geneva.stop_sequences  # "\np" covers it


def test_repeated_trigger_names_its_occurrence(tmp_path):
    line = {"wnd_id": "w", "sentence": "he ran and ran", "tokens": ["he", "ran", "and", "ran"],
            "event_mentions": [{"id": "e1", "event_type": "Run", "trigger": {"start": 3, "end": 4, "text": "ran"},
                                "arguments": [{"role": "Runner", "text": "he"}]}]}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(line) + "\n")
    problem = get_task(f"eae-jsonl:{path}").problems()[0]
    assert '"ran" (its 2nd occurrence) expresses a Run event' in problem.prompt
    assert problem.id == "eae/test/e1" and problem.reference == 'runner=["he"])'


def test_multi_token_trigger_occurrence_counts_its_whole_span(geneva):
    # Trigger "'s" is tokens 2-3 ("'", "s"); the sentence also opens with a lone "'" token.
    # Counting only the first token ("'") called this "'s" the 2nd occurrence; it is the 1st.
    problem = geneva.get("geneva/val/135_23605_4099632_10329_0")
    assert "# In the sentence, \"'s\" (its 1st occurrence) expresses a Presence event." in problem.prompt


# ---- verifier through the real sandbox -------------------------------------------------------


def _run(executor, geneva, completion):
    """The sandbox's result judged on the host, as the loop and evaluation record it."""
    problem = geneva.get(ATTACK_ID)
    program = geneva.build_program(problem, completion)
    return geneva.judge(problem, program, executor.run([program])[0], executor.config)


@pytest.mark.parametrize(
    "completion, expected",
    [
        ('assailant=["environmental terrorists"]', "SyntaxError: '(' was never closed"),
        ('attacker=["x"])', "TypeError: Attack has no role 'attacker'; its roles are: weapon, assailant, victim, means"),
        ('assailant=["environmental terrorists"], weapon=["bombs"])',
         "- role 'weapon': 'bombs' does not occur in the sentence; copy spans from it exactly"),
        (")", "- role 'assailant' is missing 1 argument"),
        ('assailant=["environmental terrorists"], victim=["a new industry"])',
         "- role 'victim': 'a new industry' is not an argument of this role"),
        ('assailant=["environmental terrorists", "environmental terrorists"], victim=["a new industry"])',
         "- role 'assailant': 'environmental terrorists' is listed more than once"),
        ('assailant="environmental terrorists")',
         "VerificationError: role 'assailant' must be a list of strings copied from the sentence, got str"),
        ("); event = 3", "VerificationError: `event` must be an instance of Attack, got int"),
    ],
)
def test_verifier_feedback(executor, geneva, completion, expected):
    result = _run(executor, geneva, completion)
    assert not result.passed
    assert expected in result.feedback, result.feedback


def test_a_call_wrapped_over_lines_is_kept_whole_and_passes(executor, geneva):
    """Generation stops after the call, not at its first newline: a call wrapped one argument per
    line (black's layout) is valid Python and passes; what follows the call is cut off."""
    stops = geneva.stop_for(geneva.get(ATTACK_ID))
    wrapped = '\n    assailant=["environmental terrorists"],\n)'
    for after in ("\nprint(event)\n", "\n\n    # done", "\nevent = Attack(victim=[])", '\n"""'):
        assert cut_at_stop(wrapped + after, stops) == (wrapped, after)
    assert _run(executor, geneva, wrapped).passed
    one_line = 'assailant=["environmental terrorists"])'
    assert cut_at_stop(one_line + "\nsentence = 'x'\n", stops) == (one_line, "\nsentence = 'x'\n")
    assert cut_at_stop(one_line + "\n)\nx", stops) == (one_line + "\n)", "\nx")  # a stray ) is the model's


def test_feedback_is_the_traceback_tail_and_does_not_leak_gold(executor, geneva):
    result = _run(executor, geneva, ")")
    assert result.status is Status.FAILED and result.exception_type == "VerificationError"
    tail = result.feedback.splitlines()[-2:]
    assert tail == [
        "VerificationError: the Attack arguments do not match the sentence (F1 0.00, 1 problem):",
        "- role 'assailant' is missing 1 argument",
    ]
    assert GOLD_SPAN not in result.feedback.lower()


def test_normalised_prediction_passes_and_threshold_option(executor, geneva):
    # Case and spacing differ from the sentence; normalisation treats both sides the same way.
    assert _run(executor, geneva, 'assailant=["Environmental   terrorists"])').passed
    # One extra argument: F1 = 2/3. Fails exact match, passes with min_f1=0.5.
    completion = 'assailant=["environmental terrorists"], victim=["a new industry"])'
    assert not _run(executor, geneva, completion).passed
    lenient = get_task("geneva:min_f1=0.5")
    assert _run(executor, lenient, completion).passed
    # A span repeated (even spelled differently) is one argument, as in LeTI's and OneIE's
    # set-based scorers: the reward and Arg-C agree that this is an exact match.
    assert _run(executor, geneva, 'assailant=["environmental terrorists", "Environmental terrorists"])').passed


def test_gold_references_pass_on_val(executor, geneva):
    problems = geneva.problems("val")
    programs = [geneva.reference_program(p) for p in problems]
    results = [geneva.judge(p, prog, r, executor.config)
               for p, prog, r in zip(problems, programs, executor.run(programs), strict=True)]
    failed = [(p.id, r.feedback) for p, r in zip(problems, results, strict=True) if not r.passed]
    assert failed == []
    samples = [Sample(p.id, 0, p.reference) for p in problems]
    scores = geneva.extra_metrics(problems, samples, results)
    assert scores["arg_i_f1"] == scores["arg_c_f1"] == 100.0


# ---- normalisation and scores ----------------------------------------------------------------


def test_normalise_tokenisation_quotes_and_case():
    assert normalise("volunteer `` patients ''") == normalise('Volunteer "patients"')
    assert normalise("April Fool 's  Day") == normalise("april fool's day")
    assert normalise("the U . S .") == "the u.s."
    assert occurs_in("The  Army", "Yesterday the army attacked .")
    assert not occurs_in("arm", "Yesterday the army attacked .")  # whole words only
    assert occurs_in("'s", "April Fool 's Day")


def test_arg_scores_on_hand_checked_example():
    counts = ArgCounts()
    # Mention 1: both spans identified; "Baghdad" has the wrong role -> I 2/2, C 1/2.
    counts.add({"attacker": ["The army"], "target": ["Baghdad"]}, {"attacker": ["the army"], "place": ["Baghdad"]})
    # Mention 2: "soldiers" is not the gold span "two soldiers", "Iraq" is not gold -> 0 matches.
    counts.add({"victim": ["soldiers"], "place": ["Iraq"]}, {"victim": ["two soldiers"]})
    s = counts.scores()
    # pred 4, gold 3; Arg-I: 2 matches -> P 50, R 66.67, F1 57.14; Arg-C: 1 -> P 25, R 33.33, F1 28.57
    assert (s["arg_i_precision"], s["arg_c_precision"]) == (50.0, 25.0)
    assert s["arg_i_recall"] == pytest.approx(200 / 3) and s["arg_c_recall"] == pytest.approx(100 / 3)
    assert s["arg_i_f1"] == pytest.approx(400 / 7) and s["arg_c_f1"] == pytest.approx(200 / 7)


def test_repeated_span_is_one_prediction():
    # Predictions are a set of (role, span), like gold (and OneIE / Code4Struct / LeTI's scorer):
    # listing "Baghdad" twice is one correct argument, not one right and one wrong.
    counts = ArgCounts()
    counts.add({"destination": ["Baghdad", "baghdad"], "agent": ["the army"]},
               {"destination": ["Baghdad"], "agent": ["The army"]})
    s = counts.scores()
    assert (counts.n_pred, counts.n_gold, counts.arg_i, counts.arg_c) == (2, 2, 2, 2)
    assert s["arg_i_f1"] == s["arg_c_f1"] == 100.0


def test_repeated_keyword_predicts_nothing(geneva):
    # Python refuses `f(a=1, a=2)` at compile time (the sandbox reports a SyntaxError), so the
    # metric must not credit its spans either: the gold arguments count as missed.
    assert parse_prediction("event = Attack(", 'assailant=["a"], assailant=["b"])') is None
    problem = geneva.get(ATTACK_ID)
    completion = f'assailant=["{GOLD_SPAN}"], assailant=["{GOLD_SPAN}"])'
    scores = geneva.extra_metrics([problem], [Sample(problem.id, 0, completion)], [])
    assert scores["arg_c_recall"] == scores["arg_c_precision"] == 0.0


def test_too_deeply_nested_completion_predicts_nothing(geneva):
    # 3000 unary minuses exhaust the parser's recursion (RecursionError, not SyntaxError); that
    # escaped from extra_metrics and ended the whole evaluation. It is unparseable: no prediction.
    problem = geneva.get(ATTACK_ID)
    completion = "assailant=[" + "-" * 3000 + "1])"
    scores = geneva.extra_metrics([problem], [Sample(problem.id, 0, completion)], [])
    assert scores["arg_c_recall"] == 0.0 and scores["arg_i_recall"] == 0.0


def test_extra_metrics_parses_completions_without_running_them(geneva, tmp_path):
    problem = geneva.get(ATTACK_ID)
    marker = tmp_path / "ran"
    samples = [
        Sample(problem.id, 0, 'assailant=["environmental terrorists"], victim=["a new industry"])'),
        Sample(problem.id, 1, "assailant=[\"environmental terrorists\"]"),  # syntax error: predicts nothing
        Sample(problem.id, 2, f"means=[__import__('pathlib').Path({str(marker)!r}).touch()])"),
    ]
    scores = geneva.extra_metrics([problem], samples, [])
    # pred 2 (sample 0; the call in sample 2 is not a string), gold 3, 1 match: P 50, R 33.3
    assert scores["arg_c_precision"] == 50.0 and scores["arg_c_recall"] == pytest.approx(100 / 3)
    assert not marker.exists()
    assert parse_prediction("event = Attack(", "x=['a'], y='b')") == {"x": ["a"], "y": []}  # a bare str is no list


def test_arguments_count_only_from_programs_that_reached_the_verifier(executor, geneva):
    """Scored by execution, as the authors score EAE: an unknown role makes the program raise
    (TypeError) before any event exists, and a bare string is refused by the verifier as not a
    list; neither predicts the gold span it names (both were credited: F1 above the verdicts)."""
    problem = geneva.get(ATTACK_ID)
    completions = [f'assailant=["{GOLD_SPAN}"], nonsense=["x"])', f'assailant="{GOLD_SPAN}")', problem.reference]
    results = [_run(executor, geneva, c) for c in completions]
    assert results[0].exception_type == "TypeError" and results[1].exception_type == "VerificationError"
    assert results[2].passed
    scores = geneva.extra_metrics([problem], [Sample(problem.id, i, c) for i, c in enumerate(completions)], results)
    # gold 3 (one argument per sample), predicted 1 (the reference's), 1 match
    assert scores["arg_c_precision"] == 100.0 and scores["arg_c_recall"] == pytest.approx(100 / 3)


# ---- malformed input -> one-line LetiError naming file and line ------------------------------


def _one_line_error(excinfo, where: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.startswith(where), msg
    return msg


def test_malformed_ontology(tmp_path):
    bad = tmp_path / "onto.json"
    bad.write_text('{\n  "Attack": {"arguments": {"Attacker": "who"}},\n  "Die": {"roles": []}\n}\n')
    with pytest.raises(LetiError) as e:
        load_ontology(bad)
    assert "needs an 'arguments' object" in _one_line_error(e, f"{bad}:3:")
    bad.write_text('{\n  "Attack": {"arguments": {"Attacker": "who"},\n}\n')
    # The line and reason are the running json module's: up to 3.12 "Expecting property name
    # enclosed in double quotes" on line 3, from 3.13 "Illegal trailing comma before end of
    # object" on line 2 (the comma's).
    with pytest.raises(json.JSONDecodeError) as ref:
        json.loads(bad.read_text())
    with pytest.raises(LetiError) as e:
        load_ontology(bad)
    msg = _one_line_error(e, f"{bad}:{ref.value.lineno}:")
    assert "not valid JSON" in msg and ref.value.msg in msg, (msg, ref.value.msg)


def test_malformed_data_lines(tmp_path):
    good = {"sentence": "a b", "event_mentions": [{"id": "e", "event_type": "X", "trigger": {"text": "a"}, "arguments": []}]}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(LetiError) as e:
        read_oneie(path)
    assert "not valid JSON" in _one_line_error(e, f"{path}:2:")
    broken = {**good, "event_mentions": [{"id": "e", "event_type": "X", "arguments": []}]}
    path.write_text("\n" + json.dumps(broken) + "\n")
    with pytest.raises(LetiError) as e:
        read_oneie(path)
    assert "needs a 'trigger' object" in _one_line_error(e, f"{path}:2:")


def test_data_role_missing_from_ontology(tmp_path):
    onto = tmp_path / "onto.json"
    onto.write_text(json.dumps({"X": {"arguments": {"Agent": "who"}}}))
    data = tmp_path / "d.json"
    line = {"sentence": "a b", "event_mentions": [{"id": "e", "event_type": "X", "trigger": {"text": "a"},
                                                   "arguments": [{"role": "Patient", "text": "b"}]}]}
    data.write_text(json.dumps(line) + "\n")
    with pytest.raises(LetiError) as e:
        get_task(f"eae-jsonl:{data},ontology={onto}").problems()
    assert "role 'Patient'" in _one_line_error(e, f"{data}:1:")
    with pytest.raises(LetiError, match="min_f1 must be a number in"):
        get_task("geneva:min_f1=2")


def test_geneva_configs_load_and_name_this_task():
    from leti.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("geneva-tiny.yaml", "geneva-codegen-350m.yaml"):
        cfg = load_config(root / name)
        task = get_task(cfg.task)
        assert task.name == "geneva"
        assert task.problems(cfg.train_split) and task.problems(cfg.eval.split)


@pytest.mark.parametrize(("fields", "message"), [
    ({"sentence": "He shot him", "tokens": 5}, "'tokens' must be a list of strings, got 5"),  # was a TypeError
    ({"tokens": [1, 2, 3]}, "'tokens' must be a list of strings, got [1, 2, 3]"),  # was a TypeError from join
    ({"sentence": "He shot him", "tokens": "abc"}, "'tokens' must be a list of strings, got \"abc\""),  # was split into letters
    ({"sentence": 5, "tokens": ["He", "shot", "him"]}, "'sentence' must be a string, got 5"),  # became the prompt's sentence
])
def test_a_data_line_with_a_wrongly_typed_tokens_or_sentence_names_its_line(tmp_path, capsys, fields, message):
    mention = {"id": "e1", "event_type": "Attack", "trigger": {"text": "shot", "start": 1, "end": 2},
               "arguments": [{"role": "Attacker", "text": "He"}]}
    path = tmp_path / "d.jsonl"
    good = {"sentence": "She ran", "event_mentions": [{**mention, "id": "e0"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**fields, "event_mentions": [mention]}) + "\n")
    assert main(["tasks", "validate", f"eae-jsonl:test={path}"]) == 2
    assert capsys.readouterr().err == f"leti: error: {path}:2: {message}\n"


def test_the_prompt_says_a_using_event(geneva):
    """The article follows the sound: "an Attack event", but "a Using event" (was "an Using")."""
    phrases = {re.search(r"expresses (an? \w+) event", p.prompt).group(1) for p in geneva.problems()}
    assert "a Using" in phrases and "an Using" not in phrases
    assert {"an Attack", "an Arrest", "an Influence", "an Openness"} <= phrases
