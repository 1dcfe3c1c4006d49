"""Where leti keeps what it can rebuild: tokenized pretraining corpora (`pretrain/`) and the
demo's warm-start model (`warmstart/`)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$LETI_CACHE_DIR if set, else $XDG_CACHE_HOME/leti, else ~/.cache/leti; absolute (run
    configs record paths into it, and a relative one would name another folder elsewhere)."""
    if os.environ.get("LETI_CACHE_DIR"):
        return Path(os.path.abspath(os.path.expanduser(os.environ["LETI_CACHE_DIR"])))
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec says to ignore a relative XDG_CACHE_HOME
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "leti"
