"""What `python main.py` itself prints for a program, trimmed the way leti trims feedback: for the
tests that compare leti's feedback with the interpreter's own (test_feedback_chain.py,
test_feedback_exception_groups.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_MARGIN = re.compile(r"^((?: *[|+] )?)(.*)$")  # a group's indentation and "| " (or "+ ") margin
_FRAME = re.compile(r'  File "(.*)", line (\d+), in (.*)$')
_CARETS = re.compile(r"^ *[~^]+ *$")


def cpython(source: str, tmp_path: Path) -> str:
    """What `python main.py` prints for `source`, trimmed as leti trims: only frames of main.py
    (named as leti names it), no caret lines; inside exception groups, after each line's margin."""
    main = tmp_path / "main.py"
    main.write_text(source)
    err = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60).stderr
    out, in_frame, keep = [], False, False
    for line in err.rstrip("\n").split("\n"):
        margin, text = _MARGIN.match(line).groups()
        m = _FRAME.match(text)
        if m:
            in_frame, keep = True, m[1] in ("main.py", str(main))
            if keep:
                out.append(f'{margin}  File "main.py", line {m[2]}, in {m[3]}')
        elif in_frame and text.startswith("    "):
            if keep and not _CARETS.match(text):
                out.append(line)
        else:
            in_frame = False
            out.append(line)
    return "\n".join(out)
