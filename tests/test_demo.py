"""The main job end to end: ``detbal demo`` on the real embedded model with tiny budgets.

Both studies run through ``detbal run words|fit --backend local`` (constrained decoding
by default), are analysed, and the README in the output folder reports the numbers
of the stores and summaries; a second invocation continues the stores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("deap")

from detbal import demo  # noqa: E402
from detbal.cli import main  # noqa: E402
from detbal.errors import DetbalError  # noqa: E402
from detbal.store import RunStore  # noqa: E402
from support import CLAUDE4_CSV  # noqa: E402

TINY = ["--gp-population", "8", "--gp-generations", "1", "--family49-evals", "20",
        "--bootstrap", "0", "--test-simulations", "10", "--instances", "1", "--concurrency", "2"]


def _run_summary(store: Path):
    with RunStore(store, create=False) as s:
        (summary,) = s.run_summaries()  # one run per study, however often the demo ran
        seqs = [r["seq"] for r in s.iter_attempts()]
    return summary, seqs


def _check_readme(out: Path, words: int, fit: int) -> str:
    readme = (out / "README.md").read_text(encoding="utf-8")
    headline = json.loads((out / "demo-summary.json").read_text())["studies"]
    assert [r["attempts"] for r in headline["words"]["runs"]] == [words]
    assert [r["attempts"] for r in headline["fit"]["runs"]] == [fit]
    assert set(headline["fit"]["timings"]) >= {"agent", "analysis", "gp", "family49"}
    assert "## 1. Conditioned word generation (strict)" in readme
    assert "## 2. Symbolic fitting of Nikuradse's data" in readme
    for study, n in (("words", words), ("fit", fit)):
        summary, seqs = _run_summary(out / f"{study}.sqlite")
        assert summary.attempts == n and sorted(seqs) == list(range(n))  # nothing lost or duplicated
        assert (f"{n} attempts, {summary.transitions} transitions to a new valid state,"
                f" {summary.valid_states} distinct valid states") in readme
        assert summary.run.config["constrain"] is True  # the local backend's default
        folder = out / f"{study}-analysis"
        if (folder / "summary.json").exists():
            s = json.loads((folder / "summary.json").read_text())
            assert f"**Verdict: {s['verdict']}.**" in readme
            assert f"kernel: {s['data']['states']} states, {s['data']['edges']} observed transitions" in readme
            for name in s.get("figures", {}).values():  # relative links to real files
                if f"]({study}-analysis/{name})" in readme:
                    assert (folder / name).is_file()
        else:
            assert "No analysis yet" in readme
    for engine in ("gp", "family49"):
        path = out / f"fit-{engine}" / "summary.json"
        if path.exists():
            s = json.loads(path.read_text())
            c = s["comparison"]
            if c["compared"]:
                assert f"Spearman rho = {c['spearman']:.3g}" in readme
            else:
                assert "no state has an identifiable numeric potential yet" in readme
            down = c["direction"]["explicit"]["frac_down"]
            assert (f"{down:.0%} go downhill" if down is not None else "n/a go downhill") in readme
            if engine == "gp":
                assert f"`V = {s['best']['sympy']}`" in readme
    return readme


@pytest.mark.slow
def test_demo_runs_both_studies_and_resumes(smollm2, tmp_path, capsys, shared_dir) -> None:
    out = tmp_path / "demo"
    first = ["-q", "demo", "--out", str(out), "--words-attempts", "16", "--fit-attempts", "6", *TINY]
    assert main(first) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'README.md'}" in printed
    _check_readme(out, 16, 6)
    config = json.loads((out / "demo-config.json").read_text())
    assert config["words_command"][:3] == ["detbal", "run", "words"]
    assert config["fit_command"][:3] == ["detbal", "run", "fit"]
    assert "--backend" in config["fit_command"] and config["gp_population"] == 8

    # the same command again adds nothing; a larger budget continues the same runs
    assert main(first) == 0
    _check_readme(out, 16, 6)
    more = ["-q", "demo", "--out", str(out), "--words-attempts", "24", "--fit-attempts", "9", *TINY]
    assert main(more) == 0
    readme = _check_readme(out, 24, 9)
    assert "--words-attempts 48 --fit-attempts 18" in readme  # how to continue, from this budget


def test_demo_rejects_a_bad_budget(tmp_path, capsys) -> None:
    assert main(["-q", "demo", "--out", str(tmp_path / "d"), "--words-attempts", "0"]) == 2
    err = capsys.readouterr().err
    assert "words_attempts must be at least 1" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # nothing written
    for bad, message in (({"fit_select": "best"}, "fit_select must be one of uniform, potential, walk"),
                         ({"fit_grammar_depth": 4}, "fit_grammar_depth must be 1, 2 or 3")):
        with pytest.raises(DetbalError, match=message):
            demo.DemoConfig(out=str(tmp_path / "d"), **bad)
    # the default fitting study walks the compact grammar on two islands
    argv = demo.DemoConfig(out=str(tmp_path / "d")).fit_argv()
    assert argv[argv.index("--select") + 1] == "walk" and argv[argv.index("--islands") + 1] == "2"
    assert argv[argv.index("--grammar-depth") + 1] == argv[argv.index("--grammar-terms") + 1] == "1"


def _tree_store(path: Path) -> Path:
    """Ansatz transitions without a single cycle; the stored score rises along every edge."""
    from detbal.store import Attempt

    chain = ["param1*log_v_k_nu + param2", "param1*log_v_k_nu**2 + param2",
             "param1*sqrt(abs(log_v_k_nu)) + param2", "param1*exp(log_v_k_nu) + param2",
             "param1*log(abs(log_v_k_nu)) + param2*log_v_k_nu", "param1*tanh(log_v_k_nu) + param2"]
    attempts = []
    for i, src in enumerate(chain[:-1]):
        for j, dst in enumerate(chain[i + 1:i + 3]):
            attempts.append(Attempt(source=src, target=dst, count=3 - j,
                                    target_features={"score": 20.0 + 5 * chain.index(dst)}))
    with RunStore(path) as st:
        st.record_attempts(st.create_run("fit", "m", "none", {}), attempts)
    return path


def test_explicit_potential_of_a_study_without_cycles(tmp_path) -> None:
    """The demo fits explicit potentials even before any cycle is observed (only the
    comparison with the numeric potential needs one); plain discover still refuses."""
    from detbal.evo.discover import discover_run

    store = _tree_store(tmp_path / "tree.sqlite")
    with pytest.raises(DetbalError, match="no state has an identifiable potential"):
        discover_run(store, tmp_path / "strict", engine="family49", kind="ansatz", max_evals=20)
    res = discover_run(store, tmp_path / "gp", engine="gp", kind="ansatz", population=20, generations=3,
                       targets="all", require_identifiable=False, seed=1)
    assert not res.study.fit.identifiable.any() and len(res.kernel.src) == 9  # every edge out of a source
    c = res.compare()
    assert c.compared == 0 and math.isnan(c.pearson)
    assert c.metrics["direction"]["explicit"]["frac_down"] == 1.0  # score rises along every edge: all downhill
    assert (tmp_path / "gp" / "formulas.csv").exists()
    written = json.loads((tmp_path / "gp" / "summary.json").read_text())
    assert written["kernel"]["identifiable"] == 0 and written["comparison"]["pearson"] is None
    assert written["best"]["sympy"] == res.best.sympy


@pytest.mark.slow
def test_a_study_that_cannot_run_keeps_the_other_and_says_why(smollm2, tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "fit.sqlite").write_text("not a database\n")  # the fitting study's store is damaged
    assert main(["-q", "demo", "--out", str(out), "--words-attempts", "6", *TINY]) == 2
    assert "the fit study could not run" in capsys.readouterr().out
    readme = (out / "README.md").read_text()
    assert "**Incomplete: the fit study could not run:" in readme and "not a detbal run store" in readme
    summary, _ = _run_summary(out / "words.sqlite")
    assert summary.attempts == 6 and "6 attempts" in readme  # the word study is reported
    assert (out / "fit.sqlite").read_text() == "not a database\n"  # no damage


def test_readme_and_headline_come_from_the_typed_results(tmp_path) -> None:
    """The README and demo-summary.json are written from AnalysisResult/DiscoveryResult objects,
    not by reading summary.json or potential.csv back: with those files gone they are the same."""
    from detbal import demo
    from detbal.analysis.result import AnalysisResult
    from detbal.evo.discover import DiscoveryResult
    from detbal.io import import_into_store

    config = demo.DemoConfig(out=str(tmp_path), bootstrap=0, test_simulations=9, gp_population=8,
                             gp_generations=1, family49_evals=20)
    with RunStore(config.store("words")) as store:  # the paper's Claude-4 counts as the word study
        import_into_store(CLAUDE4_CSV, store)
    _tree_store(config.store("fit"))  # ansatz states without a cycle
    studies = {name: demo.StudyResult(name, config.store(name), ["run", name]) for name in ("words", "fit")}
    for name, study in studies.items():
        study.runs = demo._runs(study.store)
        study.analysis_result, study.analysis_error = demo._analyze(
            study.store, tmp_path / f"{name}-analysis", config, None, triplet_min_count=demo.TRIPLET_CUT[name])
    fit = studies["fit"]
    fit.discoveries["gp"] = demo._discover(fit.store, tmp_path / "fit-gp", "gp", config, None)
    words = studies["words"].analysis_result
    assert isinstance(words, AnalysisResult) and isinstance(fit.discoveries["gp"], DiscoveryResult)
    for folder in ("words-analysis", "fit-analysis", "fit-gp"):
        for name in ("summary.json", "potential.csv", "potentials.csv"):
            (tmp_path / folder / name).unlink(missing_ok=True)
    readme = demo.write_demo_readme(tmp_path, config, studies, seconds=1.0).read_text()
    assert f"**Verdict: {words.verdict}.**" in readme and words.verdict.startswith("untestable")
    assert "- kernel: 5 states, 7 observed transitions (7 kept), 5 states used as a source" in readme
    assert "- global cycle test: 2 pairs seen both ways, df 0, chi2/df n/a, p = n/a" in readme
    v = words.potential.value
    lowest = ", ".join(f"`{s}` ({v(s):+.2f})" for s in ("ATTITUDE", "PERSONAL", "PROBLEMS"))
    assert f"- lowest beta V (where the agent settles): {lowest}\n" in readme  # TURKEY, BUZZY flagged
    best = fit.discoveries["gp"].best
    assert f"best formula `V = {best.sympy}` (complexity {best.complexity})" in readme
    assert "no state has an identifiable numeric potential yet" in readme
    headline = demo._demo_summary(studies, 1.0, None)["studies"]
    assert headline["words"]["verdict"] == words.verdict
    assert headline["words"]["data"] == words.to_dict()["data"]
    assert headline["fit"]["gp"]["best"] == best.sympy and headline["fit"]["gp"]["pearson"] is None
