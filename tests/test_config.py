"""Run config: paper defaults, presets, overrides, and one-line errors for bad fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from leti.cli import main
from leti.config import RunConfig, load_config
from leti.errors import LetiError
from leti.tasks.registry import get_task

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_are_the_paper():
    cfg = load_config(None)
    assert cfg.model == "Salesforce/codegen-350M-mono"
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.max_new_tokens) == (128, 1.0, 1.0, 512)
    assert (cfg.eval.split, cfg.eval.n, cfg.eval.temperature, cfg.eval.ks) == ("test", 16, 0.1, [1, 10])
    # `leti evaluate --task mbpp --model M` uses the same protocol as a run's evaluation
    mbpp = get_task("mbpp").eval_defaults
    assert (mbpp.split, mbpp.n, mbpp.temperatures, mbpp.top_p, mbpp.max_new_tokens, list(mbpp.ks)) == (
        cfg.eval.split, cfg.eval.n, (cfg.eval.temperature,), cfg.eval.top_p, cfg.eval.max_new_tokens, cfg.eval.ks)
    t = cfg.trainer
    assert (t.learning_rate, t.weight_decay, t.epochs, t.pretrain_mix_ratio) == (1e-5, 0.01, 3, 1.0)
    # the authors' corpus: the first 50k Python files of The Stack (process_the_stack.py)
    assert (t.pretrain_corpus, t.pretrain_hf_data_dir, t.pretrain_max_files) == ("bigcode/the-stack", "data/python", 50000)
    assert cfg.execution.timeout_s == 5.0
    assert cfg.training_text.reward_token and cfg.training_text.textual_feedback
    assert not cfg.training_text.append_eos


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_presets_load(preset):
    load_config(CONFIGS / preset)


def test_no_preset_asks_vllm_for_a_model_it_cannot_serve():
    """vLLM has no CodeGen (tests/test_vllm.py::test_engine_that_cannot_start_is_a_one_line_error)."""
    vllm = [c.model for c in map(load_config, CONFIGS.glob("*.yaml")) if c.sampling.backend == "vllm"]
    assert vllm and not [m for m in vllm if "codegen" in m.lower()]


@pytest.mark.parametrize("quick", [False, True])
def test_demo_presets_load(quick):
    from leti.demo.config import load_demo_config, preset_path

    load_demo_config(preset_path(quick))


def test_preset_values():
    assert load_config(CONFIGS / "mbpp-codegen-2b.yaml").trainer.learning_rate == 5e-6
    assert load_config(CONFIGS / "mbpp-binary-only.yaml").training_text.textual_feedback is False
    assert load_config(CONFIGS / "mbpp-no-pretrain-mix.yaml").trainer.pretrain_mix_ratio == 0
    assert load_config(CONFIGS / "mbpp-constant-feedback.yaml").training_text.feedback_content == "constant"
    assert load_config(CONFIGS / "mbpp-passing-only.yaml").training_text.keep_failures is False
    sft = load_config(CONFIGS / "mbpp-sft.yaml").trainer
    assert (sft.learning_rate, sft.epochs) == (1e-4, 30)


def test_overrides_parse_values():
    cfg = load_config(None, ["sampling.n=4", "trainer.learning_rate=5e-6", "eval.max_problems=null",
                             "trainer.report_to=[tensorboard]", "training_text.feedback_style=rich"])
    assert cfg.sampling.n == 4 and cfg.trainer.learning_rate == 5e-6 and cfg.eval.max_problems is None
    assert cfg.trainer.report_to == ["tensorboard"]
    # one knob: the training text's feedback style drives the executor's
    assert cfg.execution.feedback_style == "rich"


def test_unknown_field_suggests_the_fix(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("sampling:\n  temprature: 0.5\n")
    with pytest.raises(LetiError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: unknown field 'sampling.temprature' (did you mean 'sampling.temperature'?)"


@pytest.mark.parametrize("override, fragment", [
    ("trainer.learning_rate=fast", "field 'trainer.learning_rate' = 'fast' must be float"),
    ("sampling.n=0", "sampling.n must be >= 1, got 0"),
    ("sampling.n=2.5", "field 'sampling.n' = 2.5 must be int"),
    ("eval.ks=[1,100]", "eval.ks=[1, 100] needs values in 1..eval.n=16"),
    ("trainer.mixed_precision=fp8", "field 'trainer.mixed_precision' = 'fp8' is invalid; use one of"),
    ("execution.workers=0", "execution.workers must be >= 1, got 0"),
    ("execution.timeout_s=1e10", "execution.timeout_s must be at most 86400 seconds (one day), got 10000000000.0"),
    ("trainer.lora.r=0", "trainer.lora.r must be >= 1, got 0"),
    ("trainer.report_to=[mlflow]", "unknown tracker 'mlflow'"),
    ("trainer.lora.rank=8", "unknown field 'trainer.lora.rank'"),
    ("sampling=3", "field 'sampling' must be a mapping"),
])
def test_invalid_values_name_field_and_value(override, fragment):
    with pytest.raises(LetiError) as e:
        load_config(None, [override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_an_unquoted_no_is_the_choice_no_not_a_boolean(tmp_path):
    """YAML 1.1 reads `no` as false: a choice field that has "no" takes it as written."""
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  mixed_precision: no\n")
    assert load_config(path).trainer.mixed_precision == "no"
    assert load_config(None, ["trainer.mixed_precision=no"]).trainer.mixed_precision == "no"
    with pytest.raises(LetiError, match="'trainer.mixed_precision' = True is invalid"):  # no choice means yes
        load_config(None, ["trainer.mixed_precision=yes"])


@pytest.mark.parametrize("overrides, fragment", [
    (["trainer.lora.load_in_4bit=true"], "load_in_4bit is QLoRA and needs trainer.lora.enabled: true"),
    (["trainer.lora.save=adapter"], "trainer.lora.save='adapter' needs trainer.lora.enabled: true"),
    (["trainer.lora.save=both"], "field 'trainer.lora.save' = 'both' is invalid"),
    # peft takes 'all-linear' only as the whole value: in a list it matched nothing, silently
    (["trainer.lora.enabled=true", "trainer.lora.target_modules=[all-linear, c_attn]"],
     "'all-linear' stands alone, as ['all-linear'] (every linear layer); or list the layers without it"),
    (["trainer.lora.enabled=true", "trainer.lora.save=adapter", "sampling.backend=vllm"],
     "vLLM cannot load the adapters' special-token rows; use trainer.lora.save: merged"),
])
def test_lora_combinations_that_cannot_work_are_one_line_errors(overrides, fragment):
    with pytest.raises(LetiError) as e:
        load_config(None, overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("dtype, why", [("bfloat16", "round away"), ("float16", "turn weights to NaN")])
def test_half_precision_weights_are_refused_at_run_start_unless_lora_trains(dtype, why, tmp_path, capsys):
    """AdamW steps trained weights in their own dtype: 16-bit full fine-tuning is refused with the
    fix when a run starts, before anything is sampled; with LoRA the base is frozen and the
    adapters are fp32, so 16-bit weights are fine. The config itself still loads (a run made
    before the rule keeps its report)."""
    assert load_config(None, [f"model_dtype={dtype}"]).model_dtype == dtype
    run = tmp_path / "run"
    assert main(["run", "tiny-cpu", "--run-dir", str(run), "--set", f"model_dtype={dtype}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"leti: error: model_dtype={dtype!r} would train every weight in {dtype}")
    assert why in err and "model_dtype: float32" in err and "\n" not in err
    assert not (run / "iterations").exists()
    adapters = [f"model_dtype={dtype}", "trainer.lora.enabled=true", "trainer.lora.save=adapter"]
    load_config(None, adapters).check_weights_dtype()
    assert load_config(None, adapters).weights_dtype == dtype


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_lora_merged_into_half_precision_weights_is_refused_at_run_start(dtype, tmp_path, capsys):
    """Merged into 16-bit weights, LoRA's small update rounds away (58% of the weights an fp32
    run moved stayed put on a tiny model), and each iteration loads the merge in 16 bits again."""
    run = tmp_path / "run"
    assert main(["run", "tiny-cpu", "--run-dir", str(run), "--set", f"model_dtype={dtype}",
                 "--set", "trainer.lora.enabled=true", "--set", "trainer.carry_optimizer_state=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"leti: error: model_dtype={dtype!r} with trainer.lora.save: merged adds each iteration's adapters "
                   f"into {dtype} weights, which rounds most of their small update away; use trainer.lora.save: "
                   "adapter (the adapters go on training over the frozen weights) or model_dtype: float32")
    assert not (run / "iterations").exists()
    # under vLLM, which cannot serve adapters kept apart (lora.save: adapter), only float32 is offered
    with pytest.raises(LetiError) as refused:
        load_config(None, [f"model_dtype={dtype}", "trainer.lora.enabled=true", "sampling.backend=vllm"]).check_weights_dtype()
    assert str(refused.value).endswith("use model_dtype: float32 (vLLM samples in sampling.vllm.dtype whatever the "
                                       "weights' dtype)")


def test_auto_weights_are_float32_unless_the_weights_stay_frozen():
    assert load_config(None, ["model_dtype=auto"]).weights_dtype == "float32"
    assert load_config(None, ["model_dtype=auto", "trainer.lora.enabled=true"]).weights_dtype == "float32"
    assert load_config(None, ["model_dtype=auto", "trainer.lora.enabled=true",
                              "trainer.lora.save=adapter"]).weights_dtype == "auto"
    assert load_config(None, []).weights_dtype == "float32"


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling: [unclosed\n")
    with pytest.raises(LetiError, match="is not valid YAML"):
        load_config(bad)
    with pytest.raises(LetiError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(LetiError, match="expected KEY=VALUE"):
        load_config(None, ["sampling.n"])


def test_cli_prints_one_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"epochz": 3}}))
    assert main(["run", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"leti: error: {path}: unknown field 'trainer.epochz' (did you mean 'trainer.epochs'?)"


@pytest.mark.parametrize("override, message", [
    ("sampling.nn=3", "--set sampling.nn=3: unknown field 'sampling.nn' (did you mean 'sampling.n'?)"),
    ("iterations=0", "--set iterations=0: iterations must be >= 1, got 0"),
    ("eval.n=1", "--set eval.n=1: eval.ks=[1, 2] needs values in 1..eval.n=1"),
])
def test_a_bad_override_is_blamed_not_the_file(override, message):
    with pytest.raises(LetiError) as e:
        load_config(CONFIGS / "tiny-cpu.yaml", ["sampling.n=4", override])
    assert str(e.value).startswith(message) and "tiny-cpu.yaml" not in str(e.value)


def test_a_bad_file_is_blamed_not_the_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("iterations: 0\nsampling:\n  nn: 3\n")
    with pytest.raises(LetiError) as e:
        load_config(path, ["sampling.n=4", "seed=1"])
    assert str(e.value) == f"{path}: unknown field 'sampling.nn' (did you mean 'sampling.n'?)"
    path.write_text("iterations: 0\n")
    with pytest.raises(LetiError) as e:
        load_config(path, ["sampling.n=4"])
    assert str(e.value) == f"{path}: iterations must be >= 1, got 0"
    # Overrides that repair the file, or that only work together, are fine.
    assert load_config(path, ["iterations=2"]).iterations == 2
    cfg = load_config(CONFIGS / "tiny-cpu.yaml", ["eval.n=1", "eval.ks=[1]"])
    assert (cfg.eval.n, cfg.eval.ks) == (1, [1])


def _run_cli(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_unreadable_config_is_one_line_naming_it(tmp_path, capsys, kind):
    if kind == "directory":
        path = tmp_path / "configs"
        path.mkdir()
        fragment = "is a directory, not a config file"
    else:
        path = tmp_path / "bin.yaml"
        path.write_bytes(b"\xff\xfe\x00model: x\n")
        fragment = "config file is not UTF-8 text (byte 0xff at offset 0)"
    with pytest.raises(LetiError, match="^" + str(path)):
        load_config(path)
    rc, err = _run_cli(["run", str(path), "--run-dir", str(tmp_path / "run")], capsys)
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"leti: error: {path}: ") and fragment in err


@pytest.mark.parametrize("command", ["run", "sft"])
def test_run_dir_that_is_a_file_is_one_line(tmp_path, capsys, command):
    afile = tmp_path / "F"
    afile.write_text("x")
    rc, err = _run_cli([command, str(CONFIGS / "tiny-cpu.yaml"), "--run-dir", str(afile)], capsys)
    assert rc == 2 and err == f"leti: error: --run-dir {afile}: is a file, not a directory; pass a directory (new or to resume)\n"
    rc, err = _run_cli([command, str(CONFIGS / "tiny-cpu.yaml"), "--run-dir", str(afile / "run")], capsys)
    assert rc == 2 and err.count("\n") == 1 and f"{afile} is a file, not a directory" in err


def test_an_empty_section_and_empty_ks_say_what_to_do(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sampling:\nseed: 1\n")
    with pytest.raises(LetiError, match="section 'sampling' is empty; give it fields, or remove it to keep its defaults"):
        load_config(path)
    path.write_text("eval:\n  ks: []\n")
    with pytest.raises(LetiError, match=r"eval.ks is empty; list the k of pass@k to report, e.g. \[1, 10\]"):
        load_config(path)


def test_an_empty_section_takes_an_override(tmp_path):
    # `sampling:` written empty plus --set sampling.n=3 was "'sampling' is not a section"
    path = tmp_path / "c.yaml"
    path.write_text("sampling:\n")
    assert load_config(path, ["sampling.n=3"]).sampling.n == 3
    path.write_text("model: m\nsampling:\n")
    with pytest.raises(LetiError, match="'model' is not a section"):  # a field is still no section
        load_config(path, ["model.x=3", "sampling.n=3"])


def test_a_date_or_number_given_for_text_says_to_quote_it(tmp_path, capsys):
    # was: field 'model' = datetime.date(2023, 1, 1) must be str
    path = tmp_path / "c.yaml"
    path.write_text("model: 2023-01-01\n")
    assert main(["config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"leti: error: {path}: field 'model' = 2023-01-01 must be str, and YAML reads it unquoted as a date; "
        "quote it: model: '2023-01-01' (with --set: \"model='2023-01-01'\")\n")
    with pytest.raises(LetiError, match=r"^--set eval.split=2023: field 'eval.split' = 2023 must be str, and YAML "
                                        r"reads it unquoted as a number; quote it: split: '2023' "
                                        r"\(with --set: \"eval.split='2023'\"\)$"):
        load_config(None, ["eval.split=2023"])
    assert load_config(None, ["eval.split='2023'"]).eval.split == "2023"


def test_an_override_of_a_section_leaves_the_section_aliased_to_it(tmp_path):
    """`eval: *gen` makes PyYAML hand both sections one dict (and deepcopy keeps that): an
    override of sampling wrote into eval too, without a word."""
    path = tmp_path / "alias.yaml"
    path.write_text("sampling: &gen\n  n: 16\n  temperature: 0.1\n  max_new_tokens: 256\neval: *gen\n")
    cfg = load_config(path, ["sampling.temperature=1.0", "sampling.n=128"])
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.sampling.max_new_tokens) == (128, 1.0, 256)
    assert (cfg.eval.n, cfg.eval.temperature, cfg.eval.max_new_tokens) == (16, 0.1, 256)
    cfg = load_config(path, ["eval.n=32"])
    assert (cfg.sampling.n, cfg.eval.n) == (16, 32)
    # a bad override is still blamed on itself, not on the file (_blame's layers are unshared too)
    with pytest.raises(LetiError, match=r"^--set sampling.n=0: sampling.n must be >= 1, got 0$"):
        load_config(path, ["sampling.n=0"])
    path.write_text("sampling: &gen\n  n: 16\n  temperature: 0.1\neval:\n  <<: *gen\n")  # a merge key: as before
    cfg = load_config(path, ["sampling.n=128"])
    assert (cfg.sampling.n, cfg.eval.n, cfg.eval.temperature) == (128, 16, 0.1)


HUGE = "1" + "0" * 400


@pytest.mark.parametrize("name", ["trainer.learning_rate", "execution.timeout_s", "sampling.temperature"])
def test_a_huge_integer_in_a_float_field_is_not_a_finite_number(name, tmp_path):
    """float(10**400) is an OverflowError, which escaped as a traceback."""
    with pytest.raises(LetiError, match=rf"^--set {name}={HUGE}: field '{name}' = {HUGE} must be a finite number$"):
        load_config(None, [f"{name}={HUGE}"])
    section, _, leaf = name.partition(".")
    path = tmp_path / "big.yaml"
    path.write_text(f"{section}:\n  {leaf}: -{HUGE}\n")
    with pytest.raises(LetiError, match=rf"^{path}: field '{name}' = -{HUGE} must be a finite number$"):
        load_config(path)


def test_an_integer_longer_than_python_reads_is_one_line(tmp_path, capsys):
    """Past 4300 digits int() itself refuses (a ValueError out of PyYAML): a traceback before."""
    digits = "1" + "0" * 5000
    path = tmp_path / "big.yaml"
    path.write_text(f"seed: 1\ntrainer:\n  learning_rate: {digits}\n")
    assert main(["config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"leti: error: {path}: line 3: ") and "5001 digits" in err and err.count("\n") == 1
    assert main(["config", "--set", f"model_revision={digits}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("leti: error: --set model_revision=") and "5001 digits" in err and err.count("\n") == 1
    path.write_text("seed: !!int abc\n")  # the same ValueError, from an explicit tag
    with pytest.raises(LetiError, match=rf"^{path}: line 1 is not valid YAML \('abc' is not an integer\)"):
        load_config(path)


@pytest.mark.parametrize("written, read", [
    ("0123456", "42798"),  # YAML 1.1: a leading 0 is octal
    ("1_000", "1000"),
    ("1:30", "90"),  # sexagesimal
    ("1.10", "1.1"),
    ("2023-1-1T10:00:00", "2023-01-01 10:00:00"),  # a timestamp
])
def test_the_quote_it_hint_quotes_what_was_written(written, read, tmp_path):
    """The hint quoted the value YAML made of the text: following it pinned model_revision '42798'."""
    hint = f"quote it: model_revision: '{written}' (with --set: \"model_revision='{written}'\")"
    with pytest.raises(LetiError) as e:
        load_config(None, [f"model_revision={written}"])
    assert str(e.value).startswith(f"--set model_revision={written}: field 'model_revision' = {written} must be str")
    assert str(e.value).endswith(hint) and f"'{read}'" not in str(e.value)
    path = tmp_path / "rev.yaml"
    path.write_text(f"model_revision: {written}\neval:\n  split: &s {written}\ntrain_split: *s\n")
    with pytest.raises(LetiError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: field 'model_revision' = {written} must be str")
    assert str(e.value).endswith(hint) and f"'{read}'" not in str(e.value)
    # through an alias, and where the file's text is replaced by an override's
    with pytest.raises(LetiError, match=f"quote it: split: '{written}'"):
        load_config(path, ["model_revision=abc"])
    with pytest.raises(LetiError, match="^--set eval.split=007: .*quote it: split: '007'"):
        load_config(path, ["model_revision=abc", "train_split=x", "eval.split=007"])


def test_the_quote_it_hint_for_a_list_item_gives_no_set_syntax_that_is_none():
    """It offered `--set "trainer.report_to[0]='16'"`: no such syntax, and the value YAML made."""
    with pytest.raises(LetiError) as e:
        load_config(None, ["trainer.report_to=[0x10]"])
    assert str(e.value).endswith("field 'trainer.report_to[0]' = 0x10 must be str, and YAML reads it unquoted as a "
                                 "number (16); quote the item: '0x10' in the list (in the file and inside a --set's "
                                 "argument alike)")


def test_without_the_written_text_the_quote_it_hint_states_no_value():
    """build() called on data whose YAML text it was not given (e.g. a demo config's run section)."""
    from leti.config import build

    with pytest.raises(LetiError) as e:
        build(RunConfig, {"model_revision": 42798}, "x.yaml")
    assert "'42798'" not in str(e.value) and "quote it as written" in str(e.value)


@pytest.mark.parametrize("text, overrides, blamed", [
    ("execution:\n  timeout_s: 5\ntraining_text:\n  feedback_style: Rich\n", [], "file"),
    ("execution:\n  timeout_s: 5\ntraining_text:\n  feedback_style: Rich\n", ["seed=1"], "file"),
    ("execution:\n  timeout_s: 5\n", ["training_text.feedback_style=Rich"], "--set"),
    # a run's config.yaml spells out both: the override sets both, as the one knob it is
    ("execution:\n  feedback_style: paper\ntraining_text:\n  feedback_style: paper\n",
     ["training_text.feedback_style=Rich"], "--set"),
])
def test_a_bad_feedback_style_is_named_where_it_was_written(text, overrides, blamed, tmp_path):
    """It was copied into execution first and reported as execution.feedback_style, a field the
    user never wrote (and is told not to)."""
    path = tmp_path / "fs.yaml"
    path.write_text(text)
    with pytest.raises(LetiError) as e:
        load_config(path, overrides)
    where = str(path) if blamed == "file" else f"--set {overrides[0]}"
    assert str(e.value) == f"{where}: field 'training_text.feedback_style' = 'Rich' is invalid; use one of 'paper', 'rich'"


@pytest.mark.parametrize("text, message", [
    ("sampling.n: 4\n", "unknown field 'sampling.n' (a dotted name is --set syntax; in YAML nest it: sampling: {n: 4})"),
    ("trainer.lora.r: 8\n", "unknown field 'trainer.lora.r' (a dotted name is --set syntax; in YAML nest it: "
                            "trainer: {lora: {r: 8}})"),
    ("trainer:\n  lora.r: 8\n", "unknown field 'trainer.lora.r' (a dotted name is --set syntax; in YAML nest it "
                                "under trainer: lora: {r: 8})"),
    ("sampling.nn: 4\n", "unknown field 'sampling.nn' (a dotted name is --set syntax; in YAML nest it: "
                         "sampling: {nn: 4})"),
])
def test_a_dotted_name_in_yaml_says_to_nest_it(text, message, tmp_path):
    """It got "did you mean 'sampling'?", which is no fix."""
    path = tmp_path / "flat.yaml"
    path.write_text(text)
    with pytest.raises(LetiError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: {message}"


def test_a_string_yaml_reads_as_a_mapping_or_list_gets_the_quoting_hint(tmp_path):
    # `: ` makes YAML read a path as a mapping, [..] as a list: the hint quotes the text as written
    with pytest.raises(LetiError) as e:
        load_config(None, ["task=jsonl:a: b.jsonl"])
    assert str(e.value) == ("--set task=jsonl:a: b.jsonl: field 'task' = jsonl:a: b.jsonl must be str, and YAML reads "
                            "it unquoted as a mapping ({'jsonl:a': 'b.jsonl'}); quote it: task: 'jsonl:a: b.jsonl' "
                            "(with --set: \"task='jsonl:a: b.jsonl'\")")
    path = tmp_path / "c.yaml"
    path.write_text("eval:\n  split: [a, b]\n")
    with pytest.raises(LetiError, match=r"field 'eval.split' = \[a, b\] must be str, and YAML reads it unquoted as "
                                        r"a list \(\['a', 'b'\]\); quote it: split: '\[a, b\]'"):
        load_config(path, [])
    assert load_config(None, ["task='jsonl:a: b.jsonl'"]).task == "jsonl:a: b.jsonl"  # the fix works
