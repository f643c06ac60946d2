"""Package-level promises: a light import and a CLI with one subcommand per stage."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numba", "matplotlib", "openai", "llama_cpp", "deap", "pysr", "pyarrow", "dask", "scipy")


def test_import_detbal_is_light() -> None:
    code = (
        "import sys, detbal, detbal.cli, detbal.analysis, detbal.agents, detbal.evo;"
        "detbal.cli.build_parser();"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_lists_every_stage() -> None:
    out = subprocess.run([sys.executable, "-m", "detbal.cli", "--help"], capture_output=True,
                         text=True, check=True)
    for command in ("run", "analyze", "discover", "compare", "demo"):
        assert command in out.stdout


def test_cli_without_command_exits_non_zero() -> None:
    proc = subprocess.run([sys.executable, "-m", "detbal.cli"], capture_output=True, text=True)
    assert proc.returncode == 2
