"""The LeTI loop: `run(cfg, run_dir, mode="leti" | "sft")` runs or resumes a run directory
(layout documented in leti.loop.rundir)."""

from leti.loop.rundir import RunDir
from leti.loop.runner import run

__all__ = ["RunDir", "run"]
