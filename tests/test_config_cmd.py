"""`leti config`: the resolved config as YAML with every field's help, readable back as a config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from leti.cli import main
from leti.config import RunConfig, config_to_dict, flatten_config, load_config
from leti.errors import LetiError

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def _helps(cls: type, prefix: str = "") -> dict[str, str]:
    """Every field's help text, by dotted name, read from the dataclasses themselves."""
    out = {}
    for f in dataclasses.fields(cls):
        out[prefix + f.name] = f.metadata.get("help", "")
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(made := f.default_factory()):
            out.update(_helps(type(made), f"{prefix}{f.name}."))
    return out


def test_the_defaults_print_with_every_fields_help_and_read_back(tmp_path, capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    (tmp_path / "c.yaml").write_text(out)
    assert load_config(tmp_path / "c.yaml") == RunConfig()
    comments = " ".join(line.strip()[2:] for line in out.splitlines() if line.strip().startswith("#"))
    helps = _helps(RunConfig)
    assert set(flatten_config(config_to_dict(RunConfig()))) <= set(helps)
    for name, text in helps.items():
        assert " ".join(text.split()) in comments, name  # wrapped over lines, every word kept


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_preset_with_overrides_reads_back_equal(path, tmp_path, capsys):
    sets = ["sampling.n=4", "eval.ks=[1]", "trainer.lora.r=8"]
    assert main(["config", str(path), *[a for s in sets for a in ("--set", s)]]) == 0
    (tmp_path / "c.yaml").write_text(capsys.readouterr().out)
    printed = load_config(tmp_path / "c.yaml")
    assert printed == load_config(path, sets)
    assert (printed.sampling.n, printed.trainer.lora.r) == (4, 8)


def test_a_bad_override_is_one_line(capsys):
    assert main(["config", "--set", "sampling.n=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leti: error: --set sampling.n=0:") and len(err.splitlines()) == 1


def test_the_output_is_plain_yaml_of_the_config(capsys):
    """Every field but execution.feedback_style, which follows training_text.feedback_style."""
    assert main(["config"]) == 0
    expected = config_to_dict(RunConfig())
    del expected["execution"]["feedback_style"]
    assert yaml.safe_load(capsys.readouterr().out) == expected


def test_a_printed_config_edited_in_its_feedback_style_runs_with_it(tmp_path, capsys):
    """`leti config > my.yaml`, change training_text.feedback_style, use it. Was refused: the
    printed execution.feedback_style still said 'paper'."""
    assert main(["config", "tiny-cpu"]) == 0
    text = capsys.readouterr().out
    assert text.count("feedback_style: paper") == 1
    (tmp_path / "my.yaml").write_text(text.replace("feedback_style: paper", "feedback_style: rich"))
    cfg = load_config(tmp_path / "my.yaml")
    assert (cfg.training_text.feedback_style, cfg.execution.feedback_style) == ("rich", "rich")


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "task=mbppp"], "leti: error: --set task=mbppp: unknown task 'mbppp'; known tasks: "),
    (["--set", "task=jsonl"], "leti: error: --set task=jsonl: task 'jsonl' needs an argument: write jsonl:ARG"),
    (["FILE"], "leti: error: FILE: field 'task': unknown task 'mbppp'"),
])
def test_an_unknown_task_is_not_printed_as_validated(tmp_path, capsys, args, message):
    path = tmp_path / "c.yaml"
    path.write_text("task: mbppp\n")
    args = [str(path) if a == "FILE" else a for a in args]
    assert main(["config", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(message.replace("FILE", str(path)))
    assert captured.err.count("\n") == 1
    # a task file is not read: it may live on the machine that runs the config
    assert main(["config", "--set", f"task=jsonl:{tmp_path / 'elsewhere.jsonl'}"]) == 0


@pytest.mark.parametrize(("command", "default"), [("run", "runs/<config name>)"), ("sft", "runs/<config name>-sft)")])
def test_run_dir_help_states_the_commands_own_default(command, default, capsys):
    from leti.cli.run_cmd import default_run_dir

    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert default in " ".join(capsys.readouterr().out.split())
    assert default_run_dir("configs/x.yaml", "-sft" if command == "sft" else "") == (
        "runs/x-sft" if command == "sft" else "runs/x")


@pytest.mark.parametrize(("config", "name"), [("mbpp-qwen2.5-coder-1.5b-vllm", "mbpp-qwen2.5-coder-1.5b-vllm"),
                                              ("my.v2.yml", "my.v2"), ("dir/a.b.yaml", "a.b"), ("tiny-cpu", "tiny-cpu")])
def test_the_default_run_dir_keeps_a_dotted_preset_name_whole(config, name):
    """Was runs/mbpp-qwen2.5-coder-1 for the preset mbpp-qwen2.5-coder-1.5b-vllm (a stem)."""
    from leti.cli.run_cmd import default_run_dir

    assert default_run_dir(config) == f"runs/{name}"


def test_a_run_started_under_the_stem_resumes_there(tmp_path, monkeypatch):
    """Runs of a dotted preset started before the name was kept whole live in runs/<stem>: "run the
    same command again" goes on there rather than starting over; my.YAML is my's."""
    from leti.cli.run_cmd import default_run_dir

    monkeypatch.chdir(tmp_path)
    assert default_run_dir("my.YAML") == "runs/my"
    (tmp_path / "runs" / "mbpp-qwen2.5-coder-1").mkdir(parents=True)
    assert default_run_dir("mbpp-qwen2.5-coder-1.5b-vllm") == "runs/mbpp-qwen2.5-coder-1.5b-vllm"  # no run there
    (tmp_path / "runs" / "mbpp-qwen2.5-coder-1" / "run.json").write_text("{}")
    assert default_run_dir("mbpp-qwen2.5-coder-1.5b-vllm") == "runs/mbpp-qwen2.5-coder-1"


def test_the_printed_defaults_do_not_pin_this_machines_core_count(tmp_path):
    """`leti config > my.yaml` on a 1-core login node wrote `workers: 1`, and the GPU node that
    ran my.yaml executed with one sandboxed worker. The default is null, one per core where the
    programs run."""
    import os
    import subprocess
    import sys

    from leti.execution import ExecutionConfig

    cores = sorted(os.sched_getaffinity(0))
    command = [sys.executable, "-m", "leti", "config"]
    everywhere = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    one_core = subprocess.run(command, capture_output=True, text=True, check=True,
                              preexec_fn=lambda: os.sched_setaffinity(0, {cores[0]})).stdout
    assert one_core == everywhere
    assert "\nexecution:\n" in everywhere and "\n  workers: null\n" in everywhere
    (tmp_path / "c.yaml").write_text(everywhere)
    assert load_config(tmp_path / "c.yaml").execution.workers is None
    assert ExecutionConfig().worker_count == len(cores)
    assert ExecutionConfig(workers=3).worker_count == 3


def test_a_feedback_style_override_on_a_file_that_spells_out_both_sets_both(tmp_path):
    """A run's config.yaml names execution.feedback_style too: `--set
    training_text.feedback_style=rich` on it was refused for the two differing."""
    from leti.config import dump_config

    (tmp_path / "config.yaml").write_text(dump_config(RunConfig()))
    cfg = load_config(tmp_path / "config.yaml", ["training_text.feedback_style=rich"])
    assert (cfg.training_text.feedback_style, cfg.execution.feedback_style) == ("rich", "rich")
    # both set, differently: still refused
    with pytest.raises(LetiError, match="differs from training_text.feedback_style"):
        load_config(tmp_path / "config.yaml", ["training_text.feedback_style=rich", "execution.feedback_style=paper"])


def test_weights_dtype_that_leti_run_refuses_is_not_printed_as_validated(capsys):
    """`leti config --set model_dtype=bfloat16` printed the config as validated, and `leti run`
    of the printed copy then refused it at start."""
    assert main(["config", "--set", "model_dtype=bfloat16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leti: error: model_dtype='bfloat16' would train every weight in bfloat16") and "\n" not in err
    assert main(["config", "--set", "model_dtype=bfloat16", "--set", "trainer.lora.enabled=true"]) == 2
    assert "with trainer.lora.save: merged" in capsys.readouterr().err
    assert main(["config", "--set", "model_dtype=bfloat16", "--set", "trainer.lora.enabled=true",
                 "--set", "trainer.lora.save=adapter"]) == 0


def test_settings_of_a_section_left_switched_off_are_named(tmp_path, capsys):
    """sampling.vllm.* under the hf sampler, execution.ray_* under the local pool, trainer.lora.*
    with LoRA off did nothing, silently: a user who forgot the switch got the other backend."""
    assert main(["config", "tiny-cpu", "--set", "sampling.vllm.dtype=float32", "--set", "trainer.lora.r=8",
                 "--set", "trainer.lora.alpha=8", "--set", "execution.ray_actors=2"]) == 0
    assert capsys.readouterr().err.strip() == (
        "leti: warning: sampling.vllm.dtype does nothing with sampling.backend: hf (set sampling.backend: vllm to use "
        "it); execution.ray_actors does nothing with execution.backend: local (set execution.backend: ray to use it); "
        "trainer.lora.alpha, trainer.lora.r do nothing with trainer.lora.enabled: false (set trainer.lora.enabled: "
        "true to use them)")
    assert main(["config", "tiny-cpu", "--set", "sampling.backend=vllm", "--set", "sampling.vllm.dtype=float32",
                 "--set", "trainer.lora.enabled=true", "--set", "trainer.lora.r=8"]) == 0
    # tiny-cpu's batch sizes are the hf sampler's: vLLM batches by sampling.vllm.chunk_size
    assert capsys.readouterr().err.strip() == (
        "leti: warning: eval.batch_size, sampling.batch_size do nothing with sampling.backend: vllm (set "
        "sampling.backend: hf to use them)")
    assert main(["config", "tiny-cpu", "--set", "sampling.batch_size=16", "--set", "eval.batch_size=16"]) == 0
    assert capsys.readouterr().err == ""
    for preset in CONFIGS:  # the shipped presets set nothing they do not use
        assert main(["config", str(preset)]) == 0
        assert "warning" not in capsys.readouterr().err, preset.name
