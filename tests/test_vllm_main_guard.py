"""A script that starts leti's vLLM sampler without an `if __name__ == "__main__":` guard: vLLM
starts its engine processes with spawn, which re-runs the script in each. The process re-running
it is refused in one line, and the caller's engine-start error names the guard rather than only
vLLM's memory setting. No vLLM needed: multiprocessing's spawn re-runs a script the same way."""

from __future__ import annotations

import subprocess
import sys

from leti.sampling.vllm import _script, start_failure_hint

UNGUARDED = """\
import multiprocessing
from leti.sampling import vllm

vllm.refuse_unguarded_main()  # where VLLMEngine starts an engine
print("script:", vllm._script())
child = multiprocessing.get_context("spawn").Process(target=print)
child.start()
child.join()
print("child exit code:", child.exitcode)
"""


def test_a_spawned_process_re_running_an_unguarded_script_is_refused(tmp_path):
    script = tmp_path / "sample.py"
    script.write_text(UNGUARDED)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the script's own process goes on; the one re-running it stops at the engine start
    assert proc.stdout.splitlines() == [f"script: {script}", "child exit code: 1"]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"leti: error: {script} started a vLLM engine while a new process was re-running it: put the script's code "
        'under `if __name__ == "__main__":`')
    assert "Traceback" not in proc.stderr


def test_the_engine_start_error_names_the_guard_only_for_a_script():
    guard = 'if /x/sample.py runs leti outside `if __name__ == "__main__":`, put its code under that guard'
    ram = "sampling.vllm.gpu_memory_utilization is the share of RAM"
    failed = RuntimeError("Engine core initialization failed")
    assert guard in start_failure_hint(failed, 1, "/x/sample.py") and ram not in start_failure_hint(failed, 1, "/x/sample.py")
    assert guard in start_failure_hint(failed, 0, "/x/sample.py") and ram in start_failure_hint(failed, 0, "/x/sample.py")
    assert start_failure_hint(failed, 0, None).startswith(f"; on vLLM's CPU build {ram}")
    assert start_failure_hint(failed, 1, None) == ""
    assert start_failure_hint(ValueError("unsupported architecture"), 0, "/x/sample.py") == ""  # vLLM's own words
    # under pytest (a console script in the environment's bin/, or python -m pytest) no script is named
    assert _script() is None
