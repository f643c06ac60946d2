"""An explicit potential beside the numeric (least-action) one.

:func:`compare_potentials` puts an explicit V_E (a found :class:`Formula`, the
49-parameter family, a user's formula over feature names, or a ``state,V`` table)
beside the numeric V_N of :class:`~detbal.analysis.potential.LeastActionPotential`:

* Pearson r and Spearman rho of V_E and V_N over the identifiable states;
* RMSE after the best constant shift, RMSE(V_N, V_E + c), and after the best
  affine map, RMSE(V_N, a V_E + c);
* the action of each on the edges the numeric fit uses (inside strongly connected
  components), for V_E as given and at its best scale, and of V_E on all edges;
* agreement on the direction of the transitions with T > 0.05 (both potentials
  finite), and the paper's down/up/equal counts for V_E;
* the held-out log-likelihood.  A random fraction of the attempts of every source
  is held out (seeded multivariate-hypergeometric draw over its outcomes); V_N is
  refitted on the rest.  For a pair {f, g} observed both ways in the training part,
  a held-out transition between f and g goes f -> g with probability

      P(f -> g | pair) = sigmoid(beta (V_f - V_g) + log(m_f / m_g)),

  the log-ratio of Eq. 5 plus the log-ratio of the held-out attempts m of the two
  sources (zero when both made as many; then it is sigmoid(beta (V_f - V_g))).  The
  score is the mean log-likelihood per held-out transition; V_E gets the scale
  beta_E that maximises the same likelihood on the training transitions.  V = 0
  (a coin weighted by exposure) is the reference.

A reversible chain whose true potential is a known formula of random features
(for tests and benchmarks) is :func:`detbal.systems.planted_chain`.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, stats

from detbal.analysis.action import action as action_numpy
from detbal.analysis.counts import Kernel, TransitionCounts, estimate_kernel, reverse_pairs
from detbal.analysis.potential import LeastActionPotential, PotentialFit
from detbal.errors import DetbalError, InputError
from detbal.evo.pareto import Formula
from detbal.io import json_safe

log = logging.getLogger(__name__)

#: transitions with T above this count for the direction statistics (METHOD.md section 5)
DIRECTION_THRESHOLD = 0.05


@dataclass(frozen=True)
class ExplicitPotential:
    """V_E per kernel state (NaN where undefined) and where it came from."""

    name: str
    V: np.ndarray
    source: str  # formula | table | family49 | array
    formula: Formula | None = None


@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare_potentials` (arrays follow ``states``)."""

    name: str
    states: tuple[str, ...]
    V_numeric: np.ndarray
    stderr: np.ndarray
    V_explicit: np.ndarray
    identifiable: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"potential": self.name, **self.metrics}

    @property
    def compared(self) -> int:
        """States where both potentials are defined (the correlations' sample)."""
        return int(self.metrics.get("compared", 0))

    @property
    def pearson(self) -> float:
        """Pearson r of V_E and V_N over the compared states (NaN with fewer than 3)."""
        return _metric(self.metrics.get("pearson"))

    @property
    def spearman(self) -> float:
        """Spearman rho of V_E and V_N over the compared states (NaN with fewer than 3)."""
        return _metric(self.metrics.get("spearman"))

    @property
    def direction_agreement(self) -> float:
        """Fraction of the frequent transitions both potentials send the same way."""
        return _metric((self.metrics.get("direction") or {}).get("agreement"))

    @property
    def heldout(self) -> dict[str, float] | None:
        """Held-out log-likelihood per transition: ``numeric``, ``explicit``, ``zero`` (V = 0)
        and ``explicit_scale`` (NaN where undefined); None when ``holdout=0``."""
        h = self.metrics.get("heldout")
        if h is None:
            return None
        return {k: _metric(h.get(k)) for k in ("numeric", "explicit", "zero", "explicit_scale")}


def _metric(x: Any) -> float:
    return math.nan if x is None else float(x)


# -- resolving the explicit potential ------------------------------------------------
def feature_rows(F: Any, states: Sequence[str]) -> np.ndarray:
    """Rows of ``F.X`` for ``states`` (features must cover every state)."""
    if tuple(F.states) == tuple(states):
        return np.asarray(F.X, dtype=np.float64)
    return np.asarray(F.X, dtype=np.float64)[F.rows(list(states))]


def resolve_potential(spec: Any, states: Sequence[str], features: Any = None,
                      params: Mapping[str, float] | None = None) -> ExplicitPotential:
    """Explicit V on ``states`` from a Formula, array, mapping, callable or string.

    Strings: an existing file (``state,V`` CSV, or a formulas table whose best
    row is used), ``family49`` (the published defaults, or ``params``), or a
    formula over feature names (sympy syntax).
    """
    from detbal.evo import registry

    states = tuple(states)
    if isinstance(spec, ExplicitPotential):
        return spec
    if isinstance(spec, Formula):
        X = _need_features(features, states, "a formula")
        return ExplicitPotential(spec.sympy, _finite(spec.evaluate(_columns(X, features, spec.names))),
                                 "formula", spec)
    if isinstance(spec, np.ndarray):
        if spec.shape != (len(states),):
            raise DetbalError(f"potential array has shape {spec.shape}, expected ({len(states)},)")
        return ExplicitPotential("array", _finite(spec.astype(float)), "array")
    if isinstance(spec, Mapping):
        return ExplicitPotential("table", _from_mapping(spec, states), "table")
    if callable(spec):
        if features is None:
            raise DetbalError("a callable potential needs features")
        return ExplicitPotential(getattr(spec, "__name__", "callable"),
                                 _finite(np.asarray(spec(features), float)), "array")
    if not isinstance(spec, (str, Path)):
        raise DetbalError(f"cannot use {type(spec).__name__} as a potential")
    text = str(spec).strip()
    if not text:
        raise DetbalError("empty potential")
    if text.lower() in {"family49", "family49:defaults"}:
        from detbal.evo.family49 import family_potential

        F = _need_features(features, states, "the 49-parameter family", raw=True)
        return ExplicitPotential("family49", _finite(family_potential(F, params)), "family49")
    path = Path(text)
    looks_like_file = path.suffix.lower() in {".csv", ".tsv", ".txt"} or path.exists()
    if looks_like_file:
        if not path.exists():
            raise InputError(path, "no such file")
        return _from_file(path, states, features)
    names = _feature_names(features)
    expr = registry.parse_formula(text, names)
    formula = Formula(expr=expr, names=names, complexity=registry.sympy_complexity(expr),
                      action=math.nan, loss=math.nan, engine="user", equation=text)
    X = _need_features(features, states, "a formula")
    return ExplicitPotential(text, _finite(formula.evaluate(X)), "formula", formula)


def _feature_names(features: Any) -> tuple[str, ...]:
    from detbal.evo import registry

    if features is None:
        raise DetbalError("a formula needs state features")
    return registry.symbol_names(tuple(features.names))


def _columns(X: np.ndarray, features: Any, names: Sequence[str]) -> np.ndarray:
    have = _feature_names(features)
    if tuple(names) == have:
        return X
    idx = {n: i for i, n in enumerate(have)}
    missing = [n for n in names if n not in idx]
    if missing:
        raise DetbalError(f"formula uses feature(s) {', '.join(missing)} that the data lack")
    return X[:, [idx[n] for n in names]]


def _need_features(features: Any, states: tuple[str, ...], what: str, raw: bool = False) -> Any:
    if features is None:
        raise DetbalError(f"{what} needs state features")
    if raw:
        if tuple(features.states) != states:
            return features.take(features.rows(list(states)))
        return features
    return feature_rows(features, states)


def _finite(V: np.ndarray) -> np.ndarray:
    V = np.asarray(V, dtype=np.float64).copy()
    V[~np.isfinite(V)] = np.nan
    return V


def _from_mapping(values: Mapping[str, float], states: tuple[str, ...]) -> np.ndarray:
    V = np.array([float(values.get(s, math.nan)) for s in states])
    if not np.isfinite(V).any():
        raise DetbalError("the potential table shares no state with the data")
    return _finite(V)


def _from_file(path: Path, states: tuple[str, ...], features: Any) -> ExplicitPotential:
    from detbal.evo import registry
    from detbal.evo.pareto import best_row, read_table

    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            sample = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    header = [h.strip().lower() for h in sample.split("\t" if path.suffix == ".tsv" else ",")]
    if "sympy" in header:
        row = best_row(read_table(path))
        names = _feature_names(features)
        expr = registry.parse_formula(row["sympy"], names)
        formula = Formula(expr=expr, names=names, complexity=int(float(row.get("complexity") or 0)),
                          action=math.nan, loss=math.nan, engine=row.get("engine") or "table",
                          equation=row.get("equation") or row["sympy"])
        X = _need_features(features, states, "a formula")
        return ExplicitPotential(formula.sympy, _finite(formula.evaluate(X)), "formula", formula)
    if "state" not in header or "v" not in header:
        raise InputError(path, "expected a 'state,V' table or a formulas table with a 'sympy' column")
    values: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
        key = {k.strip().lower(): k for k in reader.fieldnames or []}
        for i, rec in enumerate(reader, start=2):
            raw = (rec.get(key["v"]) or "").strip()
            if not raw:
                continue
            try:
                values[rec[key["state"]]] = float(raw)
            except ValueError:
                raise InputError(path, f"line {i}: V is not a number ({raw!r})") from None
    if not values:
        raise InputError(path, "no potential values")
    return ExplicitPotential(path.name, _from_mapping(values, states), "table")


# -- metrics ------------------------------------------------------------------------
def _fitted_edges(kernel: Kernel, fit: PotentialFit) -> np.ndarray:
    """Edges inside one strongly connected component (the ones the numeric fit uses)."""
    c = fit.component
    return (kernel.T > 0) & (c[kernel.src] >= 0) & (c[kernel.src] == c[kernel.dst])


def scale_for_action(V: np.ndarray, kernel: Kernel, mask: np.ndarray, *, penalty: str,
                     beta: float) -> tuple[float, float]:
    """``(S, a)`` of a V at its best scale on the edges in ``mask`` (finite ends only)."""
    from detbal.evo.gp import best_scale

    m = mask & np.isfinite(V[kernel.src]) & np.isfinite(V[kernel.dst])
    u = np.nan_to_num(V)
    return best_scale(u, kernel.src[m], kernel.dst[m], kernel.T[m], penalty=penalty, beta=beta,
                      normalisation=max(kernel.n_sources, 1))


def _action(V: np.ndarray, kernel: Kernel, mask: np.ndarray, penalty: str, beta: float) -> float:
    m = mask & np.isfinite(V[kernel.src]) & np.isfinite(V[kernel.dst])
    return action_numpy(np.nan_to_num(V), kernel.src[m], kernel.dst[m], kernel.T[m], kernel=penalty,
                        beta=beta, normalisation=max(kernel.n_sources, 1))


def _directions(VN: np.ndarray, VE: np.ndarray, kernel: Kernel, threshold: float) -> dict[str, Any]:
    from detbal.evo.transitions import direction_stats

    sel = kernel.T > threshold
    dn = VN[kernel.src[sel]] - VN[kernel.dst[sel]]
    de = VE[kernel.src[sel]] - VE[kernel.dst[sel]]
    ok = np.isfinite(dn) & np.isfinite(de)
    agree = int(np.count_nonzero(np.sign(dn[ok]) == np.sign(de[ok])))
    n = int(ok.sum())
    return {
        "threshold": threshold,
        "n_both": n,
        "agree": agree,
        "agreement": agree / n if n else math.nan,
        "explicit": direction_stats(VE, kernel, threshold),
        "numeric": direction_stats(VN, kernel, threshold),
    }


def heldout_split(counts: TransitionCounts, fraction: float, seed: int) -> tuple[TransitionCounts, np.ndarray, np.ndarray]:
    """Hold out ``round(fraction * attempts)`` attempts of every source, drawn without replacement.

    Returns the training counts (edges with no training count dropped), the held-out
    count of every edge of ``counts`` and the held-out attempts per state.
    """
    if not 0.0 < fraction < 1.0:
        raise DetbalError(f"held-out fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    n = counts.n_states
    ptr = np.searchsorted(counts.src, np.arange(n + 1))
    held_edge = np.zeros(len(counts.src))
    held_loops = np.zeros(n)
    held_esc = np.zeros(n)
    held_attempts = np.zeros(n)
    for f in range(n):
        total = int(round(counts.attempts[f]))
        m = int(round(fraction * total))
        if m <= 0:
            continue
        lo, hi = ptr[f], ptr[f + 1]
        colors = np.concatenate([counts.count[lo:hi], [counts.self_loops[f], counts.escapes[f]]])
        colors = np.rint(colors).astype(np.int64)
        rest = total - int(colors.sum())
        if rest > 0:  # attempts not accounted for by outcomes: treat as escapes
            colors[-1] += rest
        m = min(m, int(colors.sum()))
        draw = rng.multivariate_hypergeometric(colors, m)
        held_edge[lo:hi] = draw[:-2]
        held_loops[f], held_esc[f] = draw[-2], draw[-1]
        held_attempts[f] = m
    train_count = counts.count - held_edge
    keep = train_count > 0
    train = TransitionCounts.from_arrays(
        counts.states, counts.src[keep], counts.dst[keep], train_count[keep],
        counts.attempts - held_attempts, counts.self_loops - held_loops, counts.escapes - held_esc,
    )
    return train, held_edge, held_attempts


def _pair_events(src: np.ndarray, dst: np.ndarray, cnt: np.ndarray, n: int, pairs: set[tuple[int, int]]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(f, g, n_fg, n_gf)`` over ``pairs`` (f < g) from edge counts."""
    lookup = {(int(s), int(d)): float(c) for s, d, c in zip(src, dst, cnt) if c > 0}
    f = np.array([p[0] for p in pairs], dtype=np.int64)
    g = np.array([p[1] for p in pairs], dtype=np.int64)
    nfg = np.array([lookup.get((a, b), 0.0) for a, b in zip(f, g)])
    ngf = np.array([lookup.get((b, a), 0.0) for a, b in zip(f, g)])
    return f, g, nfg, ngf


def _loglik(x: np.ndarray, nfg: np.ndarray, ngf: np.ndarray) -> float:
    """sum n_fg log sigmoid(x) + n_gf log sigmoid(-x)."""
    return float(-(nfg * np.logaddexp(0.0, -x)).sum() - (ngf * np.logaddexp(0.0, x)).sum())


def _best_logit_scale(d: np.ndarray, offset: np.ndarray, nfg: np.ndarray, ngf: np.ndarray,
                      max_scale: float = 50.0) -> float:
    """argmax_b of the pair likelihood with logits b d + offset (concave in b)."""
    sd = float(np.std(d)) if d.size else 0.0
    if sd <= 1e-300 or not np.isfinite(sd):
        return 0.0
    res = optimize.minimize_scalar(
        lambda b: -_loglik(b * d / sd + offset, nfg, ngf), bounds=(-max_scale, max_scale),
        method="bounded", options={"xatol": 1e-9},
    )
    return float(res.x) / sd


def heldout_loglik(kernel: Kernel, VE: np.ndarray, *, fraction: float = 0.2, seed: int = 0,
                   penalty: str = "exp", beta: float = 1.0) -> dict[str, Any]:
    """Mean held-out log-likelihood per transition of V_N (refitted) and V_E (see module doc)."""
    counts = kernel.counts
    train, held_edge, held_att = heldout_split(counts, fraction, seed)
    tk = estimate_kernel(train, kernel.mode, min_source_count=kernel.min_source_count)
    if len(tk.src) == 0:
        raise DetbalError("no transitions left for training after holding out attempts")
    tfit = LeastActionPotential(penalty=penalty, beta=beta).fit(tk)
    VN = tfit.V
    n = counts.n_states
    e_fg, e_gf = reverse_pairs(tk.src, tk.dst, n)
    ok_state = np.isfinite(VN) & np.isfinite(VE)
    pairs = {(int(tk.src[a]), int(tk.dst[a])) for a in e_fg
             if ok_state[tk.src[a]] and ok_state[tk.dst[a]]}
    out: dict[str, Any] = {"fraction": fraction, "seed": seed, "pairs": len(pairs)}
    if not pairs:
        out.update(n_test=0, numeric=math.nan, explicit=math.nan, zero=math.nan, explicit_scale=math.nan)
        return out
    # training events fit the explicit scale
    f, g, nfg, ngf = _pair_events(tk.src, tk.dst, tk.count, n, pairs)
    with np.errstate(divide="ignore"):
        off_tr = np.log(train.attempts[f]) - np.log(train.attempts[g])
    b = _best_logit_scale(VE[f] - VE[g], off_tr, nfg, ngf)
    # held-out events
    f, g, hfg, hgf = _pair_events(counts.src, counts.dst, held_edge, n, pairs)
    use = (held_att[f] > 0) & (held_att[g] > 0) & ((hfg + hgf) > 0)
    f, g, hfg, hgf = f[use], g[use], hfg[use], hgf[use]
    n_test = float((hfg + hgf).sum())
    out["n_test"] = int(n_test)
    if n_test == 0:
        out.update(numeric=math.nan, explicit=math.nan, zero=math.nan, explicit_scale=b)
        return out
    off = np.log(held_att[f]) - np.log(held_att[g])
    out.update(
        numeric=_loglik(beta * (VN[f] - VN[g]) + off, hfg, hgf) / n_test,
        explicit=_loglik(b * (VE[f] - VE[g]) + off, hfg, hgf) / n_test,
        zero=_loglik(off, hfg, hgf) / n_test,
        explicit_scale=b,
    )
    return out


def compare_potentials(
    kernel: Kernel,
    explicit: Any,
    *,
    features: Any = None,
    fit: PotentialFit | None = None,
    penalty: str = "exp",
    beta: float = 1.0,
    threshold: float = DIRECTION_THRESHOLD,
    holdout: float = 0.2,
    seed: int = 0,
    params: Mapping[str, float] | None = None,
) -> Comparison:
    """Compare an explicit potential with the numeric one on ``kernel`` (see module doc).

    ``fit`` defaults to a fresh :class:`LeastActionPotential` fit; ``holdout=0``
    skips the held-out likelihood.
    """
    pot = resolve_potential(explicit, kernel.states, features, params)
    if fit is None:
        fit = LeastActionPotential(penalty=penalty, beta=beta).fit(kernel)
    VE = pot.V
    VN = fit.V
    ident = fit.identifiable & np.isfinite(VE)
    m: dict[str, Any] = {"source": pot.source, "states": kernel.n_states,
                         "identifiable": int(fit.identifiable.sum()), "compared": int(ident.sum())}
    if pot.formula is not None:
        m["formula"] = {"sympy": pot.formula.sympy, "latex": pot.formula.latex,
                        "complexity": pot.formula.complexity}
    x, y = VE[ident], VN[ident]
    if ident.sum() >= 3 and np.std(x) > 0 and np.std(y) > 0:
        m["pearson"] = float(stats.pearsonr(x, y)[0])
        m["spearman"] = float(stats.spearmanr(x, y)[0])
        shift = float(np.mean(y - x))
        m["rmse_shift"] = float(np.sqrt(np.mean((y - x - shift) ** 2)))
        a, c = np.polyfit(x, y, 1)
        m["affine"] = {"scale": float(a), "offset": float(c)}
        m["rmse_affine"] = float(np.sqrt(np.mean((y - a * x - c) ** 2)))
    else:
        m.update(pearson=math.nan, spearman=math.nan, rmse_shift=math.nan, rmse_affine=math.nan)
        log.warning("fewer than 3 comparable states or a constant potential: no correlations")
    fitted = _fitted_edges(kernel, fit)
    allm = kernel.T > 0
    S_scaled, a_best = scale_for_action(VE, kernel, fitted, penalty=penalty, beta=beta)
    S_all, _ = scale_for_action(VE, kernel, allm, penalty=penalty, beta=beta)
    m["action"] = {
        "numeric": float(fit.action),
        "explicit": _action(VE, kernel, fitted, penalty, beta),
        "explicit_scaled": S_scaled,
        "explicit_scale": a_best,
        "explicit_all_edges": _action(VE, kernel, allm, penalty, beta),
        "explicit_scaled_all_edges": S_all,
        "excess": S_scaled / fit.action - 1.0 if fit.action > 0 else math.nan,
        "k0": fit.k0,
    }
    m["direction"] = _directions(VN, VE, kernel, threshold)
    if holdout > 0:
        m["heldout"] = heldout_loglik(kernel, VE, fraction=holdout, seed=seed,
                                      penalty=penalty, beta=beta)
    return Comparison(name=pot.name, states=kernel.states, V_numeric=VN, stderr=fit.stderr,
                      V_explicit=VE, identifiable=ident, metrics=json_safe(m))


# -- figures ------------------------------------------------------------------------------
def _figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure with one axes, rendered by Agg when saved (no pyplot: the caller's
    matplotlib backend is left alone)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def plot_comparison(cmp: Comparison, path: str | Path) -> Path | None:
    """Numeric V (with bootstrap errors) against the affine-mapped explicit V."""
    ok = cmp.identifiable
    if ok.sum() < 2:
        return None
    aff = cmp.metrics.get("affine") or {"scale": 1.0, "offset": 0.0}
    x = aff["scale"] * cmp.V_explicit[ok] + aff["offset"]
    y = cmp.V_numeric[ok]
    err = cmp.stderr[ok]
    fig, ax = _figure((5.2, 5))
    ax.errorbar(x, y, yerr=np.where(np.isfinite(err), err, 0.0), fmt="o", ms=3, alpha=0.6,
                elinewidth=0.7)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(r"explicit $\beta V$ (best affine map)")
    ax.set_ylabel(r"numeric $\beta V$ (least action)")
    r, rho = cmp.metrics.get("pearson"), cmp.metrics.get("spearman")
    title = cmp.name if len(cmp.name) < 50 else cmp.name[:47] + "..."
    ax.set_title(f"{title}\nr = {_f(r)}, rho = {_f(rho)}, {int(ok.sum())} states", fontsize=9)
    return _finish(fig, Path(path))


def plot_subgraph(kernel: Kernel, V: np.ndarray, path: str | Path, *, max_states: int = 30,
                  threshold: float = 0.0, title: str = "") -> Path | None:
    """The most frequent states at height V, edges coloured downhill (blue) / uphill (red)."""
    finite = np.isfinite(V)
    order = np.argsort(-kernel.counts.attempts, kind="stable")
    chosen = [int(i) for i in order if finite[i]][:max_states]
    if len(chosen) < 2:
        return None
    inside = np.zeros(kernel.n_states, dtype=bool)
    inside[chosen] = True
    sel = inside[kernel.src] & inside[kernel.dst] & (kernel.T > threshold)
    fig, ax = _figure((7, 5.5))
    golden = (math.sqrt(5) - 1) / 2
    by_v = sorted(chosen, key=lambda i: V[i])
    xpos = {s: (k * golden) % 1.0 for k, s in enumerate(by_v)}
    tmax = float(kernel.T[sel].max()) if sel.any() else 1.0
    n_down = n_up = 0
    for e in np.flatnonzero(sel):
        f, g = int(kernel.src[e]), int(kernel.dst[e])
        down = V[f] > V[g]
        n_down += int(down)
        n_up += int(not down)
        ax.annotate("", xy=(xpos[g], V[g]), xytext=(xpos[f], V[f]),
                    arrowprops={"arrowstyle": "->", "color": "tab:blue" if down else "tab:red",
                                "alpha": 0.25 + 0.65 * float(kernel.T[e]) / tmax,
                                "lw": 0.5 + 2.0 * float(kernel.T[e]) / tmax,
                                "shrinkA": 4, "shrinkB": 4})
    xs = [xpos[s] for s in chosen]
    ys = [V[s] for s in chosen]
    ax.scatter(xs, ys, s=18, c="k", zorder=3)
    for s in chosen:
        label = kernel.states[s]
        ax.text(xpos[s] + 0.01, V[s], label if len(label) <= 18 else label[:16] + "..", fontsize=6)
    ax.set_xticks([])
    ax.set_ylabel(r"explicit $\beta V$")
    ax.set_xlim(-0.05, 1.25)
    ax.set_title(f"{title}{len(chosen)} most frequent states: {n_down} downhill (blue), "
                 f"{n_up} uphill (red) edges", fontsize=9)
    return _finish(fig, Path(path))


def _f(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def _finish(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


__all__: Sequence[str] = [
    "Comparison", "ExplicitPotential", "compare_potentials", "heldout_loglik",
    "heldout_split", "plot_comparison", "plot_subgraph", "resolve_potential",
    "scale_for_action",
]
