"""README's Python snippet runs as written and prints the paper's number."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_readme_python_snippet_runs(tmp_path: Path) -> None:
    import matplotlib

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    backend = matplotlib.get_backend()
    code = code.replace('"datasets/', f'"{REPO}/datasets/')
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README
    finally:
        os.chdir(cwd)
        import matplotlib.pyplot as plt

        plt.close("all")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("untestable")
    assert round(float(lines[1]), 2) == 4.07
    for name in ("summary.json", "potential.csv", "report.md", "pairs.png"):
        assert (tmp_path / "claude-out" / name).exists()
    assert matplotlib.get_backend() == backend
