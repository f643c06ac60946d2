"""Figures (PNG, matplotlib Agg) and the Markdown report of ``detbal analyze``.

Plotting is kept apart from the numerics: every function takes result objects
and a path, and matplotlib is imported only here.  Figures are built on
``matplotlib.figure.Figure`` directly (no pyplot, no backend switch, safe in a
worker thread), with fixed margins instead of ``tight_layout`` and plain-text
labels instead of mathtext (each cost about 0.1 s per figure), and at most
:data:`MAX_POINTS` points per scatter plot: larger sets are drawn as a fixed
random subset, and the title says so.  :class:`FigureMaker` draws them in a child
process while the caller goes on computing (matplotlib's import alone is ~0.5 s).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from detbal.analysis.balance import OneSidedTest, PairTest, TripletTest
from detbal.analysis.counts import Kernel
from detbal.analysis.nonequilibrium import Nonequilibrium
from detbal.analysis.potential import PotentialFit

#: largest state space drawn as a transition diagram
DIAGRAM_MAX_STATES = 30
#: most points drawn in one scatter plot (a fixed random subset beyond)
MAX_POINTS = 5000


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


def _subset(n: int) -> tuple[np.ndarray, str]:
    """Indices of the points to draw and a note for the title (empty when all are drawn)."""
    if n <= MAX_POINTS:
        return np.arange(n), ""
    idx = np.sort(np.random.default_rng(0).choice(n, MAX_POINTS, replace=False))
    return idx, f" ({MAX_POINTS:,} of {n:,} drawn)"


def _diagonal(ax: Any, *values: np.ndarray, **style: Any) -> None:
    """The line y = x across the range of ``values`` (with a margin)."""
    lo = float(min(v.min() for v in values)) - 0.5
    hi = float(max(v.max() for v in values)) + 0.5
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, **style)


def plot_triplets(test: TripletTest, path: Path) -> Path | None:
    """Backward vs forward log-path sums with error bars and the diagonal."""
    if test.n_triplets == 0:
        return None
    fig, ax = _figure((5, 5))
    i, note = _subset(test.n_triplets)
    ax.errorbar(test.L_fwd[i], test.L_bwd[i], xerr=np.sqrt(test.sigma2_fwd[i]),
                yerr=np.sqrt(test.sigma2_bwd[i]), fmt="o", ms=3, alpha=0.6, elinewidth=0.7)
    _diagonal(ax, test.L_fwd, test.L_bwd)
    ax.set_xlabel("L_fwd = Σ log T  (f → g → h → f)")
    ax.set_ylabel("L_bwd  (f → h → g → f)")
    ax.set_title(f"{test.n_triplets} triplets, χ²/ndf = {test.chi2_per_ndf:.2f}{note}", fontsize=10)
    return _finish(fig, path)


def plot_pairs(test: PairTest, path: Path) -> Path | None:
    """log T(g<-f)/T(f<-g) against beta (V(f) - V(g))."""
    if test.n_pairs == 0:
        return None
    fig, ax = _figure((5, 5))
    i, note = _subset(test.n_pairs)
    ax.errorbar(test.dV[i], test.log_ratio[i], yerr=test.sigma[i], fmt="o", ms=3, alpha=0.6,
                elinewidth=0.7)
    _diagonal(ax, test.dV, test.log_ratio, label="detailed balance")
    ax.set_xlabel("β [V(f) − V(g)]")
    ax.set_ylabel("log T(g ← f) / T(f ← g)")
    ax.set_title(f"{test.n_pairs} pairs, r = {test.pearson_r:.3f}{note}", fontsize=10)
    ax.legend(loc="upper left")
    return _finish(fig, path)


def plot_one_sided(test: OneSidedTest, path: Path) -> Path | None:
    """beta (V(f) - V(g)) of one-sided pairs against the bound log(T N0(g))."""
    if test.n_pairs == 0:
        return None
    fig, ax = _figure((5, 5))
    i, note = _subset(test.n_pairs)
    bound, dV = test.bound[i], test.dV[i]
    within = dV >= bound
    ax.scatter(bound[within], dV[within], s=8, alpha=0.6, label="within bound")
    ax.scatter(bound[~within], dV[~within], s=8, alpha=0.6, c="C3", label="violates bound")
    _diagonal(ax, test.bound, test.dV)
    ax.set_xlabel("bound log[T(g ← f) N0(g)]")
    ax.set_ylabel("β [V(f) − V(g)]")
    ax.set_title(f"{test.n_pairs} one-sided pairs, {100 * test.fraction_within:.1f}% within{note}",
                 fontsize=10)
    ax.legend(loc="upper left")
    return _finish(fig, path)


def plot_histogram(beta_v: np.ndarray, mean: float, sigma: float, path: Path) -> Path | None:
    """Histogram of beta*V with the fitted Gaussian."""
    x = beta_v[np.isfinite(beta_v)]
    if len(x) < 2 or not math.isfinite(sigma) or sigma <= 0:
        return None
    fig, ax = _figure((6, 4))
    bins = max(10, min(60, int(np.sqrt(len(x)) * 2)))
    ax.hist(x, bins=bins, density=True, alpha=0.7)
    grid = np.linspace(x.min(), x.max(), 200)
    ax.plot(grid, np.exp(-0.5 * ((grid - mean) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)),
            "k-", lw=1.5, label=f"Gaussian, σ = {sigma:.2f}")
    ax.set_xlabel("β V")
    ax.set_ylabel("density")
    ax.legend()
    return _finish(fig, path)


def diagram_applies(kernel: Kernel) -> bool:
    """Whether :func:`plot_diagram` draws this kernel (1 to DIAGRAM_MAX_STATES kept states)."""
    return 0 < int(np.count_nonzero(kernel.kept)) <= DIAGRAM_MAX_STATES


def plot_diagram(kernel: Kernel, fit: PotentialFit, path: Path) -> Path | None:
    """Transition diagram of a small state space drawn on its potential levels."""
    if not diagram_applies(kernel):
        return None
    used = np.flatnonzero(kernel.kept)
    finite = fit.V[np.isfinite(fit.V)]
    top = float(finite.max()) + 1.5 if len(finite) else 1.0
    bottom = float(finite.min()) - 1.5 if len(finite) else -1.0
    y = np.where(np.isfinite(fit.V), fit.V,
                 np.where(np.array([f in ("never_entered", "one_sided") for f in fit.flags]), top, bottom))
    order = used[np.argsort(y[used], kind="stable")]
    x = np.zeros(kernel.n_states)
    x[order] = np.arange(len(order)) % 4 + 0.3 * (np.arange(len(order)) // 4)
    fig, ax = _figure((7, 5))
    for e in range(len(kernel.src)):
        f, g = kernel.src[e], kernel.dst[e]
        down = y[f] > y[g]
        ax.annotate("", xy=(x[g], y[g]), xytext=(x[f], y[f]),
                    arrowprops={"arrowstyle": "->", "color": "C0" if down else "C3",
                                "lw": 0.5 + 3.0 * float(kernel.T[e]), "alpha": 0.6,
                                "connectionstyle": "arc3,rad=0.15"})
    for i in used:
        label = kernel.states[i] + ("" if fit.flags[i] == "" else f"\n({fit.flags[i]})")
        ax.plot(x[i], y[i], "o", color="k", ms=6)
        ax.annotate(label, (x[i], y[i]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.margins(x=0.25, y=0.08)
    ax.set_ylabel("β V (flagged states drawn at the edges)")
    ax.set_xticks([])
    ax.set_title("transitions on potential levels (blue downhill, red uphill)")
    return _finish(fig, path)


def plot_cycle_affinities(ne: Nonequilibrium, path: Path, top: int = 25) -> Path | None:
    """Left: z = A / sigma of every 3-cycle and basis cycle against N(0, 1); right: the
    cycles that break detailed balance most, A with its 95% interval."""
    t, b = ne.triangles, ne.basis
    z = np.concatenate([t.z, b.z]) if len(t.z) or len(b.z) else np.zeros(0)
    z = z[np.isfinite(z)]
    if len(z) == 0:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5))
    ax, ax2 = fig.subplots(1, 2)
    lim = max(4.0, float(np.quantile(np.abs(z), 0.995)))
    bins = np.linspace(-lim, lim, 41)
    if len(t.z):
        ax.hist(np.clip(t.z, -lim, lim), bins=bins, density=True, alpha=0.6, label=f"{len(t.z)} 3-cycles")
    if len(b.z):
        ax.hist(np.clip(b.z, -lim, lim), bins=bins, density=True, alpha=0.5, label=f"{len(b.z)} basis cycles")
    grid = np.linspace(-lim, lim, 200)
    ax.plot(grid, np.exp(-grid**2 / 2) / math.sqrt(2 * math.pi), "k-", lw=1.2, label="N(0, 1): balance")
    ax.set_xlabel("A / sigma(A)")
    ax.set_ylabel("density")
    ax.legend(loc="upper left", fontsize=8)
    rows = ne.top_cycles(top)
    y = np.arange(len(rows))[::-1]
    A = np.array([r["affinity"] for r in rows])
    err = 1.96 * np.array([r["sigma"] for r in rows])
    colors = ["C0" if r["kind"] == "3-cycle" else "C1" for r in rows]
    ax2.errorbar(A, y, xerr=err, fmt="none", ecolor=colors, elinewidth=1)
    ax2.scatter(A, y, c=colors, s=12, zorder=3)
    ax2.axvline(0.0, color="k", lw=0.8, ls="--")
    ax2.set_yticks(y, [f"{r['kind']} ({r['length']})" for r in rows], fontsize=6)
    ax2.set_xlabel("cycle affinity A (95% interval)")
    ax2.set_title(f"{len(rows)} cycles breaking balance most (|A|/sigma)")
    rms = ne.rms_affinity
    ax.set_title(f"RMS affinity {rms.estimate:.2f} [{rms.ci_low:.2f}, {rms.ci_high:.2f}]")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92, wspace=0.35)
    fig.savefig(path, dpi=110)
    return path


def plot_estimators(least_action: PotentialFit, likelihood: PotentialFit, path: Path) -> Path | None:
    """Likelihood potential against the least-action one on the states both give a number."""
    both = np.flatnonzero(np.isfinite(least_action.V) & np.isfinite(likelihood.V))
    if len(both) < 2:
        return None
    idx, note = _subset(len(both))
    sel = both[idx]
    x = least_action.beta * least_action.V[sel]
    y = likelihood.beta * likelihood.V[sel]
    fig, ax = _figure((5, 5))
    ax.errorbar(x, y, yerr=likelihood.beta * np.nan_to_num(likelihood.stderr[sel]), fmt="o", ms=3,
                alpha=0.5, elinewidth=0.6)
    _diagonal(ax, x, y)
    only = int(np.count_nonzero(np.isfinite(likelihood.V) & ~np.isfinite(least_action.V)))
    ax.set_xlabel("beta V, least action")
    ax.set_ylabel("beta V, likelihood (Laplace 1 sigma)")
    ax.set_title(f"{len(both)} states in both{note}; {only} only in the likelihood fit", fontsize=9)
    return _finish(fig, path)


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
        if background:
            try:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
                self._pool.submit(_preload)
            except (OSError, ImportError, RuntimeError, ValueError):  # pragma: no cover - no processes
                self._pool = None

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


def write_report(out_dir: Path, summary: dict[str, Any], figures: dict[str, Path | None],
                 top_states: list[dict[str, Any]],
                 side_by_side: list[dict[str, Any]] | None = None) -> Path:
    """The Markdown report: settings, verdict, numbers, figures, lowest-potential states.

    ``side_by_side``: potential.csv's rows when the likelihood potential was fitted
    (``V``, ``stderr`` (Laplace), ``stderr_bootstrap``, ``V_least_action``,
    ``stderr_least_action``, ``sources``).
    """
    g = summary["detailed_balance"]["global"]
    t = summary["detailed_balance"]["triplet_paper"]
    p = summary["pair_test"]
    o = summary["one_sided"]
    s = summary["potential"]
    lines = [
        "# detbal analysis report", "",
        f"Input: `{summary['input']}`  ",
        f"Settings: kernel `{summary['settings']['kernel']}`, beta = {summary['settings']['beta']},"
        f" N0 `{summary['settings']['n0']}`, min source count {summary['settings']['min_source_count']},"
        f" bootstrap {summary['settings']['bootstrap']}, seed {summary['settings']['seed']}", "",
        f"Data: {summary['data']['states']} states, {summary['data']['edges']} distinct transitions,"
        f" {_fmt(summary['data']['total_attempts'])} attempts ({_fmt(summary['data']['escape_fraction'])}"
        " escapes or self-loops), " f"{summary['data']['sources']} source states.", "",
        "## Detailed balance", "",
        f"**Verdict: {summary['verdict']}**", "",
        "| test | pairs / triplets | chi^2 / ndf | p-value |", "|---|---|---|---|",
        f"| global (all independent cycles, df = {g['df']}) | {g['n_pairs']} pairs | {_fmt(g['chi2_per_df'])}"
        f" | {_p_phrase(g)}; asymptotic {_fmt(g['p_asymptotic'])} |",
        f"| paper's 3-cycle test | {t['n_triplets']} triplets | {_fmt(t['chi2_per_ndf'])} |"
        f" {_p_phrase({**t, 'p_value': t['p_value_bootstrap']})} |",
        *_deviance_row(summary["detailed_balance"].get("deviance")),
        f"| pair test vs potential | {p['n_pairs']} pairs | {_fmt(p['chi2_per_ndf'])} | r = {_fmt(p['pearson_r'])} |",
        "",
        f"One-sided pairs: {o['n_pairs']}, of which {_fmt(100 * o['fraction_within_bound'] if o['n_pairs'] else math.nan)}%"
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
        f"Action S = {_fmt(s['action'], 4)} (K(0) = {_fmt(s['K0'], 4)}); width of beta*V over"
        f" {s['width_states']} states sampled more than once: sigma = {_fmt(s['sigma_beta_V'])},"
        f" expected minimal action K(0)/(sqrt(pi) sigma) = {_fmt(s['expected_min_action_gaussian'])}.",
        f"Of {s['strong_transitions']} transitions with T > 0.05, {_fmt(100 * s['downhill_fraction'] if s['strong_transitions'] else math.nan)}%"
        " go downhill in V.", "",
        "States: " + ", ".join(f"{k}: {v}" for k, v in sorted(s["flags"].items())) + ".",
        "Flagged states are beyond the measurable range (never entered, never left, on no"
        " observed cycle, in another component, or further than log(total attempts) from the"
        " median of the main component) and get no number in potential.csv.", "",
    ]
    lines += _likelihood_section(summary.get("likelihood_potential"), side_by_side)
    lines += _nonequilibrium_section(summary.get("nonequilibrium"))
    if top_states and not side_by_side:
        lines += ["Lowest-potential identifiable states:", "", "| state | beta V | stderr | attempts |",
                  "|---|---|---|---|"]
        lines += [f"| `{r['state']}` | {r['V']} | {r['stderr'] or 'n/a'} | {r['sources']} |" for r in top_states]
        lines.append("")
    captions = {
        "triplets": "Paper's 3-cycle test: backward vs forward log-path sums.",
        "pairs": "Pair test: log-ratio of the kernel against the potential difference.",
        "one_sided": "One-sided pairs against their bound.",
        "histogram": "Distribution of beta V with its Gaussian fit.",
        "diagram": "Transition diagram on potential levels.",
        "estimators": "Likelihood potential against the least-action potential.",
        "cycles": "Cycle affinities: z-scores against balance, and the cycles breaking it most.",
    }
    lines += ["## Figures", ""]
    for key, caption in captions.items():
        fig = figures.get(key)
        if fig is not None:
            lines += [f"![{caption}]({fig.name})", "", f"*{caption}*", ""]
    lines += ["## Timings (s)", "", " | ".join(f"{k}: {v:.2f}" for k, v in summary["timings"].items()), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _p_phrase(d: dict[str, Any]) -> str:
    """A bootstrap p-value as the report states it: simulated, or bound and tail estimate."""
    if d.get("p_value_method") == "scaled_chi2_tail":
        return (f"{_fmt(d['p_value'])} (tail estimate: scaled chi^2 fitted to {d['n_simulations']} sims,"
                f" none as extreme; bound p < {_fmt(d['p_upper_bound'])})")
    return f"{_fmt(d.get('p_value'))} (bootstrap, {d.get('n_simulations', d.get('n_bootstrap', 0))} sims)"


def _deviance_row(d: dict[str, Any] | None) -> list[str]:
    if not d:
        return []
    return [f"| deviance G^2 of quasi-symmetry (df = {d['df']}) | {d['n_pairs']} pairs |"
            f" {_fmt(d['deviance_per_df'])} | {_p_phrase(d)}; asymptotic {_fmt(d['p_asymptotic'])} |"]


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
        f"Entropy production of the estimated kernel at stationarity ({d['entropy_production_states']}"
        f" states): {_fmt(ep['estimate'])} per step (95% interval {_fmt(ep['ci_low'])} to"
        f" {_fmt(ep['ci_high'])}; plug-in {_fmt(ep['plug_in'])}).",
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
