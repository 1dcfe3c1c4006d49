"""Rough edges a user review found: the demo's refusal of an edited demo config, third-party
warnings on a correct CPU run, progress bars in log files, --help gaps and misleading details
in error messages."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest
import yaml

from leti.cli import main
from leti.demo.config import preset_path

LETI = [sys.executable, "-m", "leti"]


def _leti(args: list[str], cwd: Path, tty: bool = False, env: dict | None = None,
          interrupt_at: str | None = None) -> tuple[int, str]:
    """Run `leti ARGS` in a fresh process, stderr on a pipe or (tty=True) on a pseudo-terminal;
    returns (exit code, stdout and stderr together as written). `interrupt_at`: send SIGINT once
    the output holds this text, and the rest of its line when it starts one of leti's lines
    (print writes a line and its newline apart: a signal between the two left the stop line
    after it, and the test blamed leti's stop line)."""
    env = {**os.environ, **(env or {})}
    if tty:
        main_fd, sub_fd = pty.openpty()
        # a terminal of 0 columns (a new pty's size) would get bars of no text at all
        fcntl.ioctl(sub_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    else:
        main_fd, sub_fd = os.pipe()
    proc = subprocess.Popen([*LETI, *args], cwd=cwd, env=env, stdout=sub_fd, stderr=sub_fd, stdin=subprocess.DEVNULL)
    os.close(sub_fd)
    chunks: list[bytes] = []

    def drain() -> None:  # read as it comes: a full pty buffer would block the run
        sent = interrupt_at is None
        while True:
            try:
                data = os.read(main_fd, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not data:
                return
            chunks.append(data)
            seen = b"".join(chunks)
            at = seen.find(interrupt_at.encode()) if not sent else -1
            if at >= 0 and (not interrupt_at.startswith("leti: ") or b"\n" in seen[at:]):
                proc.send_signal(signal.SIGINT)
                sent = True

    reader = threading.Thread(target=drain)
    reader.start()
    rc = proc.wait(timeout=300)
    reader.join(timeout=30)
    os.close(main_fd)
    return rc, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


# --- 1. an edited demo config ------------------------------------------------------------------

@pytest.mark.slow
def test_an_edited_demo_config_is_refused_in_demo_terms_and_leaves_the_summary(tmp_path):
    """The arms' own check named `leti run`'s fixes (--set, `leti run ARM/config.yaml`), which the
    demo lacks, and only after the warm start had removed the finished demo's summary.json and
    written an INCOMPLETE one. Restoring the config resumes (nothing to do)."""
    env = {"LETI_CACHE_DIR": str(tmp_path / "cache")}
    preset = shutil.copy(preset_path(True), tmp_path / "myq.yaml")
    cmd = ["demo", "--config", "myq.yaml", "--run-dir", "dq", "--threads", "1"]
    rc, out = _leti(cmd, tmp_path, env=env)
    assert rc == 0, out
    summary = (tmp_path / "dq" / "summary.json").read_bytes()
    original = Path(preset).read_text()
    Path(preset).write_text(original.replace("temperature: 0.2", "temperature: 0.3"))
    rc, out = _leti(cmd, tmp_path, env=env)
    assert rc == 2
    assert out.strip().splitlines()[-1] == (
        "leti: error: dq: this demo directory was started with another demo config (run.eval.temperature was 0.2, "
        "now 0.3); restore the demo config it was started with, or use a new --run-dir")
    assert (tmp_path / "dq" / "summary.json").read_bytes() == summary
    Path(preset).write_text(original.replace("steps: 40", "steps: 41"))  # another warm start
    rc, out = _leti(cmd, tmp_path, env=env)
    assert rc == 2 and out.strip().splitlines()[-1] == (
        "leti: error: dq: this demo directory was started with another demo config (the warmstart section differs); "
        "restore the demo config it was started with, or use a new --run-dir")
    assert len(list((tmp_path / "cache" / "warmstart").iterdir())) == 1  # refused before building another
    Path(preset).write_text(original)
    rc, out = _leti(cmd, tmp_path, env={"LETI_CACHE_DIR": str(tmp_path / "moved")})  # the config is not to blame
    assert rc == 2 and out.strip().splitlines()[-1] == (
        f"leti: error: dq: this demo directory was started with its warm start in the cache folder {tmp_path / 'cache'}, "
        f"now {tmp_path / 'moved'}; set LETI_CACHE_DIR={tmp_path / 'cache'} as when it started, or use a new --run-dir")
    rc, out = _leti(cmd, tmp_path, env=env)
    assert rc == 0 and "already finished" in out, out
    assert json.loads((tmp_path / "dq" / "summary.json").read_text()).get("incomplete") is None


# --- 2. third-party warnings on a correct CPU run ----------------------------------------------

def test_no_padding_or_accelerator_warning_on_a_cpu_run(tmp_path, tiny_model_path, add_task):
    """transformers warned "We strongly recommend passing in an `attention_mask`" once a sampled
    row ended on eos (= pad) in a batch of unpadded prompts, and DeepSpeed that it "was unable to
    detect" a GPU; neither says anything wrong about a CPU run."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("the accelerator warning is about machines without a GPU")
    rc, out = _leti(["run", "tiny-cpu", "--set", f"model={tiny_model_path}", "--set", f"task={add_task}",
                     "--set", "sampling.n=8", "--set", "sampling.max_new_tokens=64", "--set", "sampling.temperature=1.5",
                     "--set", "trainer.pretrain_mix_ratio=0", "--run-dir", "r"], tmp_path)
    assert rc == 0, out
    samples = [json.loads(line) for line in (tmp_path / "r" / "iterations" / "1" / "samples.jsonl").open()]
    assert any(s["finish_reason"] == "stop" for s in samples)  # a row ended early: the warning's case
    assert "attention_mask" not in out and "unable to detect" not in out, out


def test_make_tiny_model_prints_no_accelerator_warning(tmp_path):
    code = f"from leti.testing import make_tiny_model; make_tiny_model({str(tmp_path / 'm')!r})"
    p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300, env={k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"})
    assert p.returncode == 0, p.stdout
    import torch

    if not torch.cuda.is_available():
        assert "unable to detect" not in p.stdout, p.stdout


def test_import_leti_does_not_import_torch():
    p = subprocess.run([sys.executable, "-c", "import sys, leti.cli; print('torch' in sys.modules)"],
                       capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "False"


def test_warm_start_pretraining_is_bit_identical_with_the_mask():
    """The warm start passes an all-ones attention mask now: the demo's numbers depend on its
    losses and weights staying exactly what they were without one."""
    import copy

    import torch

    from leti.demo.warmstart import WarmStartConfig, _new_model, pretrain, train_tokenizer

    cfg = WarmStartConfig(vocab_size=300, n_layer=1, n_embd=32, n_head=2, n_positions=64, block_size=32,
                          batch_size=4, steps=6)
    tok = train_tokenizer(["def f(x):\n    return x + 1\n" * 20, "<|endoftext|> a = [1, 2]\n" * 20], cfg.vocab_size)
    torch.manual_seed(0)
    model = _new_model(tok, cfg)
    eos = tok.eos_token_id
    blocks = torch.randint(1, len(tok), (8, cfg.block_size))
    blocks[:, 0] = eos  # an EOS (= pad) at a block's edge: where transformers warned
    masked = copy.deepcopy(model)
    losses = pretrain(masked, blocks, cfg, progress=False)

    # the same steps without a mask, as the warm start ran before
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    from leti.demo.warmstart import _lr_at

    model.train()
    before = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        batch = blocks[torch.randint(len(blocks), (cfg.batch_size,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        before.append(loss.item())
    assert losses == before
    assert all(torch.equal(a, b) for a, b in zip(masked.parameters(), model.parameters(), strict=True))


# --- 3. progress bars only on a terminal, messages on a fresh line -----------------------------

@pytest.mark.parametrize("tty", [False, True])
def test_a_stop_line_starts_a_line_and_bars_only_on_a_terminal(tmp_path, tiny_model_path, add_task, tty):
    """In a log file (stderr not a terminal) the bars of `leti run` were written anyway, as
    carriage-return updates; on a terminal, a line leti printed while a bar was open (an error,
    the stop line) came right after the bar, mid-line. Interrupted once the evaluation's bar is
    drawn (on a terminal) or the run has started (in a log)."""
    # 16 samples of 64 tokens per problem: the evaluation outlasts the moment of the interrupt
    rc, out = _leti(["run", "tiny-cpu", "--set", f"model={tiny_model_path}", "--set", f"task={add_task}",
                     "--set", "eval.n=16", "--set", "eval.max_new_tokens=64", "--run-dir", "r"], tmp_path, tty=tty,
                    interrupt_at="iter 0 eval executed" if tty else "leti: leti run in")
    assert rc == 128 + signal.SIGINT, out
    assert re.search(r"(^|\n)leti: interrupted; run the same command again to resume\n", out), out
    if tty:
        assert "iter 0 eval executed" in out  # bars are still drawn on a terminal
    else:
        assert "\r" not in out and "executed" not in out, out


def test_a_run_started_without_a_terminal_resumes_on_one(tmp_path, tiny_model_path, add_task):
    """No bars without a terminal changes the effective `progress`; a run directory takes that
    as a resumable change, never as "config changed since the run started"."""
    cmd = ["run", "tiny-cpu", "--set", f"model={tiny_model_path}", "--set", f"task={add_task}",
           "--set", "trainer.pretrain_mix_ratio=0", "--run-dir", "r"]
    rc, out = _leti(cmd, tmp_path)
    assert rc == 0, out
    # the run's config.yaml says what was asked: resumed from it on a terminal, the bars come back
    assert "\nprogress: true\n" in (tmp_path / "r" / "config.yaml").read_text()
    rc, out = _leti(cmd, tmp_path, tty=True)
    assert rc == 0 and "already finished" in out, out


# --- 4. --help -----------------------------------------------------------------------------------

def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit):
        main([*args, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_describes_every_argument(capsys):
    exec_help = _help(capsys, "exec")
    assert "input JSONL file of programs" in exec_help
    # argparse names an option's value once from Python 3.13 on ("-o, --output OUTPUT")
    option = "-o, --output OUTPUT" if sys.version_info >= (3, 13) else "-o OUTPUT, --output OUTPUT"
    assert f"{option} JSONL file for the results" in exec_help
    assert "--feedback-style {paper,rich} feedback text: paper (trimmed traceback)" in exec_help
    assert "default paper" in exec_help
    assert "task mbpp, mbpp-sanitized, humaneval, jsonl:PATH" in _help(capsys, "tasks", "validate")
    assert "or a preset's name" in _help(capsys, "config")


def test_the_evaluate_help_says_what_it_writes(capsys):
    assert "DIR/generation.json" in _help(capsys, "evaluate")


@pytest.mark.parametrize("argv, usage, extra", [
    (["run", "tiny-cpu", "--sett", "x=1"], "usage: leti run ", "--sett x=1 (did you mean --set?)"),
    (["evaluate", "--task", "mbpp", "--samples", "s", "--out", "o", "--workrs", "2"], "usage: leti evaluate ",
     "--workrs 2 (did you mean --workers?)"),
    (["report", "r", "extra"], "usage: leti report ", "extra"),
    (["tasks", "validate", "mbpp", "--timout", "5"], "usage: leti tasks validate ", "--timout 5 (did you mean --timeout?)"),
    (["evaluate", "--task", "mbpp", "--samples", "s", "--out", "o", "--bogus"], "usage: leti evaluate ", "--bogus"),
])
def test_an_argument_a_command_does_not_take_is_named_by_that_command(capsys, argv, usage, extra):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(usage)
    command = " ".join(argv[:2]) if argv[0] == "tasks" else argv[0]
    assert err.endswith(f"leti {command}: error: unrecognized arguments: {extra}\n")


def test_the_sft_help_gives_a_set_example_sft_uses(capsys):
    """`leti sft --help` shares `leti run`'s arguments; its --set example was sampling.n, a field
    sft does not use (SFT_UNUSED)."""
    from leti.loop.checks import SFT_UNUSED

    text = _help(capsys, "sft", "tiny-cpu")
    examples = re.findall(r"--set ([\w.]+)=", text.split("override a config field", 1)[1])
    assert examples, text
    assert not set(examples) & SFT_UNUSED, examples


def test_config_takes_a_preset_name(capsys):
    assert main(["config", "tiny-cpu"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["task"] == "mbpp"


# --- 5. error messages ---------------------------------------------------------------------------

@pytest.mark.parametrize("ks, k", [("[1,-1]", -1), ("[0]", 0)])
def test_a_k_below_one_is_named_as_such(capsys, ks, k):
    assert main(["config", "--set", f"eval.ks={ks}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"k must be >= 1 (pass@k over k samples), got {k}; use k from 1 to eval.n=16"), err
    assert "larger k" not in err


def test_demo_into_a_run_directory_says_what_it_is(tmp_path, capsys):
    """The run's hidden .lock sorts first: "(it holds '.lock')" invited deleting it."""
    d = tmp_path / "r1"
    d.mkdir()
    for name in (".lock", "config.yaml", "run.json"):
        (d / name).write_text("{}")
    assert main(["demo", "--quick", "--run-dir", str(d)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"leti: error: {d}: not empty and not a leti demo directory (it is a `leti run` directory); "
        "pass a new or empty --run-dir")


@pytest.mark.parametrize("field", ["train_split", "eval.split"])
def test_a_split_the_task_lacks_names_the_field_that_holds_it(tmp_path, capsys, add_task, field):
    """A typo in train_split and one in eval.split gave the same message, which named both."""
    run_dir = tmp_path / "run"
    assert main(["run", "tiny-cpu", "--set", f"model={tmp_path / 'no-model-needed'}", "--set", f"task={add_task}",
                 "--set", f"{field}=tset", "--run-dir", str(run_dir)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"leti: error: task '{add_task}' has no problems in split 'tset', which {field} names (the task's splits: "
        f"train, test); set {field} to one of them"]
    assert not run_dir.exists() or not any(p.name != ".lock" for p in run_dir.iterdir())


def test_tasks_show_of_a_missing_file_prints_only_the_error(tmp_path, capsys):
    assert main(["tasks", "show", f"jsonl:{tmp_path / 'missing.jsonl'}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"leti: error: {tmp_path / 'missing.jsonl'}: task file not found; check the path in jsonl:PATH"


def test_the_deepspeed_hook_lets_the_next_finder_see_the_import(tmp_path):
    """leti's import hook for DeepSpeed removed itself from sys.meta_path while Python walked
    that list, so the finder after it was skipped for that import."""
    pytest.importorskip("deepspeed")
    script = tmp_path / "spy.py"
    script.write_text(
        "import sys\nimport leti\nseen = []\n"
        "class Spy:\n    def find_spec(self, name, path=None, target=None):\n"
        "        seen.append(name) if name == 'deepspeed' else None\n        return None\n"
        "at = next(i for i, f in enumerate(sys.meta_path) if type(f).__name__ == '_DeepSpeedOnCpu')\n"
        "sys.meta_path.insert(at + 1, Spy())\nimport torch\nimport deepspeed\nprint(seen)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "['deepspeed']"


def test_a_bar_interrupted_right_after_drawing_itself_still_ends_its_line():
    """A Ctrl-C sent when a bar appears lands in tqdm's __init__ between its first drawing and
    the start of its clock; tqdm's close() then took the bar for never drawn, and the stop line
    came right after it (the stop-line test above, in CI). A real bar in that state: the
    attributes __init__ had not set yet are removed."""
    import io

    from tqdm import tqdm

    from leti.cli import _close_open_bars

    out = io.StringIO()
    bar = tqdm(total=3, desc="iter 0 eval executed", file=out, ascii=True)
    del bar.last_print_t, bar.start_t
    drawn = out.getvalue()
    assert "iter 0 eval executed" in drawn and not drawn.endswith("\n")
    _close_open_bars()
    assert out.getvalue().endswith("\n")
