"""One smoke test per subcommand of ``python -m detbal``, on tiny inputs.

The subcommands are read from the argparse parser itself, so a new subcommand
without a smoke test here fails :func:`test_every_subcommand_has_a_smoke_test`.
Each runs in-process through :func:`detbal.cli.main`; ``--help``/``--version`` and
one bad input also run as real child processes (one line on stderr, exit 2, no
traceback).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from servers.fake_openai import FakeServer

from support import CLAUDE4_CSV as CLAUDE
from support import child_env

from detbal.cli import build_parser, main

#: one ``IDEA`` answer for the fitting agent (one call per round): two ansatzes
FIT_ANSWER = ("IDEA 1\nREASONING: a straight line in log.\nANSATZ: param1*log_v_k_nu + param2\n\n"
              "IDEA 2\nREASONING: a saturating step.\nANSATZ: param1 + param2*tanh(param3*(log_v_k_nu - param4))")

#: every subcommand path (top level, or ``run TASK``) and the test that smokes it
SMOKED = {
    "run": "test_run_without_a_task_prints_its_help",
    "run words": "test_run_words_and_replay",
    "run fit": "test_run_fit",
    "runs": "test_run_words_and_replay",
    "analyze": "test_analyze_prints_the_result",
    "import": "test_import_export_synth",
    "export": "test_import_export_synth",
    "synth": "test_import_export_synth",
    "discover": "test_discover_and_compare",
    "compare": "test_discover_and_compare",
    "demo": "test_demo_help_and_bad_budget",
}


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every subcommand path of ``parser``: ``analyze``, ``run``, ``run words``, ..."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix}{name}"
                found |= {path} | subcommands(sub, path + " ")
    return found


def test_every_subcommand_has_a_smoke_test() -> None:
    names = subcommands(build_parser())
    assert {"analyze", "discover", "run words", "demo"} <= names  # the walk finds nested ones
    assert names == set(SMOKED), f"subcommands without a smoke test: {sorted(names - set(SMOKED))}"
    module = sys.modules[__name__]
    assert all(callable(getattr(module, test, None)) for test in SMOKED.values())


def test_help_and_version_in_a_child_process() -> None:
    from detbal import __version__

    version = subprocess.run([sys.executable, "-m", "detbal", "--version"], capture_output=True,
                             text=True, timeout=60, env=child_env())
    assert version.returncode == 0 and version.stdout.strip() == f"detbal {__version__}"
    helped = subprocess.run([sys.executable, "-m", "detbal", "--help"], capture_output=True, text=True,
                            timeout=60, env=child_env())
    assert helped.returncode == 0
    for name in {n.split()[0] for n in SMOKED}:
        assert name in helped.stdout
    bad = subprocess.run([sys.executable, "-m", "detbal", "analyze", "nowhere.csv", "--out", "o"],
                         capture_output=True, text=True, timeout=60, env=child_env())
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert bad.stderr.startswith("detbal: error:") and "nowhere.csv" in bad.stderr


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("detbal: error:"), err
    assert all(n in err[0] for n in needles), err


def test_run_without_a_task_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run"])
    out = capsys.readouterr().out
    assert "words" in out and "fit" in out


def test_run_words_and_replay(fake_openai: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    live, replayed = tmp_path / "live.sqlite", tmp_path / "replay.sqlite"
    # one call at a time: with more, the prompt words follow the order calls finish in, and a
    # replay may then ask for a word more often than the live run did (and stop, rc 1)
    base = ["-q", "run", "words", "--concurrency", "1", "--seed", "3", "--attempts", "10"]
    assert main([*base, "--store", str(live), "--backend", "openai", "--base-url", fake_openai.url,
                 "--model", "ok"]) == 0
    assert main([*base, "--store", str(replayed), "--backend", "replay", "--replay-from", str(live)]) == 0
    capsys.readouterr()
    assert main(["runs", str(replayed), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["attempts"] == 10 and run["backend"] == "replay"
    assert main(["runs", str(live)]) == 0
    assert "10" in capsys.readouterr().out
    assert main(["-q", "run", "words", "--store", str(tmp_path / "x.sqlite"), "--backend", "replay",
                 "--attempts", "0"]) == 2
    _one_line_error(capsys)
    assert main(["runs", str(tmp_path / "none.sqlite")]) == 2
    _one_line_error(capsys, "none.sqlite")


def test_run_fit(fake_openai: FakeServer, nikuradse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    store = tmp_path / "fit.sqlite"
    srv = fake_openai.reset(answers=(FIT_ANSWER,))
    code = main(["-q", "run", "fit", "--store", str(store), "--backend", "openai", "--base-url", srv.url,
                 "--model", "ok", "--fit-mode", "one-call", "--islands", "1", "--cycles", "1",
                 "--rounds", "2", "--per-round", "2", "--population", "2", "--starts", "2",
                 "--data-dir", str(nikuradse), "--seed", "1"])
    assert code == 0
    assert "best score" in capsys.readouterr().out
    from detbal.store import RunStore

    with RunStore(store, create=False) as s:
        (summary,) = s.run_summaries()
    assert summary.attempts == 4 and summary.run.task == "fit"
    assert main(["-q", "run", "fit", "--store", str(tmp_path / "y.sqlite"), "--backend", "replay",
                 "--islands", "0"]) == 2
    _one_line_error(capsys, "islands")


def test_analyze_prints_the_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The printed summary is the AnalysisResult's: the Claude-4 numbers, and summary.json agrees."""
    out = tmp_path / "a"
    assert main(["-q", "analyze", str(CLAUDE), "--out", str(out), "--n0", "uniform", "--attempts", "20000",
                 "--bootstrap", "0", "--test-simulations", "0", "--no-figures"]) == 0
    printed = capsys.readouterr().out.splitlines()
    s = json.loads((out / "summary.json").read_text())
    assert printed[0] == "5 states, 7 transitions, 2e+04 attempts"
    assert printed[1] == f"verdict: {s['verdict']}" and s["verdict"].startswith("untestable")
    assert printed[2] == "global test: 2 pairs, df 0, chi2/df n/a, p n/a"
    assert printed[3] == "paper 3-cycle test: 0 triplets, chi2/ndf n/a"
    assert f"identifiable states: {s['potential']['identifiable_states']};" in printed[-1]
    assert printed[-1].endswith("potential.csv")  # --no-figures: no report.md
    assert main(["-q", "analyze", str(CLAUDE), "--out", str(tmp_path / "b"), "--bootstrap", "-1"]) == 2
    _one_line_error(capsys, "--bootstrap")


def test_main_gives_back_the_garbage_collector_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A command collects less often while it runs (detbal.cli.GC_THRESHOLD) and leaves an
    embedding process's settings as they were, after success and after an error; a
    collector switched off by threshold 0 stays off."""
    import gc

    import detbal.analysis.cli as analysis_cli

    seen = []
    real = analysis_cli._analyze

    def spy(args: argparse.Namespace, ui: object) -> int:
        seen.append(gc.get_threshold())
        return real(args, ui)

    monkeypatch.setattr(analysis_cli, "_analyze", spy)
    before = gc.get_threshold()
    try:
        for first in (700, 0):
            gc.set_threshold(first, 10, 10)
            for extra, code in (([], 0), (["--bootstrap", "-1"], 2)):
                assert main(["-q", "analyze", str(CLAUDE), "--out", str(tmp_path / "g"), "--bootstrap", "0",
                             "--test-simulations", "0", "--no-figures", *extra]) == code
                assert gc.get_threshold() == (first, 10, 10)
                assert seen.pop()[0] == (20_000 if first else 0)
    finally:
        gc.set_threshold(*before)
    capsys.readouterr()


def test_import_export_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = tmp_path / "chain.csv"
    assert main(["-q", "synth", "--out", str(chain), "--states", "12", "--transitions", "300"]) == 0
    assert (tmp_path / "chain_true_potential.csv").is_file()
    store = tmp_path / "s.sqlite"
    assert main(["-q", "import", str(chain), "--store", str(store)]) == 0
    assert main(["-q", "import", str(CLAUDE), "--store", str(store)]) == 0
    assert "as run 2" in capsys.readouterr().out
    exported = tmp_path / "counts.csv"
    assert main(["-q", "export", str(store), "--out", str(exported)]) == 0
    with exported.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with CLAUDE.open(newline="") as fh:
        claude = sum(int(r["count"]) for r in csv.DictReader(fh))
    assert sum(float(r["count"]) for r in rows) == 300 + claude
    for argv, needle in ((["synth", "--out", str(tmp_path / "x.csv"), "--states", "2"], "--states"),
                         (["import", str(tmp_path / "missing.csv"), "--store", str(store)], "missing.csv"),
                         (["export", str(tmp_path / "missing.sqlite"), "--out", str(exported)], "missing.sqlite")):
        assert main(["-q", *argv]) == 2
        _one_line_error(capsys, needle)


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run store sampled from a 30-state chain with V = 1.6 f1 - f2^2 (features stored per state)."""
    from support.stores import planted_store as write

    from detbal.systems import planted_chain

    return write(planted_chain(30, "1.6*f1 - f2**2", seed=0), tmp_path_factory.mktemp("cli") / "planted.sqlite")


def test_discover_and_compare(planted_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both print from the typed results: the first line is the study's, the rest the comparison's."""
    out = tmp_path / "gp"
    assert main(["-q", "discover", str(planted_store), "--engine", "gp", "--population", "12",
                 "--generations", "2", "--holdout", "0", "--no-figures", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    s = json.loads((out / "summary.json").read_text())
    k = s["kernel"]
    assert printed[0] == f"{k['states']} states, {k['edges']} edges; numeric action S = {k['numeric_action']:.4g}"
    assert printed[1].startswith(f"best formula (complexity {s['best']['complexity']}): S = {s['best']['action']:.4g}")
    assert printed[2] == f"  V = {s['best']['sympy']}"
    assert printed[-1] == f"wrote {out}"
    cmp_out = tmp_path / "cmp"
    assert main(["-q", "compare", str(planted_store), "--potential", "1.6*stored_f1 - stored_f2**2",
                 "--no-figures", "--out", str(cmp_out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    c = json.loads((cmp_out / "summary.json").read_text())["comparison"]
    assert not any(line.startswith("best formula") for line in printed)
    assert printed[1].startswith(f"Pearson r = {c['pearson']:.3f}") and c["pearson"] > 0.9
    assert printed[2].startswith(f"held-out log-likelihood per transition: numeric {c['heldout']['numeric']:.3f}")
    assert main(["-q", "discover", str(planted_store), "--engine", "gp", "--beta", "0",
                 "--out", str(tmp_path / "x")]) == 2
    _one_line_error(capsys, "--beta")
    assert main(["-q", "compare", str(planted_store), "--potential", "no_such_feature",
                 "--out", str(tmp_path / "y")]) == 2
    _one_line_error(capsys, "no_such_feature")


def test_demo_help_and_bad_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    assert "--words-attempts" in capsys.readouterr().out
    assert main(["-q", "demo", "--out", str(tmp_path / "d"), "--fit-attempts", "0"]) == 2
    _one_line_error(capsys, "fit_attempts")
    assert not (tmp_path / "d").exists()


def test_printed_numbers_are_not_nan_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Undefined numbers print as n/a (never 'nan' or 'None') on a chain with cycles too."""
    chain = tmp_path / "c.csv"
    assert main(["-q", "synth", "--out", str(chain), "--states", "30", "--transitions", "1500"]) == 0
    capsys.readouterr()
    assert main(["-q", "analyze", str(chain), "--out", str(tmp_path / "o"), "--bootstrap", "0",
                 "--test-simulations", "9", "--no-figures"]) == 0
    text = capsys.readouterr().out
    assert "nan" not in text and "None" not in text
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    g = s["detailed_balance"]["global"]
    assert f"global test: {g['n_pairs']} pairs, df {g['df']}, chi2/df {g['chi2_per_df']:.3g}" in text
    assert math.isfinite(g["chi2_per_df"])
