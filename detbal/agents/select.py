"""How an agent draws the next prompt state: uniformly, or guided by the measured potential.

Both agents (words, fit) draw the state they show the model (the prompt word, the
example ansatz) from a list of *candidates*: the valid words found so far, or the
island's population.  A :class:`Selection` says how:

* ``uniform`` (the paper's sampling): every candidate equally likely.
* ``walk``: the agent walks its own chain: the next prompt state is the state the
  previous attempt wrote (fit: one of the ansatzes the island's previous round wrote,
  drawn by the round's seed; an escape, or a round of escapes, stays where it was).
  Sources are then visited as often as the agent's own dynamics visit them, so every
  transition is sampled with the flux through it; under detailed balance the flux
  f -> g equals the flux g -> f, so pairs are seen both ways about equally often --
  what a model that rarely returns to a uniformly drawn state needs for its cycles to
  be tested.  One step waits for the one before it (no concurrency within a walk;
  the fit agent's islands walk side by side).
* ``potential``: p(f) = (1 - floor) * exp(-V(f)/tau) / Z + floor / n over the n
  candidates, where V is the potential (beta V, the analysis' units) estimated on
  the run's own attempts so far.  ``floor`` mixes in the uniform draw so that no
  candidate starves.  A candidate without an estimate (never a source yet, or
  flagged by the estimator) is *explored*: it counts as V = the lowest V among the
  estimated candidates, so a new state is drawn at least as often as the best known
  one until it has been a source often enough to be estimated.  With no estimate
  at all the draw is uniform.

**Refits.**  The potential is refitted every ``every`` attempts: the draw of attempt
``seq`` uses the fit on the run's attempts with seq < P, where P is a multiple of
``every`` no larger than the prefix of seqs certain to be stored when the draw is
made (the agents say which; :func:`refit_point`).  The fit is a pure function of
those attempts (read in seq order), so a resumed run (kill -9, same command) refits
the same potential and, drawing with the same uniform number, the same state.
Estimators: ``likelihood`` (quasi-symmetry binomial fit with an empirical-Bayes
prior, :mod:`detbal.analysis.likelihood`; gives a number to every sampled source on
the pair graph, also without closed cycles), ``least-action``
(:mod:`detbal.analysis.potential`; needs strongly connected components) -- both on the
empirical kernel with every sampled source kept (N0 cut 0) -- or ``visits``: beta V(f) =
-log(1 + times f was written), no kernel at all.  With ``visits`` every state has a
number from the start, so nothing is "explored" at the lowest V: the draw goes to the
states the model keeps writing, which is what a small model that rarely returns needs
for its transitions to be seen both ways (``tau`` sharpens it: p ~ (1 + visits)^(1/tau)).

**The analysis stays valid.**  The kernel T(g<-f) is estimated per source: N(g<-f)
over the attempts from f.  How often f was chosen as a source changes N0(f) and so
the precision of row f, not its expectation; guided runs are analysed exactly like
uniform ones.  Each attempt records how its source was drawn (``params.select``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from detbal.errors import DetbalError

#: selection rules (the CLI's ``--select`` choices): name -> whether it needs a potential
RULES: dict[str, bool] = {"uniform": False, "potential": True, "walk": False}
#: potential estimators a guided run may refit with
ESTIMATORS: tuple[str, ...] = ("likelihood", "least-action", "visits")
#: keys of a run config written by :meth:`Selection.as_config`; runs made before selection
#: existed hold none of them and were uniform
CONFIG_DEFAULTS: dict[str, Any] = {"select": "uniform", "select_tau": None, "select_floor": None,
                                   "select_every": None, "select_estimator": None}

if TYPE_CHECKING:
    import numpy as np

Row = tuple[str, "str | None", "str | None", int]  # (source, target, escape, count)


@dataclass(frozen=True)
class Selection:
    """How the prompt state is drawn (stored in the run config by :meth:`as_config`)."""

    rule: str = "uniform"
    tau: float = 1.0
    floor: float = 0.1
    every: int = 10
    estimator: str = "likelihood"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise DetbalError(f"unknown selection {self.rule!r}: use one of {', '.join(RULES)}")
        if not (self.tau > 0 and math.isfinite(self.tau)):
            raise DetbalError(f"selection temperature tau must be positive, got {self.tau}")
        if not 0.0 <= self.floor <= 1.0:
            raise DetbalError(f"selection floor must be in [0, 1], got {self.floor}")
        if int(self.every) < 1:
            raise DetbalError(f"selection refit interval (every) must be at least 1, got {self.every}")
        if self.estimator not in ESTIMATORS:
            raise DetbalError(f"unknown estimator {self.estimator!r}: use one of {', '.join(ESTIMATORS)}")

    @property
    def guided(self) -> bool:
        return RULES[self.rule]

    def as_config(self) -> dict[str, Any]:
        """Run-config keys; the potential's settings are None for a uniform run."""
        if not self.guided:
            return dict(CONFIG_DEFAULTS, select=self.rule)
        return {"select": self.rule, "select_tau": self.tau, "select_floor": self.floor,
                "select_every": int(self.every), "select_estimator": self.estimator}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Selection:
        """From run-config keys (missing ones: uniform, or the defaults of the potential rule)."""
        rule = config.get("select") or "uniform"
        d = cls()
        return cls(rule=rule,
                   tau=float(config.get("select_tau") or d.tau),
                   floor=float(d.floor if config.get("select_floor") is None else config["select_floor"]),
                   every=int(config.get("select_every") or d.every),
                   estimator=str(config.get("select_estimator") or d.estimator))


def refit_point(ready: int, every: int) -> int:
    """The refit point P for a draw made when seqs ``0 .. ready-1`` are certain to be stored."""
    return (max(int(ready), 0) // int(every)) * int(every)


def estimate(rows: Iterable[Row], estimator: str = "likelihood") -> dict[str, float]:
    """beta V of every state the estimator gives a number to, from ``(source, target,
    escape, count)`` rows (empty when the data fix none yet)."""
    import numpy as np

    from detbal.analysis.counts import TransitionCounts, estimate_kernel

    rows = list(rows)
    if not rows:
        return {}
    if estimator == "visits":
        return visit_potential(rows)
    counts = TransitionCounts.from_rows(rows)
    kernel = estimate_kernel(counts, "empirical", min_source_count=0)
    try:
        if estimator == "likelihood":
            from detbal.analysis.likelihood import LikelihoodPotential

            pot = LikelihoodPotential().fit(kernel).potential
        elif estimator == "least-action":
            from detbal.analysis.potential import LeastActionPotential

            pot = LeastActionPotential().fit(kernel, errors=False)
        else:
            raise DetbalError(f"unknown estimator {estimator!r}: use one of {', '.join(ESTIMATORS)}")
    except DetbalError:  # too little data for any estimate yet
        return {}
    return {s: float(v) * pot.beta for s, v, f in zip(pot.states, pot.V, pot.flags)
            if f == "" and np.isfinite(v)}


def visit_potential(rows: Iterable[Row]) -> dict[str, float]:
    """beta V(f) = -log(1 + times f was written), every state of the rows (sources included).

    The crude potential of an agent that keeps returning: the states it writes most often
    (copies of the example included) are the deepest.  It needs no closed cycle, so it
    gives a number to every state from the first attempt on; drawn with it, the examples
    concentrate on the states the model comes back to (see the module docstring)."""
    reached: dict[str, int] = {}
    for source, target, _escape, count in rows:
        reached.setdefault(source, 0)
        if target is not None:
            reached[target] = reached.get(target, 0) + int(count)
    return {s: -math.log1p(n) for s, n in reached.items()}


def probabilities(candidates: Sequence[str], V: Mapping[str, float], tau: float,
                  floor: float) -> tuple[np.ndarray, list[float | None]]:
    """``p`` over ``candidates`` and the V each was drawn with (None: not estimated).

    p = (1 - floor) softmax(-V/tau) + floor/n; candidates without an estimate count
    as the lowest estimated V; with no estimate at all, p is uniform.
    """
    import numpy as np

    n = len(candidates)
    if n == 0:
        raise ValueError("no candidates to draw from")
    own = [V.get(c) for c in candidates]
    known = [v for v in own if v is not None]
    if not known:
        return np.full(n, 1.0 / n), own
    vmin = min(known)
    x = -np.array([vmin if v is None else v for v in own]) / tau
    w = np.exp(x - x.max())
    p = (1.0 - floor) * w / w.sum() + floor / n
    return p / p.sum(), own


def draw_index(p: np.ndarray, u: float) -> int:
    """Inverse-CDF draw from ``p`` with the uniform number ``u`` in [0, 1)."""
    import numpy as np

    c = np.cumsum(p)
    return int(min(np.searchsorted(c, u * c[-1], side="right"), len(p) - 1))


@dataclass
class Guide:
    """A run's stored attempts (by seq) and the potentials refitted on their prefixes.

    ``add(seq, row)`` as attempts are stored (restored ones included);
    ``choose(candidates, u, P)`` draws with the potential fitted on seqs < P, all of
    which must have been added.
    """

    selection: Selection
    rows: dict[int, Row] = field(default_factory=dict)
    _fits: dict[int, dict[str, float]] = field(default_factory=dict)
    on_refit: Callable[[int, int], None] | None = None  # (P, states estimated): for tests/bench

    def add(self, seq: int, row: Row) -> None:
        self.rows[int(seq)] = row

    def potential(self, P: int) -> dict[str, float]:
        """beta V fitted on the attempts with seq < P (cached per P)."""
        fit = self._fits.get(P)
        if fit is None:
            missing = [s for s in range(P) if s not in self.rows]
            if missing:
                raise DetbalError(f"refit point {P}: attempt {missing[0]} is not stored yet")
            fit = estimate((self.rows[s] for s in range(P)), self.selection.estimator)
            self._fits = {P: fit}  # draws move forward: keep the latest only
            if self.on_refit is not None:
                self.on_refit(P, len(fit))
        return fit

    def choose(self, candidates: Sequence[str], u: float, P: int) -> tuple[str, dict[str, Any]]:
        """The drawn candidate and the record stored with the attempt (``params.select``)."""
        sel = self.selection
        V = self.potential(P)
        p, own = probabilities(candidates, V, sel.tau, sel.floor)
        i = draw_index(p, u)
        return candidates[i], {
            "rule": sel.rule, "tau": sel.tau, "floor": sel.floor, "every": sel.every,
            "estimator": sel.estimator, "refit_at": P,
            "estimated": sum(v is not None for v in own), "candidates": len(candidates),
            "V": own[i], "p": float(p[i]),
        }


def walk_record(step_from: int, n_candidates: int) -> dict[str, Any]:
    """``params.select`` of a source reached by the walk: the attempt (words) or round
    (fit) it continues from (-1: the start) and how many states that step wrote."""
    return {"rule": "walk", "from": int(step_from), "candidates": int(n_candidates),
            "p": 1.0 / max(int(n_candidates), 1)}


def uniform_record(n_candidates: int) -> dict[str, Any]:
    """``params.select`` of a uniformly drawn source."""
    return {"rule": "uniform", "candidates": n_candidates, "p": 1.0 / n_candidates}
