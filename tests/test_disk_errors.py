"""A disk that refuses a write is one line naming the file and the fix, not a traceback or a bare
`No space left on device`. The failures are real: a child process with a file size limit
(RLIMIT_FSIZE, SIGXFSZ ignored) gets EFBIG from the OS, as `ulimit -f` gives it, with no root and
no mount. A full disk (ENOSPC) takes the same paths; only its wording is checked from the value."""

from __future__ import annotations

import errno
import gzip
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="RLIMIT_FSIZE needs a POSIX child process")

# Run after the imports (a module may write a cache file): from here on, no file may grow past the limit.
_LIMITED = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (_LIMIT_, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""


def _child(imports: str, body: str, limit: int) -> subprocess.CompletedProcess:
    """`body` in a fresh Python under the file size limit; an OSError it lets out is printed as
    `leti run` prints it (exit 2), anything else keeps its traceback."""
    code = "\n".join([
        "import sys",
        "from pathlib import Path",
        "from leti.cli import os_error_line",
        "import leti.cli",
        "os_error_fix = getattr(leti.cli, 'os_error_fix', lambda e, c: '')",  # none before the fix hints
        textwrap.dedent(imports),
        _LIMITED.replace("_LIMIT_", str(limit)),
        "try:",
        textwrap.indent(textwrap.dedent(body), "    "),
        "except OSError as e:",
        "    print(f'leti: error: {os_error_line(e)}{os_error_fix(e, \"run\")}', file=sys.stderr)",
        "    sys.exit(2)",
    ])
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def _one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    # not the progress bars, nor --unsafe-no-sandbox's warning
    lines = [x for x in r.stderr.splitlines() if x.startswith("leti:") and not x.startswith("leti: WARNING")]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("writer", [
    "from leti.loop.rundir import append_jsonl as w; w(PATH, [{'x': 'y' * 50_000}])",
    "from leti.loop.rundir import write_json_atomic as w; w(PATH, {'x': 'y' * 50_000})",
    "from leti.sampling.base import Sample; from leti.sampling.io import append_samples_jsonl as w; "
    "w(PATH, [Sample(problem_id='p', sample_idx=i, prompt='', completion='y' * 1000, "
    "n_prompt_tokens=0, n_completion_tokens=0, finish_reason='stop') for i in range(50)])",
    "from leti.evaluation.run import _write_atomic; "  # `leti evaluate`'s results.json, per_problem.jsonl
    "w = lambda p, t: (p.parent.mkdir(), _write_atomic(p, t)); w(PATH, 'y' * 50_000)",
])
def test_a_refused_write_names_its_file_and_the_fix(tmp_path, writer):
    """write()/flush()/fsync() errors carry no file name: the line was `leti: error: File too large`."""
    path = tmp_path / "run" / "out.jsonl"
    imports, call = writer.rsplit("; w(", 1)
    line = _one_line(_child(imports, "w(" + call.replace("PATH", f"Path({str(path)!r})"), limit=8192))
    assert line.startswith(f"leti: error: {path}") and "File too large" in line, line
    assert "raise the file size limit (ulimit -f)" in line and "run the same command again" in line


def test_the_fix_by_errno_and_command():
    """A full disk says to free space; a read-only one to make it writable; only commands that
    keep finished work say to run again."""
    from leti.cli import os_error_fix, os_error_line

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/metrics.jsonl")
    line = os_error_line(full) + os_error_fix(full, "run")
    assert line.startswith("/runs/x/metrics.jsonl: No space left on device; free space on that disk")
    assert "LETI_CACHE_DIR" in line and line.endswith("then run the same command again: finished work is kept")
    assert "run the same command again" not in os_error_fix(full, "exec")  # exec starts OUT.partial afresh
    assert "make it writable" in os_error_fix(OSError(errno.EROFS, "Read-only file system", "/x"), "report")
    assert os_error_fix(OSError(errno.EIO, "Input/output error"), "report") == ""


def test_a_checkpoint_the_disk_refuses_is_one_line(tmp_path, tiny_model_path):
    """safetensors (the weights) and torch.save (the AdamW state) reported EFBIG / a full disk as a
    SafetensorError or `RuntimeError: ... unexpected pos` with a 40-line traceback and no file."""
    imports = f"""
        import torch
        from leti.model import load_model_and_tokenizer, save_model
        from leti.training.trainer import save_optimizer
        model, tok = load_model_and_tokenizer({tiny_model_path!r})
        opt = torch.optim.AdamW(model.parameters())
        model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
        opt.step()
    """
    ckpt = tmp_path / "checkpoint.tmp"
    line = _one_line(_child(imports, f"save_model(model, tok, {str(ckpt)!r})", limit=20_000))
    assert line.startswith(f"leti: error: {ckpt}: File too large while saving; raise the file size limit"), line

    state = tmp_path / "leti_optimizer.pth"
    line = _one_line(_child(imports, f"save_optimizer(opt, [], {str(state)!r})", limit=20_000))
    assert line.startswith(f"leti: error: {state}.tmp: File too large while saving;"), line


def test_a_save_error_with_room_on_the_disk_is_not_hidden(tmp_path):
    """A torch RuntimeError that is not about the disk keeps its own traceback."""
    from leti.model import save_error

    assert save_error(RuntimeError("CUDA error: an illegal memory access"), tmp_path / "checkpoint.tmp") is None


def test_the_corpus_cache_on_a_refusing_disk_is_its_one_line(tmp_path, tiny_model_path):
    """numpy's tofile raises OSError('N requested and 0 written') with no errno: it went past the
    cache's own message as `leti: error: 258718 requested and 0 written`."""
    cache = tmp_path / "pretrain"
    imports = f"""
        from transformers import AutoTokenizer
        from leti.errors import LetiError
        from leti.training.corpus_cache import token_stream
        tok = AutoTokenizer.from_pretrained({tiny_model_path!r})
        texts = lambda: iter(["def f(x):\\n    return x + 1\\n" * 200] * 50)
    """
    body = f"""
        try:
            token_stream({str(cache)!r}, {{"k": 1}}, texts, tok, 0)
        except LetiError as e:
            print(f"leti: error: {{e}}", file=sys.stderr)
            sys.exit(2)
    """
    line = _one_line(_child(imports, body, limit=4096))
    assert line.startswith(f"leti: error: pretraining corpus cache: cannot write to {cache} ("), line
    assert "trainer.pretrain_cache: false" in line
    assert [p.name for p in cache.iterdir() if ".tmp-" in p.name] == []  # the half-built entry is removed


def test_a_gz_samples_file_that_tmpdir_cannot_hold_blames_tmpdir(tmp_path):
    """Decompressing --samples X.gz into a temporary file that cannot be written was reported as
    `X.gz: not a readable gzip file`, sending the user to a valid input."""
    gz = tmp_path / "samples.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        for i in range(200):
            f.write(json.dumps({"problem_id": "p", "sample_idx": i, "completion": "x = 1\n" * 20}) + "\n")
    assert gz.stat().st_size < 4096
    body = f"""
        try:
            list(_sample_lines(Path({str(gz)!r})))
        except LetiError as e:
            print(f"leti: error: {{e}}", file=sys.stderr)
            sys.exit(2)
    """
    imports = "from leti.errors import LetiError\nfrom leti.evaluation.samples import _sample_lines"
    line = _one_line(_child(imports, body, limit=4096))
    assert line.startswith(f"leti: error: {gz}: cannot decompress into the temporary folder "), line
    assert "not a readable gzip file" not in line and "set TMPDIR" in line


def test_disk_sizes_below_a_gigabyte_are_in_megabytes():
    """check_disk said a small model's checkpoint "needs about 0.0 GB" with "0.0 GB free"."""
    from leti.errors import size_text

    assert size_text(2_000_000) == "2.0 MB" and size_text(450e6) == "450 MB" and size_text(5.25e9) == "5.2 GB"


def test_leti_exec_names_the_output_it_cannot_write(tmp_path):
    """`leti exec -o OUT` wrote OUT.partial with bare write()/flush(): the line was
    `leti: error: File too large; raise the file size limit ...`, naming no file."""
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "program": "x = 1\n", "pad": "y" * 3000}) + "\n" for i in range(8)))
    out = tmp_path / "out.jsonl"
    argv = ["exec", str(inp), "-o", str(out), "--workers", "1", "--unsafe-no-sandbox"]  # no bwrap needed
    line = _one_line(_child("from leti.cli import main, build_parser; build_parser()",
                            f"sys.exit(main({argv!r}))", limit=8192))
    assert line.startswith(f"leti: error: {out}.partial: File too large;"), line
    assert "raise the file size limit (ulimit -f)" in line and "run the same command again" not in line


def test_leti_evaluate_names_the_result_file_it_cannot_write(tmp_path):
    """`leti evaluate` appended executions.jsonl with bare write()/fsync(): the line was
    `leti: error: File too large; ...`, naming no file."""
    task = tmp_path / "toy.jsonl"
    task.write_text(json.dumps({"id": "inc", "prompt": "def inc(x):\n", "tests": "assert inc(1) == 2\n"}) + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"problem_id": "inc", "sample_idx": i, "completion": "    return x + 1\n"}) + "\n"
                               for i in range(40)))
    out = tmp_path / "out"
    argv = ["evaluate", "--task", f"jsonl:{task}", "--samples", str(samples), "--out", str(out),
            "--workers", "1", "--unsafe-no-sandbox"]
    line = _one_line(_child("from leti.cli import main, build_parser; build_parser()",
                            f"sys.exit(main({argv!r}))", limit=4096))
    assert line.startswith(f"leti: error: {out / 'executions.jsonl'}: File too large;"), line
    assert "raise the file size limit (ulimit -f)" in line and "run the same command again" in line
