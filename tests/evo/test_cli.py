"""``detbal discover`` and ``detbal compare`` end to end, bad input, and the PySR skip path."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.stores import planted_store

from detbal.cli import main
from detbal.evo.pareto import COLUMNS

@pytest.fixture(scope="module")
def store(planted_study, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared planted study (V = 1.6 f1 - f2^2) as a run store; features stored per state."""
    return planted_store(planted_study[0], tmp_path_factory.mktemp("evo") / "planted.sqlite")


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_discover_gp_writes_table_summary_and_figures(store: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gp"
    code = main(["-q", "discover", str(store), "--engine", "gp", "--out", str(out), "--seed", "1",
                 "--generations", "30", "--population", "200"])
    assert code == 0
    s = _summary(out)
    assert s["status"] == "ok" and s["engine"] == "gp"
    assert s["best"]["excess"] < 0.05
    assert s["comparison"]["pearson"] > 0.9
    assert set(s["files"]) >= {"summary.json", "formulas.csv", "potentials.csv", "compare.png",
                               "subgraph.png", "pareto.png"}
    for name in s["files"]:
        assert (out / name).stat().st_size > 0
    rows = _rows(out / "formulas.csv")
    assert tuple(rows[0]) == COLUMNS and all(r["engine"] == "gp" for r in rows)
    assert s["gp"]["evaluations"] > 0 and len(s["gp"]["history"]) == s["gp"]["generations"] + 1
    assert "stored_f1" in s["best"]["sympy"]
    assert "numeric action" in capsys.readouterr().out
    # the best formula of the table can be compared again
    out2 = tmp_path / "again"
    assert main(["-q", "compare", str(store), "--potential", str(out / "formulas.csv"),
                 "--out", str(out2), "--no-figures"]) == 0
    assert _summary(out2)["comparison"]["pearson"] == pytest.approx(s["comparison"]["pearson"])


def test_discover_operon_smoke(store: Path, tmp_path: Path) -> None:
    """The Julia-free regression engine from the command line: same files, same summary."""
    pytest.importorskip("pyoperon")
    out = tmp_path / "operon"
    assert main(["-q", "discover", str(store), "--engine", "operon", "--out", str(out),
                 "--generations", "10", "--population", "60", "--no-figures"]) == 0
    s = _summary(out)
    assert s["engine"] == "operon" and s["settings"]["population"] == 60
    assert s["comparison"]["pearson"] > 0.8
    rows = _rows(out / "formulas.csv")
    assert rows and all(r["engine"] == "operon" for r in rows)
    code = main(["-q", "discover", str(store), "--engine", "operon", "--operators", "neg",
                 "--out", str(tmp_path / "bad")])
    assert code == 2


@pytest.mark.parametrize("potential", ["1.6*stored_f1 - stored_f2**2", "potentials"])
def test_compare_formula_or_table(store: Path, planted_study, tmp_path: Path, potential: str) -> None:
    if potential == "potentials":
        table = tmp_path / "truth.csv"
        pc, _ = planted_study
        table.write_text("state,V\n" + "".join(f"{s},{v}\n" for s, v in zip(pc.counts.states, pc.V)))
        potential = str(table)
    out = tmp_path / "cmp"
    assert main(["-q", "compare", str(store), "--potential", potential, "--out", str(out)]) == 0
    s = _summary(out)
    c = s["comparison"]
    assert c["pearson"] > 0.9 and c["spearman"] > 0.9
    assert c["heldout"]["explicit"] > c["heldout"]["zero"]
    assert (out / "compare.png").exists() and (out / "subgraph.png").exists()
    pot = _rows(out / "potentials.csv")
    assert len(pot) == 60 and all(r["V_explicit"] for r in pot)
    table_rows = _rows(out / "formulas.csv")
    assert len(table_rows) == (0 if potential.endswith(".csv") else 1)


def test_discover_family49_on_ansatz_states(tmp_path: Path) -> None:
    states = ["param1*log_v_k_nu + param2", "exp(param1*log_v_k_nu) + param2",
              "tanh(param1*log_v_k_nu) + param2", "param1/(1 + exp(param2*log_v_k_nu)) + param3",
              "sin(param1)*param2"]
    rng = np.random.default_rng(0)
    lines = ["source,target,count"]
    for i, a in enumerate(states):
        for j, b in enumerate(states):
            if i != j:
                lines.append(f'"{a}","{b}",{int(rng.integers(1, 20))}')
    data = tmp_path / "ansatz.csv"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "fam"
    assert main(["-q", "discover", str(data), "--engine", "family49", "--out", str(out),
                 "--max-evals", "40", "--holdout", "0", "--no-figures"]) == 0
    s = _summary(out)
    assert s["family49"]["action"] <= s["family49"]["action_default"] + 1e-12
    rows = _rows(out / "formulas.csv")
    assert [r["engine"] for r in rows] == ["family49", "family49"]


@pytest.mark.parametrize("argv,needle", [
    (["discover", "{missing}", "--out", "{out}"], "no such file"),
    (["compare", "{store}", "--potential", "stored_f1 +* (", "--out", "{out}"], "cannot parse"),
    (["compare", "{store}", "--potential", "nonsense_feature", "--out", "{out}"], "unknown name"),
    (["compare", "{store}", "--potential", "{missing}.csv", "--out", "{out}"], "no such file"),
    (["compare", "{store}", "--potential", "f1", "--out", "{out}", "--holdout", "1.5"], "--holdout"),
    (["discover", "{store}", "--engine", "gp", "--population", "2", "--out", "{out}"], "population"),
    (["discover", "{store}", "--engine", "family49", "--out", "{out}"], "ansatz"),
])
def test_bad_input_is_one_line_and_exit_2(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          argv: list[str], needle: str) -> None:
    args = [a.format(store=store, out=tmp_path / "o", missing=tmp_path / "nope") for a in argv]
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("detbal: error:") and needle in err[0]


def test_pysr_engine_is_skipped_with_a_clear_message(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "pysr"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "detbal.cli", "discover", str(store), "--engine", "pysr",
                          "--out", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 3
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert "install Julia >= 1.10 and `pip install pysr`" in lines[0]
    assert _summary(out)["status"] == "skipped"


def test_pysr_module_does_not_import_pysr() -> None:
    code = ("import sys, detbal.evo.pysr_engine as m; s = m.probe(timeout=5); "
            "assert 'pysr' not in sys.modules and 'juliacall' not in sys.modules; print(s.message)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "pip install pysr" in res.stdout or "PySR available" in res.stdout


def test_probe_names_julia_when_pysr_is_present_but_julia_is_not(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    import importlib.util

    from detbal.evo import pysr_engine

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "pysr" else real(name, *a))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JULIA", raising=False)
    monkeypatch.delenv("PYTHON_JULIAPKG_EXE", raising=False)
    status = pysr_engine.probe(timeout=5)
    assert not status.available and "Julia" in status.reason
    with pytest.raises(pysr_engine.PySRUnavailable, match="install Julia"):
        pysr_engine.require(timeout=5)
    assert pysr_engine.offline_env("/x/julia")["PYTHON_JULIAPKG_OFFLINE"] == "yes"


def test_help_lists_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["discover", "--help"])
    text = capsys.readouterr().out
    for flag in ("--engine", "--scheduler", "--generations", "--population", "--n0", "--kernel", "--mode"):
        assert flag in text
