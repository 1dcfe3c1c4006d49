"""The shipped presets reproduce the paper's experiments: each ablation differs from its
reference run in exactly the field it ablates, the paper's per-model values are set, and every
config that docs/reproducing.md names exists and loads. Pure config checks (no model)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from leti.config import config_to_dict, load_config
from leti.report import run_arm

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
REPRODUCING = ROOT / "docs" / "reproducing.md"

# Fields that change where or how fast a run goes, not what it computes (leti.loop.runner).
_HOW_FAST = {"sampling.batch_size", "eval.batch_size", "execution.workers", "trainer.batch_size",
             "trainer.gradient_checkpointing"}


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _diff(a: str, b: str) -> dict:
    fa, fb = (_flat(config_to_dict(load_config(CONFIGS / n))) for n in (a, b))
    return {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k] and k != "execution.workers"}


@pytest.mark.parametrize(("reference", "ablation", "fields"), [
    # binary feedback only: drop the feedback span, keep the reward token (spec "Ablations")
    ("mbpp-codegen-350m.yaml", "mbpp-binary-only.yaml", {"training_text.textual_feedback"}),
    # (the authors ran their 2B binary arm for 30 iterations, the textual one for 10)
    ("mbpp-codegen-2b.yaml", "mbpp-codegen-2b-binary-only.yaml", {"training_text.textual_feedback", "iterations"}),
    # (and it still measures the held-out loss, which the mix would have measured anyway)
    ("mbpp-codegen-350m.yaml", "mbpp-no-pretrain-mix.yaml", {"trainer.pretrain_mix_ratio", "trainer.pretrain_heldout_loss"}),
    # feedback post-processing: reported for CodeGen-2B
    ("mbpp-codegen-2b.yaml", "mbpp-postprocess-hints.yaml", {"training_text.stop_hint"}),
    ("mbpp-codegen-350m.yaml", "mbpp-constant-feedback.yaml", {"training_text.feedback_content"}),
    ("mbpp-codegen-350m.yaml", "mbpp-passing-only.yaml", {"training_text.textual_feedback", "training_text.keep_failures"}),
    # the supervised baselines: the spec's lr and epochs (and no mix, which the spec does not name)
    # (and the authors' SFT batch of 384 and end-of-text token, leti/scripts/model/train/actor/mbpp/*.sh)
    ("mbpp-codegen-350m.yaml", "mbpp-sft.yaml", {"trainer.learning_rate", "trainer.epochs", "trainer.pretrain_mix_ratio",
                                                 "trainer.gradient_accumulation_steps", "training_text.append_eos"}),
    ("mbpp-codegen-2b.yaml", "mbpp-codegen-2b-sft.yaml",
     {"trainer.learning_rate", "trainer.epochs", "trainer.pretrain_mix_ratio", "iterations",
      "trainer.gradient_accumulation_steps", "training_text.append_eos"}),
    # hardware variants compute the same run
    ("mbpp-codegen-350m.yaml", "mbpp-codegen-350m-1gpu.yaml", set()),
])
def test_each_ablation_changes_only_what_it_ablates(reference, ablation, fields):
    changed = set(_diff(reference, ablation)) - _HOW_FAST
    assert changed == fields, _diff(reference, ablation)


def test_the_8gpu_preset_is_the_2b_run_with_a_larger_global_batch():
    """Same run as mbpp-codegen-2b.yaml but for per-GPU batch sizes: the global batch
    (4 x 8 GPUs x 4 accumulation steps) is the single-process presets' 8 x 16 = 128."""
    assert set(_diff("mbpp-codegen-2b.yaml", "mbpp-codegen-2b-8gpu.yaml")) <= _HOW_FAST | {"trainer.gradient_accumulation_steps"}
    one, eight = (load_config(CONFIGS / n).trainer for n in ("mbpp-codegen-2b.yaml", "mbpp-codegen-2b-8gpu.yaml"))
    assert one.batch_size * one.gradient_accumulation_steps == eight.batch_size * 8 * eight.gradient_accumulation_steps


@pytest.mark.parametrize(("preset", "model", "lr", "epochs"), [
    ("mbpp-codegen-350m.yaml", "Salesforce/codegen-350M-mono", 1e-5, 3),
    ("mbpp-codegen-2b.yaml", "Salesforce/codegen-2B-mono", 5e-6, 3),
    ("mbpp-codegen-2b-8gpu.yaml", "Salesforce/codegen-2B-mono", 5e-6, 3),
    ("mbpp-postprocess-hints.yaml", "Salesforce/codegen-2B-mono", 5e-6, 3),
    ("mbpp-sft.yaml", "Salesforce/codegen-350M-mono", 1e-4, 30),
    ("mbpp-codegen-2b-sft.yaml", "Salesforce/codegen-2B-mono", 1e-4, 30),
])
def test_paper_presets_have_the_papers_model_and_optimiser(preset, model, lr, epochs):
    """Spec: constant lr 1e-5 (350M), 5e-6 (2B); AdamW wd 0.01; 3 epochs per iteration; the
    supervised baseline lr 1e-4 for 30 epochs; MBPP test n=16 at T=0.1, pass@1 and pass@10."""
    cfg = load_config(CONFIGS / preset)
    assert (cfg.model, cfg.trainer.learning_rate, cfg.trainer.epochs, cfg.trainer.weight_decay) == (model, lr, epochs, 0.01)
    assert (cfg.task, cfg.train_split, cfg.eval.split, cfg.eval.n, cfg.eval.temperature, cfg.eval.ks) == (
        "mbpp", "train", "test", 16, 0.1, [1, 10])
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.max_new_tokens) == (128, 1.0, 1.0, 512)
    assert cfg.execution.timeout_s == 5.0


@pytest.mark.parametrize(("textual", "binary"), [("mbpp-codegen-350m.yaml", "mbpp-binary-only.yaml"),
                                                  ("mbpp-codegen-2b.yaml", "mbpp-codegen-2b-binary-only.yaml")])
def test_leti_report_pairs_the_textual_and_binary_presets(tmp_path, textual, binary):
    """`leti report` compares two runs as textual vs binary arms when their configs differ only
    in the arm (leti.report.run_arm); the presets of the paper's comparison do."""
    arms = []
    for name in (textual, binary):
        run = tmp_path / name.removesuffix(".yaml")
        run.mkdir()
        (run / "config.yaml").write_text((CONFIGS / name).read_text())
        arms.append(run_arm(run))
    assert [a[0] for a in arms] == ["textual", "binary"]
    assert arms[0][1] == arms[1][1]


def _named_configs(text: str) -> set[str]:
    return set(re.findall(r"configs/([\w.\-]+\.yaml)", text))


def test_every_config_the_docs_name_exists_and_loads():
    named = _named_configs(REPRODUCING.read_text()) | _named_configs((ROOT / "README.md").read_text())
    assert named, "docs/reproducing.md names no config"
    for name in sorted(named):
        assert (CONFIGS / name).is_file(), name
        load_config(CONFIGS / name)


def test_every_paper_preset_is_in_the_reproduction_map():
    """Each MBPP/GENEVA CodeGen preset is mapped to the paper result it reproduces."""
    named = _named_configs(REPRODUCING.read_text())
    papers = {p.name for p in CONFIGS.glob("*.yaml") if "codegen" in load_config(p).model.lower()}
    assert papers <= named, sorted(papers - named)


def _documented_commands() -> list[list[str]]:
    """The `leti ...` lines of docs/reproducing.md's command block, as argv (continuations joined)."""
    import shlex

    block = REPRODUCING.read_text().split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("leti ")]


def test_documented_commands_parse_and_their_configs_load():
    """Every command of the reproduction map parses with leti's own CLI parser, and every
    `leti run` / `leti sft` config loads with its --set overrides (what the command would run)."""
    from leti.cli import build_parser

    commands = _documented_commands()
    assert len(commands) >= 15
    parser = build_parser()
    for argv in commands:
        for part in " ".join(argv).split(" && leti "):
            args = parser.parse_args(part.split(" "))
            if args.command in ("run", "sft"):
                cfg = load_config(args.config, args.overrides)
                assert args.run_dir, argv  # every documented run names its directory
                assert cfg.model
            if args.command == "evaluate" and args.model and "leti" in args.out.name:
                assert args.prompt_prefix == "<|good|>", argv  # LeTI checkpoints: conditioned


def test_arms_run_on_other_hardware_still_pair_but_other_settings_do_not(tmp_path):
    """The one-GPU preset (other sampling batch) with gradient checkpointing on pairs with the
    binary preset; a binary run with another learning rate or global batch does not."""
    from leti.config import dump_config

    def arm(name: str, *overrides: str):
        run = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
        run.mkdir()
        (run / "config.yaml").write_text(dump_config(load_config(CONFIGS / name, list(overrides))))
        return run_arm(run)

    textual = arm("mbpp-codegen-350m-1gpu.yaml", "trainer.gradient_checkpointing=true")
    assert arm("mbpp-binary-only.yaml") == ("binary", textual[1])
    assert arm("mbpp-binary-only.yaml", "trainer.learning_rate=5e-6")[1] != textual[1]
    assert arm("mbpp-binary-only.yaml", "trainer.batch_size=32")[1] != textual[1]
    assert arm("mbpp-postprocess-hints.yaml") is None and arm("mbpp-passing-only.yaml") is None


# --- presets by name (a pip-installed leti has no configs/ folder) -----------------------------


def test_configs_in_a_checkout_are_the_shipped_presets():
    """configs/ links to the package's presets: one set of files, the documented paths work."""
    from leti.presets import PRESET_DIR, list_presets

    assert CONFIGS.resolve() == PRESET_DIR.resolve()
    shipped = {p.name for p in list_presets()}
    on_disk = {p.relative_to(CONFIGS).with_suffix("").as_posix() for p in CONFIGS.rglob("*.yaml")}
    assert shipped == on_disk and "mbpp-codegen-350m" in shipped and "accelerate/ddp" in shipped


def test_a_preset_name_loads_that_preset_and_a_file_of_that_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    by_name = load_config("mbpp-codegen-2b", ["sampling.n=8"])
    assert config_to_dict(by_name) == config_to_dict(load_config(CONFIGS / "mbpp-codegen-2b.yaml", ["sampling.n=8"]))
    assert config_to_dict(load_config("mbpp-codegen-2b.yaml")) == config_to_dict(load_config(CONFIGS / "mbpp-codegen-2b.yaml"))
    (tmp_path / "mbpp-codegen-2b.yaml").write_text("iterations: 3\n")
    assert load_config("mbpp-codegen-2b.yaml").iterations == 3  # the user's own file, not the preset


@pytest.mark.parametrize("ext", [".yaml", ".yml"])
def test_a_preset_name_beside_a_file_of_that_name_is_refused_for_every_command(tmp_path, monkeypatch, capsys, ext):
    """`leti presets NAME > NAME.yaml`, edited, then `leti run NAME` ran the shipped preset, not
    the edits, without a word."""
    from leti.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / f"tiny-cpu{ext}").write_text("model: mine\n")
    message = (f"leti: error: tiny-cpu: both the preset tiny-cpu and ./tiny-cpu{ext} exist; pass ./tiny-cpu{ext} for "
               "your file, or rename it to use the preset\n")
    for command in (["run", "tiny-cpu"], ["sft", "tiny-cpu"], ["config", "tiny-cpu"]):
        assert main(command) == 2
        assert capsys.readouterr().err == message
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny-cpu{ext}"]  # no run directory
    assert main(["config", f"./tiny-cpu{ext}"]) == 0  # the way to the file it names
    assert "model: mine\n" in capsys.readouterr().out
    assert main(["presets", "tiny-cpu"]) == 0  # printing the preset (to compare) is no choice between them
    assert capsys.readouterr().out == (CONFIGS / "tiny-cpu.yaml").read_text()


def test_unknown_names_are_one_line_errors(tmp_path, monkeypatch, capsys):
    from leti.cli import main
    from leti.errors import LetiError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(LetiError, match=r"^mbpp-codegen-9b: config file not found, and no preset has that name; .*mbpp-codegen-350m"):
        load_config("mbpp-codegen-9b")
    with pytest.raises(LetiError, match="config file not found"):  # a path is the reader's to name
        load_config("sub/mbpp-codegen-350m.yaml")
    with pytest.raises(LetiError, match="config file not found, and no preset"):
        load_config("ddp")  # the accelerate configs are not run configs
    assert main(["run", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("leti: error: nope: config file not found") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
    assert main(["presets", "nope"]) == 2
    assert "no preset of that name" in capsys.readouterr().err


def test_presets_command_lists_prints_and_locates(capsys):
    from leti.cli import main
    from leti.presets import list_presets

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for preset in list_presets():
        assert any(line.startswith(preset.name + " ") for line in lines), preset.name
    assert any(line.startswith("mbpp-binary-only ") and "Ablation: binary feedback only." in line for line in lines)
    assert all(len(line) <= 100 for line in lines)
    assert main(["presets", "tiny-cpu"]) == 0
    assert capsys.readouterr().out == (CONFIGS / "tiny-cpu.yaml").read_text()
    assert main(["presets", "accelerate/ddp", "--path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.is_absolute() and path.read_text() == (CONFIGS / "accelerate" / "ddp.yaml").read_text()


def test_the_wheel_ships_the_presets(built_wheel):
    """What `pip install leti` installs holds every preset (package data), so `leti run NAME`
    works without a checkout."""
    import zipfile

    from leti.presets import list_presets

    names = set(zipfile.ZipFile(built_wheel[0]).namelist())
    for preset in list_presets():
        assert f"leti/configs/{preset.name}.yaml" in names, preset.name


def test_commands_in_preset_comments_work_without_a_checkout(tmp_path, monkeypatch):
    """`leti presets NAME` shows a preset's comment to users who may have no checkout: each
    `leti run NAME` there loads from an empty directory, each `leti presets NAME` names a preset,
    and no command there reads a checkout path (configs/...)."""
    from leti.presets import find_preset, list_presets

    monkeypatch.chdir(tmp_path)
    runs = presets = 0
    for preset in list_presets():
        comment = "\n".join(line for line in preset.path.read_text().splitlines() if line.startswith("#"))
        assert "--config_file configs/" not in comment and "leti run configs/" not in comment, preset.name
        for name in re.findall(r"leti run ([\w.\-]+)", comment):
            if name != "CONFIG":
                load_config(name)
                runs += 1
        for name in re.findall(r"leti presets ([\w./\-]+) --path", comment):
            assert find_preset(name) is not None, (preset.name, name)
            presets += 1
    assert runs >= 5 and presets >= 4


def test_leti_run_refuses_a_config_meant_for_leti_sft_and_its_copies(tmp_path, monkeypatch, capsys):
    """The supervised baselines' presets under `leti run` would be the LeTI loop with 30 epochs at
    lr 1e-4 per iteration, neither experiment: one line naming `leti sft NAME`, no run directory.
    The mark is a comment line, so `leti presets NAME > my.yaml` carries it; deleting it is the way out."""
    from leti.cli import main
    from leti.errors import LetiError
    from leti.presets import SFT_MARK, list_presets, refuse_sft_config_for_run

    monkeypatch.chdir(tmp_path)
    assert {p.name for p in list_presets() if p.sft} == {"mbpp-sft", "mbpp-codegen-2b-sft"}
    for name in ("mbpp-sft", "mbpp-codegen-2b-sft"):
        assert main(["run", name, "--set", "iterations=1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"leti: error: {name}: a config for the supervised baseline") and err.count("\n") == 1
        assert f"run it with `leti sft {name}`" in err
    assert main(["presets", "mbpp-sft"]) == 0
    copy = tmp_path / "my.yaml"
    copy.write_text(capsys.readouterr().out)
    assert main(["run", str(copy)]) == 2
    assert f"run it with `leti sft {copy}`" in capsys.readouterr().err
    assert main(["config", "mbpp-sft", "--set", "trainer.epochs=3"]) == 0  # the resolved copy keeps the mark
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(capsys.readouterr().out)
    assert load_config(resolved).trainer.epochs == 3
    assert main(["run", str(resolved)]) == 2
    assert f"run it with `leti sft {resolved}`" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    copy.write_text("".join(line for line in copy.read_text().splitlines(keepends=True) if not line.startswith(SFT_MARK)))
    refuse_sft_config_for_run(copy)  # unmarked: the LeTI loop on the baseline's settings, as asked
    refuse_sft_config_for_run("mbpp-codegen-350m")
    with pytest.raises(LetiError, match=r"`leti sft mbpp-sft` runs it"):  # a checkout's path, without a checkout
        load_config("configs/mbpp-sft.yaml")


def test_a_config_piped_to_leti_run_is_the_one_read(tmp_path):
    """`leti run /dev/stdin` (or `<(...)`): the check for the sft mark read the pipe first, and the
    config loader then got nothing and ran every default (codegen-350M on MBPP, The Stack)."""
    piped = "model: tiny\neval:\n  n: 2\n  ks: [1, 5]\n"  # wrong on purpose: refused before any work
    cmd = [sys.executable, "-m", "leti", "run", "/dev/stdin", "--run-dir", str(tmp_path / "run")]
    proc = subprocess.run(cmd, input=piped, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "leti: error: /dev/stdin: eval.ks=[1, 5] needs values in 1..eval.n=2; raise eval.n or drop the larger k\n"


def test_presets_footer_says_which_command_runs_which_preset(capsys):
    from leti.cli import main

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "leti sft NAME the supervised baselines: mbpp-codegen-2b-sft, mbpp-sft\n" in out
    assert 'accelerate/*: accelerate launch --config_file "$(leti presets NAME --path)" -m leti run CONFIG\n' in out


@pytest.mark.parametrize("command", ["run", "sft", "config"])
def test_an_accelerate_preset_as_a_run_config_names_the_launch_command(tmp_path, monkeypatch, capsys, command):
    """`leti presets` lists accelerate/ddp, so "config file not found" for it would mislead."""
    from leti.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("accelerate/ddp", "accelerate/ddp.yaml"):
        assert main([command, name]) == 2
        assert capsys.readouterr().err == (
            f"leti: error: {name} is an accelerate launch config, not a run config: accelerate launch --config_file "
            '"$(leti presets accelerate/ddp --path)" -m leti run CONFIG\n')
    assert not (tmp_path / "runs").exists()
