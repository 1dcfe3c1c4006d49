"""EAE verdicts are decided on the host: programs that try to fake a pass fail, and honest
programs get exactly the verdict and feedback that the in-sandbox verifier gave them.

Every program runs in the real sandbox. The fakes below all passed when the verifier (holding the
gold arguments) ran in the program's own process; now the sandbox only reports the event's
arguments (no gold inside), and `EaeTask.judge` compares them with the gold on the host."""

from __future__ import annotations

import dataclasses

import pytest

from leti.execution import ExecutionConfig, Executor, Program, Status
from leti.tasks.base import Problem
from leti.tasks.eae.judge import reported_arguments
from leti.tasks.eae.problems import py_str, verifier_source
from leti.tasks.registry import get_task

# val: "The attackers were environmental terrorists upset about a new industry coming to town ."
# Attack, gold: assailant=["environmental terrorists"]; roles weapon, assailant, victim, means.
ATTACK_ID = "geneva/val/135_23605_4099594_13355_3"
GOLD = "environmental terrorists"
# What a faking program writes on the harness's result pipe (fd 3): the worker's "passed" record.
FORGE_OK = "__import__('os').write(3, b'{\"kind\": \"ok\"}'); __import__('os')._exit(0)"


def run(executor, geneva, completion: str, problem_id: str = ATTACK_ID):
    """What the training loop and evaluation record for `completion`: the sandbox's result,
    judged on the host."""
    problem = geneva.get(problem_id)
    program = geneva.build_program(problem, completion)
    return geneva.judge(problem, program, executor.run([program])[0], executor.config)


# ---- fakes that passed while the verifier ran in the program's process -------------------------

FAKES = {
    # f1_score sees 0 predicted and 0 gold arguments: "perfect".
    "builtins_len_patched": "); import builtins; _l = len; builtins.len = lambda x: 0 if type(x) is set else _l(x)",
    # Objects equal to everything: `n_pred == 0 and n_gold == 0` holds for any counts.
    "always_true_eq": ("); import builtins; _l = len; E = type('E', (int,), {'__eq__': lambda s, o: True, "
                       "'__hash__': int.__hash__}); builtins.len = lambda x: E(_l(x)) if type(x) is set else _l(x)"),
    # The verifier's exception class inherits from a patched AssertionError whose constructor
    # reports "passed" on the result pipe and exits.
    "patched_exception_class": ("); import builtins; builtins.AssertionError = type('AssertionError', (Exception,), "
                                "{'__init__': lambda self, *a: exec(" + repr(FORGE_OK) + ")})"),
    # Redefines a function the verifier uses, through a tracer, once the verifier is running.
    "tracer_redefines_verifier_function": (
        "); import sys; sys.settrace(lambda f, e, a: f.f_globals.__setitem__('f1_score', lambda *a: 1.0) "
        "if f.f_code.co_name == 'check_event' else None)"),
    # Early exit after forging the worker's "passed" record.
    "forged_record_then_exit": "); " + FORGE_OK,
}


@pytest.mark.parametrize("name", sorted(FAKES))
def test_fakes_fail(executor, geneva, name):
    r = run(executor, geneva, FAKES[name])
    assert not r.passed and r.status is not Status.PASSED, (name, r.status, r.feedback)
    assert r.feedback


@pytest.mark.parametrize("completion", [
    "); raise SystemExit(0)",
    "); import os; os._exit(0)",
    "); print('PASSED'); print('all tests passed')",
    "); import sys; sys.stdout.write('{\"kind\": \"ok\"}')",
])
def test_early_exit_and_printed_results_fail(executor, geneva, completion):
    # These already failed with the in-process verifier; the host keeps them failing.
    r = run(executor, geneva, completion)
    assert not r.passed


def _report(body: str) -> str:
    return f"raise LetiEventReport(__import__('json').dumps({body}))"


# A tracer that rewrites the extractor's report (a dict) in place just before it is serialised.
TAMPER = ("); import sys; G = globals(); sys.settrace(lambda f, e, a: [G['_leti_report'].clear(), "
          "G['_leti_report'].update({}), None][-1] if '_leti_report' in G else None)")
FORGED_CLASS = "); LetiEventReport = type('LetiEventReport', (Exception,), {}); "


@pytest.mark.parametrize("completion", [
    # A forged report raised from the program's own line, claiming the right answer.
    FORGED_CLASS + _report("{'roles': {'weapon': [], 'assailant': ['" + GOLD + "'], 'victim': [], 'means': []}}"),
    FORGED_CLASS + _report("{'error': ''}"),
    # The real report, rewritten in place by a tracer into one of the wrong shape.
    TAMPER.format("{'passed': True}"),
    TAMPER.format("{'roles': {'weapon': [], 'assailant': [1], 'victim': [], 'means': []}}"),
    TAMPER.format("{'roles': {'assailant': ['" + GOLD + "']}}"),
])
def test_forged_reports_fail(executor, geneva, completion):
    r = run(executor, geneva, completion)
    assert not r.passed, r.feedback
    # Failed for what it forged, not because the forgery itself broke.
    assert r.feedback.startswith("Error: the program tampered with") or "F1 0.00" in r.feedback, r.feedback


def test_without_the_host_judge_nothing_passes(executor, geneva):
    # Fail closed: a caller that records the sandbox's result without `task.judge` sees every
    # EAE program fail (the extractor ends each one with its report), never a faked pass.
    problem = geneva.get(ATTACK_ID)
    raw = executor.run([geneva.build_program(problem, problem.reference)])[0]
    assert raw.status is Status.FAILED and raw.exception_type == "LetiEventReport"
    assert geneva.judge(problem, geneva.build_program(problem, problem.reference), raw).passed


def test_gold_never_enters_the_sandbox(geneva):
    # What the program could read about itself (its whole module source) holds no gold: a
    # program that reads everything still only knows the sentence, as the prompt shows it.
    for problem in geneva.problems("val")[:50]:
        program = geneva.build_program(problem, problem.reference)
        assert repr(problem.meta["gold"]) not in program.source
        assert "_LETI_GOLD" not in program.source
        for role, spans in problem.meta["gold"].items():
            for span in spans:
                assert f"{role}=[{py_str(span)}" not in program.tests


def test_a_program_whose_report_is_tampered_with_says_so(executor, geneva):
    r = run(executor, geneva, TAMPER.format("{'roles': 'all'}"))
    assert r.status is Status.FAILED and r.exception_type is None
    assert r.feedback.startswith("Error: the program tampered with"), r.feedback


# ---- honest programs: the verdict and feedback the in-sandbox verifier gave --------------------


def legacy_tests(problem: Problem, min_f1: float) -> str:
    """The test code of the previous design: the verifier and the gold ran in the sandbox."""
    m = problem.meta
    return (
        "\n# Verifier (not part of the prompt): its message is the feedback.\n"
        f"{verifier_source()}\n"
        f"_LETI_SENTENCE = {py_str(m['sentence'])}\n"
        f"_LETI_GOLD = {m['gold']!r}\n"
        f"_leti_message = check_event(event, {m['class_name']}, _LETI_GOLD, _LETI_SENTENCE, {min_f1!r})\n"
        "if _leti_message:\n"
        "    raise VerificationError(_leti_message)\n"
    )


def honest_completions(problem: Problem) -> list[str]:
    """Completions a model writes: right, empty, extra, misplaced, misspelt, unknown role, not a
    list, non-literal, broken syntax."""
    gold, roles = problem.meta["gold"], problem.meta["roles"]
    filled = [(r, s) for r, spans in gold.items() for s in spans]
    words = problem.meta["sentence"].split()
    out = [problem.reference, ")", f"{roles[0]}=[{py_str(words[0])}])", "nonsense_role=['x'])",
           f"{roles[-1]}={py_str(words[-2])})", f"{roles[0]}=[sentence.split()[1]])",
           f"{roles[0]}=[1, 2])", f"{roles[0]}=['not in this sentence at all'])",
           f"{roles[0]}=[{py_str(words[1])}]", f'{roles[0]}=["""{words[1]}'.replace("\\", ""),
           f"{roles[0]}=[{py_str(words[0])}, {py_str(words[0])}, {py_str(words[0].upper())}])",
           "); event = 3", "); print('done')"]
    if filled:
        role, span = filled[0]
        other = next((r for r in roles if r != role), role)
        out += [f"{other}=[{py_str(span)}])", f"{role}=[{py_str(span.upper())}])",
                f"{role}=[{py_str(span)}], {other}=[{py_str(words[0])}, {py_str(words[-1])}])",
                problem.reference[:-1] + f", {other}=[{py_str(words[2])}])" if len(words) > 2 else ")"]
    return out


@pytest.mark.parametrize("spec, n_problems", [("geneva", 14), ("geneva:min_f1=0.5", 4)])
def test_honest_programs_get_the_previous_verdict_and_feedback(executor, spec, n_problems):
    task = get_task(spec)
    min_f1 = 1.0 if spec == "geneva" else 0.5
    problems = task.problems("val")[::40][:n_problems]
    cases = [(p, c) for p in problems for c in honest_completions(p)]
    legacy = executor.run([Program(p.prompt + c + "\n", legacy_tests(p, min_f1), id=p.id) for p, c in cases])
    programs = [task.build_program(p, c) for p, c in cases]
    new = executor.run(programs)
    statuses = set()
    for (problem, completion), old, raw, program in zip(cases, legacy, new, programs, strict=True):
        judged = task.judge(problem, program, raw, executor.config)
        if reported_arguments(judged) is not None:  # a verdict keeps its arguments, for the scores
            judged = dataclasses.replace(judged, judged=None)
        a = dataclasses.replace(old, duration_s=0.0).to_dict()
        b = dataclasses.replace(judged, duration_s=0.0).to_dict()
        assert a == b, (problem.id, completion)
        statuses.add((a["status"], a["exception_type"]))
    # The set covers passes, verifier failures, interpreter errors and syntax errors.
    assert {("passed", None), ("failed", "VerificationError"), ("failed", "TypeError"),
            ("invalid", "SyntaxError")} <= statuses, statuses


def test_honest_feedback_in_rich_style_and_short_limit_is_unchanged():
    task = get_task("geneva")
    config = ExecutionConfig(workers=1, feedback_style="rich", feedback_max_bytes=256)
    problem = task.get(ATTACK_ID)
    completion = "victim=['The attackers', 'a new industry', 'town', 'upset'], means=['coming'])"
    with Executor(config) as ex:
        old, raw = ex.run([Program(problem.prompt + completion + "\n", legacy_tests(problem, 1.0), id=problem.id),
                           task.build_program(problem, completion)])
    judged = task.judge(problem, task.build_program(problem, completion), raw, config)
    assert judged.feedback == old.feedback and judged.status is old.status is Status.FAILED
    assert "bytes cut" in judged.feedback
