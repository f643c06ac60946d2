"""Helpers shared by the tests (importable as ``support``: ``tests`` is on pytest's pythonpath)."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
SHARED = REPO.parent / "shared"
DATA = TESTS / "data"
"""Small files recorded for the tests (the paper's counts, recorded model answers)."""
CLAUDE4_CSV = DATA / "claude4.csv"
"""The paper's Claude-4 word counts as a CSV (``source,target,count``)."""
NIKURADSE = SHARED / "datasets" / "nikuradse"
"""Nikuradse's measurements beside the checkout (skipped where absent)."""


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process that runs detbal (or a test file as a script)
    from this checkout; a dummy API key for the fake server."""
    path = os.pathsep.join([str(REPO), str(TESTS)])
    return dict(os.environ, OPENAI_API_KEY="sk-x", PYTHONPATH=path, **extra)
