"""Figures (PNG, matplotlib Agg) and the Markdown report of an analysis.

:func:`save_result` writes an :class:`~detbal.analysis.result.AnalysisResult`:
summary.json, potential.csv, the figures and report.md.  The figures are drawn by
:mod:`detbal.plot` (one drawing code path for notebooks and files) on
``matplotlib.figure.Figure`` directly (no pyplot, no backend switch, safe in a worker
thread), with fixed margins instead of ``tight_layout`` and plain-text labels instead
of mathtext (each cost about 0.1 s per figure).  :class:`FigureMaker` draws them in a
child process while the caller goes on computing (matplotlib's import alone is ~0.5 s):
:data:`FIGURES` says what each figure needs, and :func:`draw_ready` starts those whose
inputs exist.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detbal import plot
from detbal.io import export_table
from detbal.plot import MAX_POINTS  # noqa: F401 - re-exported
from detbal.plot import subset as _subset  # noqa: F401 - re-exported (tests)

if TYPE_CHECKING:
    from detbal.analysis.balance import OneSidedTest, PairTest, TripletTest
    from detbal.analysis.counts import Kernel
    from detbal.analysis.nonequilibrium import Nonequilibrium
    from detbal.analysis.potential import PotentialFit
    from detbal.analysis.pvalues import BootstrapPValue
    from detbal.analysis.result import AnalysisResult

#: largest state space drawn as a transition diagram
DIAGRAM_MAX_STATES = plot.LEVELS_MAX_STATES


def _figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure with one axes, rendered by Agg when saved."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def _finish(fig: Any, path: Path) -> Path:
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.8 / w, right=1 - 0.15 / w, bottom=0.55 / h, top=1 - 0.35 / h)
    fig.savefig(path, dpi=110)
    return path


def plot_triplets(test: TripletTest, path: Path) -> Path | None:
    """:func:`detbal.plot.triplets` to a file (None, and no file, without triplets)."""
    if test.n_triplets == 0:
        return None
    fig, ax = _figure((5, 5))
    plot.triplets(test, ax=ax)
    return _finish(fig, path)


def plot_pairs(test: PairTest, path: Path) -> Path | None:
    """:func:`detbal.plot.pairs` to a file (None without pairs)."""
    if test.n_pairs == 0:
        return None
    fig, ax = _figure((5, 5))
    plot.pairs(test, ax=ax)
    return _finish(fig, path)


def plot_one_sided(test: OneSidedTest, path: Path) -> Path | None:
    """:func:`detbal.plot.one_sided` to a file (None without one-sided pairs)."""
    if test.n_pairs == 0:
        return None
    fig, ax = _figure((5, 5))
    plot.one_sided(test, ax=ax)
    return _finish(fig, path)


def plot_histogram(beta_v: np.ndarray, mean: float, sigma: float, path: Path) -> Path | None:
    """Histogram of beta*V with the fitted Gaussian (:func:`detbal.plot.gaussian_histogram`)."""
    x = beta_v[np.isfinite(beta_v)]
    if len(x) < 2 or not math.isfinite(sigma) or sigma <= 0:
        return None
    fig, ax = _figure((6, 4))
    plot.gaussian_histogram(beta_v, mean, sigma, ax=ax)
    return _finish(fig, path)


def diagram_applies(kernel: Kernel) -> bool:
    """Whether :func:`plot_diagram` draws this kernel (1 to DIAGRAM_MAX_STATES kept states)."""
    return plot.levels_apply(kernel)


def plot_diagram(kernel: Kernel, fit: PotentialFit, path: Path) -> Path | None:
    """Transition diagram of a small state space on its potential levels (:func:`detbal.plot.levels`)."""
    if not diagram_applies(kernel):
        return None
    fig, ax = _figure((7, 5))
    plot.levels(None, ax=ax, kernel=kernel, potential=fit)
    return _finish(fig, path)


def plot_cycle_affinities(ne: Nonequilibrium, path: Path, top: int = 25) -> Path | None:
    """Left: z = A / sigma of every 3-cycle and basis cycle against N(0, 1); right: the
    cycles that break detailed balance most, A with its 95% interval."""
    if len(plot._z_scores(ne)) == 0:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5))
    ax, ax2 = fig.subplots(1, 2)
    plot.cycle_affinities(ne, ax=ax)
    plot.top_cycles(ne, ax=ax2, top=top)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92, wspace=0.35)
    fig.savefig(path, dpi=110)
    return path


def plot_estimators(least_action: PotentialFit, likelihood: PotentialFit, path: Path) -> Path | None:
    """Likelihood potential against the least-action one on the states both give a number."""
    both = np.flatnonzero(np.isfinite(least_action.V) & np.isfinite(likelihood.V))
    if len(both) < 2:
        return None
    fig, ax = _figure((5, 5))
    plot.estimators(None, ax=ax, least_action=least_action, likelihood=likelihood)
    return _finish(fig, path)


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: its file, caption, the result fields it needs, and how to
    draw it to a path from them (``args``: the plotting function's arguments before the path)."""

    key: str
    file: str
    caption: str
    needs: tuple[str, ...]
    draw: Callable[..., Path | None]
    args: Callable[[Mapping[str, Any]], tuple[Any, ...] | None]


#: every figure, in summary.json's order; ``args`` returning None: not drawn for this result
FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("triplets", "triplets.png", "Paper's 3-cycle test: backward vs forward log-path sums.",
               ("triplet_test",), plot_triplets, lambda r: (r["triplet_test"],)),
    FigureSpec("pairs", "pairs.png", "Pair test: log-ratio of the kernel against the potential difference.",
               ("pair_test",), plot_pairs, lambda r: (r["pair_test"],)),
    FigureSpec("one_sided", "one_sided.png", "One-sided pairs against their bound.",
               ("one_sided",), plot_one_sided, lambda r: (r["one_sided"],)),
    FigureSpec("histogram", "potential_histogram.png", "Distribution of beta V with its Gaussian fit.",
               ("kernel", "potential", "potential_summary"), plot_histogram,
               lambda r: (plot.histogram_values(r["kernel"], r["potential"]),
                          r["potential_summary"].mean_beta_v, r["potential_summary"].sigma_beta_v)),
    FigureSpec("diagram", "diagram.png", "Transition diagram on potential levels.",
               ("kernel", "potential"), plot_diagram,
               lambda r: (r["kernel"], light(r["potential"])) if diagram_applies(r["kernel"]) else None),
    FigureSpec("cycles", "cycle_affinities.png",
               "Cycle affinities: z-scores against balance, and the cycles breaking it most.",
               ("nonequilibrium",), plot_cycle_affinities, lambda r: (r["nonequilibrium"],)),
    FigureSpec("estimators", "estimators.png", "Likelihood potential against the least-action potential.",
               ("potential", "likelihood"), plot_estimators,
               lambda r: None if r["likelihood"] is None else
               (light(r["potential"]), light(r["likelihood"].potential))),
)
#: the order of the figures in report.md
REPORT_ORDER: tuple[str, ...] = ("triplets", "pairs", "one_sided", "histogram", "diagram", "estimators",
                                 "cycles")


def draw_ready(painter: FigureMaker, parts: Mapping[str, Any], out_dir: Path) -> None:
    """Start every figure whose inputs are in ``parts`` and that ``painter`` has not started."""
    for spec in FIGURES:
        if spec.key in painter.started or not all(parts.get(n) is not None or n == "likelihood"
                                                   for n in spec.needs):
            continue
        args = spec.args(parts)
        if args is None:
            painter.skip(spec.key)
        else:
            painter.draw(spec.key, spec.draw, *args, out_dir / spec.file)


def _parts(result: AnalysisResult) -> dict[str, Any]:
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}


def save_result(result: AnalysisResult, out_dir: Path, *, figures: bool = True,
                painter: FigureMaker | None = None) -> dict[str, Any]:
    """Write summary.json and potential.csv, and with ``figures`` the figures and report.md;
    returns the summary written.  ``painter``: a :class:`FigureMaker` that may already be
    drawing some figures (the rest are started here)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = result.to_dict()
    table = result.potential_table()
    export_table(table, list(table[0]) if table else ["state", "V", "stderr", "sources", "flag"],
                 out_dir / "potential.csv")
    drawn: dict[str, Path | None] = {}
    if figures:
        import time

        start = time.perf_counter()
        own = painter is None
        painter = FigureMaker(background=False) if painter is None else painter
        try:
            draw_ready(painter, _parts(result), out_dir)
            got = painter.results()
        finally:
            if own:
                painter.close()
        summary["timings"]["figures"] = round(time.perf_counter() - start, 4)
        drawn = {spec.key: got.get(spec.key) for spec in FIGURES
                 if spec.key in got or spec.key != "estimators"}
        summary["figures"] = {key: p.name for key, p in drawn.items() if p is not None}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if figures:
        write_report(out_dir, result, summary, drawn, table=table)
    return summary


def _preload() -> None:
    """Import matplotlib's figure machinery (run first in the child process)."""
    import matplotlib.backends.backend_agg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def light(fit: PotentialFit) -> PotentialFit:
    """``fit`` without its bootstrap replicates (what a figure needs, cheap to send)."""
    return dataclasses.replace(fit, bootstrap_V=None) if fit.bootstrap_V is not None else fit


class FigureMaker:
    """Draws figures (the ``plot_*`` functions here) in one child process, in the order asked.

    ``draw(key, plot_fn, *args)`` returns at once; :meth:`results` waits for all and
    gives ``{key: path or None}``.  With ``background=False``, or where no child
    process can be started, or should it die, figures are drawn here instead (same
    files).  The child is spawned (a fresh interpreter: no fork of a threaded
    process), so only use ``background`` from a ``__main__`` guarded program such as
    the ``detbal`` command.
    """

    def __init__(self, *, background: bool = True) -> None:
        self._pool: Any = None
        self._jobs: dict[str, tuple[Any, Callable[..., Path | None], tuple[Any, ...]]] = {}
        self._skipped: set[str] = set()
        if background:
            try:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
                self._pool.submit(_preload)
            except (OSError, ImportError, RuntimeError, ValueError):  # pragma: no cover - no processes
                self._pool = None

    @property
    def started(self) -> set[str]:
        """Keys drawn or being drawn, and those marked as not applying (:meth:`skip`)."""
        return set(self._jobs) | self._skipped

    def skip(self, key: str) -> None:
        """Mark ``key`` as not drawn for this result (so it is not started later)."""
        self._skipped.add(key)

    def draw(self, key: str, fn: Callable[..., Path | None], *args: Any) -> None:
        if self._pool is not None:
            try:
                self._jobs[key] = (self._pool.submit(fn, *args), fn, args)
                return
            except RuntimeError:  # pragma: no cover - pool broken or shut down
                self._pool = None
        self._jobs[key] = (None, fn, args)

    def results(self) -> dict[str, Path | None]:
        out: dict[str, Path | None] = {}
        for key, (future, fn, args) in self._jobs.items():
            if future is not None:
                try:
                    out[key] = future.result()
                    continue
                except Exception:  # noqa: BLE001 - child died or arguments would not pickle:
                    pass  # draw here (a genuine plotting error then surfaces from this call)
            out[key] = fn(*args)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> FigureMaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return "n/a" if not math.isfinite(x) else f"{x:.{digits}g}"
    return str(x)


def write_report(out_dir: Path, result: AnalysisResult, summary: Mapping[str, Any],
                 figures: Mapping[str, Path | None], *, table: list[dict[str, Any]] | None = None) -> Path:
    """report.md: settings, verdict, numbers, figures, lowest-potential states.

    ``summary``: ``result.to_dict()`` as written to summary.json (with the figures'
    timing); ``figures``: the files drawn, by :data:`FIGURES` key; ``table``:
    ``result.potential_table()`` where the caller has it already (formatting it again
    took ~40 ms at 7,708 states).
    """
    table = result.potential_table() if table is None else table
    lowest = sorted((r for r in table if r["flag"] == ""), key=lambda r: float(r["V"]))[:15]
    top_states = None if result.likelihood is not None else lowest
    side_by_side = lowest if result.likelihood is not None else None
    g, t, dev = result.global_test, result.triplet_test, result.deviance
    pt, o, s = result.pair_test, result.one_sided, result.potential_summary
    st, k = result.settings, result.kernel
    lines = [
        "# detbal analysis report", "",
        f"Input: `{result.input}`  " if result.input else "Input: counts given in memory  ",
        f"Settings: kernel `{st.penalty}`, beta = {st.beta}, N0 `{k.mode}`, min source count"
        f" {k.min_source_count}, bootstrap {st.bootstrap}, seed {st.seed}", "",
        f"Data: {k.n_states} states, {len(k.counts.src)} distinct transitions,"
        f" {_fmt(k.total_attempts)} attempts ({_fmt(summary['data']['escape_fraction'])}"
        f" escapes or self-loops), {k.n_sources} source states.", "",
        "## Detailed balance", "",
        f"**Verdict: {result.verdict}**", "",
        "| test | pairs / triplets | chi^2 / ndf | p-value |", "|---|---|---|---|",
        f"| global (all independent cycles, df = {g.df}) | {g.n_pairs} pairs | {_fmt(g.chi2_per_df)}"
        f" | {_p_phrase(g.p, g.p_value, g.n_bootstrap)}; asymptotic {_fmt(g.p_asymptotic)} |",
        f"| paper's 3-cycle test | {t.n_triplets} triplets | {_fmt(t.chi2_per_ndf)} |"
        f" {_p_phrase(t.p, t.p_value, 0)} |",
        *([] if dev is None else [
            f"| deviance G^2 of quasi-symmetry (df = {dev.df}) | {dev.n_pairs} pairs |"
            f" {_fmt(dev.deviance / dev.df if dev.df > 0 else math.nan)} | {_p_phrase(dev.p, dev.p_value, 0)};"
            f" asymptotic {_fmt(dev.p_asymptotic)} |"]),
        f"| pair test vs potential | {pt.n_pairs} pairs | {_fmt(pt.chi2_per_ndf)} | r = {_fmt(pt.pearson_r)} |",
        "",
        f"One-sided pairs: {o.n_pairs}, of which {_fmt(100 * o.fraction_within if o.n_pairs else math.nan)}%"
        " respect the bound V(f) - V(g) >= log(T(g<-f) N0(g)).", "",
        "The paper's 3-cycle statistic overstates variances (source counts cancel in a cycle) and"
        " shares edges between triplets, so its chi^2/ndf sits below 1 on reversible chains; the"
        " global test uses the multinomial variance and a parametric bootstrap under the fitted"
        " reversible kernel, so its p-value is calibrated.  The deviance test compares the"
        " quasi-symmetry (detailed-balance) likelihood with the free one over every pair both of"
        " whose states were sampled, one-way pairs included.  When no simulation is as extreme as"
        " the data, a bootstrap p-value is only bounded by 1/(R+1); the report then gives a tail"
        " estimate (a scaled chi^2 fitted by moments to the simulated statistics) beside the bound.", "",
        "## Least-action potential", "",
        f"Action S = {_fmt(s.action, 4)} (K(0) = {_fmt(s.k0, 4)}); width of beta*V over"
        f" {s.n_width_states} states sampled more than once: sigma = {_fmt(s.sigma_beta_v)},"
        f" expected minimal action K(0)/(sqrt(pi) sigma) = {_fmt(s.expected_action)}.",
        f"Of {s.n_strong_transitions} transitions with T > 0.05,"
        f" {_fmt(100 * s.downhill_fraction if s.n_strong_transitions else math.nan)}% go downhill in V.", "",
        "States: " + ", ".join(f"{flag}: {n}" for flag, n in sorted(s.flag_counts.items())) + ".",
        "Flagged states are beyond the measurable range (never entered, never left, on no"
        " observed cycle, in another component, or further than log(total attempts) from the"
        " median of the main component) and get no number in potential.csv.", "",
    ]
    lines += _likelihood_section(summary.get("likelihood_potential"), side_by_side)
    ne = result.nonequilibrium
    lines += _nonequilibrium_section({**ne.as_dict(), "top_cycles": ne.top_cycles(10, k.states)})
    if top_states and not side_by_side:
        lines += ["Lowest-potential identifiable states:", "", "| state | beta V | stderr | attempts |",
                  "|---|---|---|---|"]
        lines += [f"| `{r['state']}` | {r['V']} | {r['stderr'] or 'n/a'} | {r['sources']} |" for r in top_states]
        lines.append("")
    captions = {spec.key: spec.caption for spec in FIGURES}
    lines += ["## Figures", ""]
    for key in REPORT_ORDER:
        fig, caption = figures.get(key), captions[key]
        if fig is not None:
            lines += [f"![{caption}]({fig.name})", "", f"*{caption}*", ""]
    lines += ["## Timings (s)", "", " | ".join(f"{k}: {v:.2f}" for k, v in summary["timings"].items()), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _p_phrase(p: BootstrapPValue | None, value: float, n_simulations: int) -> str:
    """A bootstrap p-value as the report states it: simulated, or bound and tail estimate."""
    from detbal.analysis.pvalues import TAIL

    if p is not None and p.method == TAIL:
        return (f"{_fmt(value)} (tail estimate: scaled chi^2 fitted to {p.n_simulations} sims,"
                f" none as extreme; bound p < {_fmt(p.bound)})")
    return f"{_fmt(value)} (bootstrap, {n_simulations if p is None else p.n_simulations} sims)"


def _likelihood_section(d: dict[str, Any] | None, rows: list[dict[str, Any]] | None) -> list[str]:
    if not d:
        return []
    out = [
        "## Likelihood potential", "",
        "Count f -> g given the transitions between f and g either way is binomial with logit"
        " log(N0(f)/N0(g)) + beta (V(f) - V(g)); beta V has a Gaussian prior of width"
        f" {_fmt(d['prior_width_beta_V'])} chosen by {d['prior_width_method']}."
        f" {d['identifiable_states']} states get a number ({d['pairs']} pairs); median error"
        f" {_fmt(d['median_stderr_laplace'])} (Laplace posterior), {_fmt(d['median_stderr_bootstrap'])}"
        " (bootstrap spread of the estimate, smaller because of the shrinkage).",
        "States never sampled as a source, or sharing no transition with another sampled source,"
        " or outside the largest connected set of such pairs, are flagged and get no number:"
        " " + ", ".join(f"{k}: {v}" for k, v in sorted(d["flags"].items())) + ".", "",
    ]
    if rows:
        out += ["Lowest-potential states, both estimators side by side:", "",
                "| state | beta V least action | stderr | beta V likelihood | Laplace stderr |"
                " bootstrap stderr | attempts |", "|---|---|---|---|---|---|---|"]
        out += [f"| `{r['state']}` | {r['V_least_action'] or 'flagged'} | {r['stderr_least_action'] or 'n/a'} |"
                f" {r['V']} | {r['stderr'] or 'n/a'} | {r['stderr_bootstrap'] or 'n/a'} |"
                f" {r['sources']} |" for r in rows]
        out.append("")
    return out


def _nonequilibrium_section(d: dict[str, Any] | None) -> list[str]:
    if not d:
        return []
    rms = d["cycle_affinity_rms"]
    ep = d["entropy_production_per_step"]
    out = [
        "## How far from equilibrium", "",
        f"RMS cycle affinity over {d['three_cycles']} observed 3-cycles: {_fmt(rms['estimate'])}"
        f" (95% interval {_fmt(rms['ci_low'])} to {_fmt(rms['ci_high'])}; plug-in {_fmt(rms['plug_in'])},"
        " which carries the counting noise; 0 under detailed balance).",
        (f"Entropy production of the estimated kernel at stationarity: not computed"
         f" ({d['entropy_production_skipped']})." if d.get("entropy_production_skipped") else
         f"Entropy production of the estimated kernel at stationarity ({d['entropy_production_states']}"
         f" states): {_fmt(ep['estimate'])} per step (95% interval {_fmt(ep['ci_low'])} to"
         f" {_fmt(ep['ci_high'])}; plug-in {_fmt(ep['plug_in'])})."),
        f"Cycles beyond 3 sigma: {d['three_cycles_beyond_3_sigma']} of {d['three_cycles']} 3-cycles,"
        f" {d['basis_cycles_beyond_3_sigma']} of {d['basis_cycles']} basis cycles"
        " (about 0.3% expected by chance).", "",
    ]
    top = d.get("top_cycles") or []
    if top:
        out += ["Cycles breaking detailed balance most:", "", "| cycle | states | affinity A | sigma | A / sigma |",
                "|---|---|---|---|---|"]
        out += [f"| {r['kind']} ({r['length']}) | {' -> '.join(f'`{x}`' for x in r['states'])} |"
                f" {_fmt(r['affinity'])} | {_fmt(r['sigma'])} | {_fmt(r['affinity'] / r['sigma'])} |"
                for r in top]
        out += ["", "A basis cycle closes the pair shown through the breadth-first tree of pairs"
                " observed both ways.", ""]
    return out
