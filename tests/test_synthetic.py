"""The built-in `synthetic` task: deterministic per seed, disjoint splits, no leakage into the
warm start's pretraining corpus, and tests that real programs pass or fail informatively."""

from __future__ import annotations

import re

import pytest

from leti.demo.corpus import corpus_documents, generated_module
from leti.errors import LetiError
from leti.execution import ExecutionConfig, Executor
from leti.tasks.registry import get_task
from leti.tasks.synthetic import TEMPLATES, constant_pools, generate_problems


def _key(p):
    return (p.meta["template"], p.meta["k"])


def test_generator_is_deterministic_per_seed():
    a, b, c = generate_problems(0), generate_problems(0), generate_problems(1)
    assert [(p.id, p.prompt, p.tests, p.reference) for p in a] == [(p.id, p.prompt, p.tests, p.reference) for p in b]
    assert [(p.id, p.tests) for p in a] != [(p.id, p.tests) for p in c]
    sub1 = get_task("synthetic:seed=3,train=10,test=7").problems()
    sub2 = get_task("synthetic:seed=3,train=10,test=7").problems()
    assert [p.id for p in sub1] == [p.id for p in sub2]


def test_train_and_test_are_disjoint_down_to_the_constant():
    problems = generate_problems(0)
    train = [p for p in problems if p.split == "train"]
    test = [p for p in problems if p.split == "test"]
    assert len(train) > 100 and len(test) > 100
    assert not {p.id for p in train} & {p.id for p in test}
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    # Held-out problems use a (template, constant) pair no train problem uses.
    assert not {_key(p) for p in train} & {_key(p) for p in test}
    # Every template appears in both splits.
    assert {p.meta["template"] for p in train} == {p.meta["template"] for p in test} == {t.key for t in TEMPLATES}


def test_pretraining_pool_is_disjoint_and_corpus_never_holds_a_problem():
    for seed in (0, 1):
        for t in TEMPLATES:
            pools = constant_pools(t, seed)
            assert not set(pools["pretrain"]) & (set(pools["train"]) | set(pools["test"]))
            assert not set(pools["train"]) & set(pools["test"])
    problems = generate_problems(0)
    corpus = "\n".join(generated_module(0, i, mbpp_style=0.6) for i in range(400))
    assert 'Write a function to' in corpus  # the MBPP-style share is there ...
    for p in problems:  # ... but never with a train or held-out problem's function or prompt
        assert f"def {p.entry_point}(" not in corpus
        assert p.prompt not in corpus
    docs = list(corpus_documents(0, n_generated=20, stdlib_bytes=50_000))
    assert any("import" in d for d in docs), "stdlib sources are part of the corpus"


def test_subset_spec_and_bad_specs():
    task = get_task("synthetic:seed=2,train=12,test=9")
    assert len(task.problems("train")) == 12 and len(task.problems("test")) == 9
    # A subset still spans many templates (it is sampled, not the first rows).
    assert len({p.meta["template"] for p in task.problems("train")}) >= 6
    for bad in ("synthetic:seed=x", "synthetic:size=3", "synthetic:train=0"):
        with pytest.raises(LetiError):
            get_task(bad)


def test_references_pass_and_typical_mistakes_give_informative_feedback():
    task = get_task("synthetic:seed=0,train=30,test=30")
    problems = task.problems()
    add = next(p for p in generate_problems(0) if p.meta["template"] == "add" and p.split == "train")
    k = add.meta["k"]
    wrong_name = task.build_program(add, f"def add_{k + 1}(n):\n    return n + {k}\n")
    wrong_op = task.build_program(add, f"def {add.entry_point}(n):\n    return n - {k}\n")
    cfg = ExecutionConfig(workers=2, timeout_s=10)
    with Executor(cfg) as ex:
        refs = ex.run([task.reference_program(p) for p in problems])
        name_res, op_res = ex.run([wrong_name, wrong_op])
    assert all(r.passed for r in refs), [r.feedback for r in refs if not r.passed][:2]
    assert name_res.exception_type == "NameError" and add.entry_point in name_res.feedback
    assert op_res.exception_type == "AssertionError" and "assert" in op_res.feedback


def test_only_the_chosen_templates_appear_in_the_prompt_layout_in_pretraining():
    from leti.demo.corpus import mbpp_style_templates
    from leti.tasks.synthetic import TEMPLATES

    chosen = mbpp_style_templates(0, 0.5)
    assert 0 < len(chosen) < len(TEMPLATES) and chosen == mbpp_style_templates(0, 0.5)
    corpus = "\n".join(generated_module(0, i, mbpp_style=1.0, template_share=0.5) for i in range(200))
    for t in TEMPLATES:
        # The task phrasing as a full line of an MBPP-style docstring (any constant).
        line = re.compile("^" + re.escape(t.text).replace(re.escape("{k}"), r"\d+") + "$", re.M)
        assert bool(line.search(corpus)) == (t.key in chosen), t.key
