"""``detbal analyze`` end to end: the paper's worked example, outputs, and bad input."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from detbal.cli import main

CLAUDE = """source,target,count
ATTITUDE,PERSONAL,66
ATTITUDE,PROBLEMS,20
TURKEY,ATTITUDE,4122
PERSONAL,ATTITUDE,3879
PROBLEMS,ATTITUDE,3558
BUZZY,ATTITUDE,3859
BUZZY,TURKEY,238
"""


def _potential(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as fh:
        return {row["state"]: row for row in csv.DictReader(fh)}


@pytest.mark.parametrize("kernel", ["exp", "softplus"])
@pytest.mark.parametrize("gauge", ["ATTITUDE", "mean"])
def test_claude_worked_example(tmp_path: Path, kernel: str, gauge: str) -> None:
    data = tmp_path / "claude.csv"
    data.write_text(CLAUDE)
    out = tmp_path / "out"
    code = main(["-q", "analyze", str(data), "--out", str(out), "--n0", "uniform",
                 "--attempts", "20000", "--kernel", kernel, "--gauge", gauge,
                 "--bootstrap", "20", "--test-simulations", "0", "--no-figures"])
    assert code == 0
    pot = _potential(out / "potential.csv")
    v_att = float(pot["ATTITUDE"]["V"])
    assert float(pot["PERSONAL"]["V"]) - v_att == pytest.approx(math.log(3879 / 66), abs=0.005)
    assert float(pot["PROBLEMS"]["V"]) - v_att == pytest.approx(math.log(3558 / 20), abs=0.005)
    assert round(float(pot["PERSONAL"]["V"]) - v_att, 2) == 4.07
    assert round(float(pot["PROBLEMS"]["V"]) - v_att, 2) == 5.18
    for beyond in ("TURKEY", "BUZZY"):
        assert pot[beyond]["V"] == ""
        assert pot[beyond]["flag"] != ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["attempts"] == 20000
    assert summary["settings"]["n0"] == "uniform"
    assert set(summary["timings"]) >= {"load", "potential", "balance_tests"}


def test_synthetic_report_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "chain.csv"
    assert main(["-q", "synth", "--out", str(data), "--states", "120", "--transitions", "8000"]) == 0
    out = tmp_path / "report"
    assert main(["-q", "analyze", str(data), "--out", str(out), "--bootstrap", "20",
                 "--test-simulations", "40"]) == 0
    printed = capsys.readouterr().out
    assert "verdict:" in printed
    summary = json.loads((out / "summary.json").read_text())
    for key in ("detailed_balance", "pair_test", "one_sided", "potential", "timings", "settings"):
        assert key in summary
    report = (out / "report.md").read_text()
    for name in summary["figures"].values():
        assert (out / name).stat().st_size > 1000
        assert f"({name})" in report
    assert {"triplets", "pairs", "histogram"} <= set(summary["figures"]) or summary[
        "detailed_balance"]["triplet_paper"]["n_triplets"] == 0
    # the recovered potential tracks the truth
    truth = _potential(tmp_path / "chain_true_potential.csv")
    est = {s: float(r["V"]) for s, r in _potential(out / "potential.csv").items() if r["V"]}
    import numpy as np

    a = np.array([est[s] for s in est])
    b = np.array([float(truth[s]["V"]) for s in est])
    assert np.corrcoef(a, b)[0, 1] > 0.9


def test_driven_chain_is_rejected_through_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "driven.csv"
    main(["-q", "synth", "--out", str(data), "--states", "60", "--transitions", "12000",
          "--drive", "1.5", "--degree", "5", "--scale", "1.0"])
    out = tmp_path / "o"
    main(["-q", "analyze", str(data), "--out", str(out), "--bootstrap", "0",
          "--test-simulations", "99", "--no-figures"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"].startswith("detailed balance rejected")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "empty file"),
        (b"from,to\na,b\n", "missing column"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
        (b'{"a": [', "malformed JSON"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, content: bytes | None, message: str) -> None:
    suffix = ".json" if content and content.startswith(b"{") else ".csv"
    path = tmp_path / f"input{suffix}"
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "detbal.cli", "analyze", str(path), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0] and str(path) in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_reference_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "claude.csv"
    data.write_text(CLAUDE)
    code = main(["-q", "analyze", str(data), "--out", str(tmp_path / "o"), "--gauge", "NOPE"])
    assert code == 2
    assert "NOPE" in capsys.readouterr().err


def test_import_then_analyze_store(tmp_path: Path) -> None:
    data = tmp_path / "claude.csv"
    data.write_text(CLAUDE)
    store = tmp_path / "study.sqlite"
    assert main(["-q", "import", str(data), "--store", str(store)]) == 0
    out = tmp_path / "o"
    assert main(["-q", "analyze", str(store), "--out", str(out), "--n0", "uniform",
                 "--attempts", "20000", "--gauge", "ATTITUDE", "--bootstrap", "0",
                 "--test-simulations", "0", "--no-figures"]) == 0
    pot = _potential(out / "potential.csv")
    assert float(pot["PERSONAL"]["V"]) == pytest.approx(math.log(3879 / 66), abs=0.005)
    exported = tmp_path / "counts.parquet"
    assert main(["-q", "export", str(store), "--out", str(exported)]) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(exported).to_pydict()
    assert sum(table["count"]) == 66 + 20 + 4122 + 3879 + 3558 + 3859 + 238


@pytest.mark.parametrize("kernel", ["exp", "softplus"])
def test_newton_and_lbfgs_reach_the_same_potential(tmp_path: Path, kernel: str) -> None:
    data = tmp_path / "chain.csv"
    main(["-q", "synth", "--out", str(data), "--states", "150", "--transitions", "6000"])
    pots = {}
    for solver in ("newton", "lbfgs"):
        out = tmp_path / solver
        assert main(["-q", "analyze", str(data), "--out", str(out), "--kernel", kernel,
                     "--solver", solver, "--bootstrap", "0", "--test-simulations", "0",
                     "--no-figures"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["settings"]["solver"] == solver
        pots[solver] = (_potential(out / "potential.csv"), summary["potential"]["action"])
    (a, sa), (b, sb) = pots["newton"], pots["lbfgs"]
    assert sa == pytest.approx(sb, rel=1e-7)
    assert sa <= sb * (1 + 1e-12)
    assert [r["flag"] for r in a.values()] == [r["flag"] for r in b.values()]
    for state, row in a.items():
        if row["V"]:
            assert float(row["V"]) == pytest.approx(float(b[state]["V"]), abs=1e-3)
