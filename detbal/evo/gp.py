"""Genetic programming (DEAP) for explicit potentials V(state) = a * tree(features).

Fitness is the action (METHOD.md section 4) of the candidate potential,

    S[a u] = (1 / n_sources) * sum_{edges f->g} T(g<-f) K(a (u_f - u_g)),   u = tree(X),

computed with the numba kernel :func:`detbal.analysis.action.action_and_gradient`.
S depends on V only through differences and on the overall scale, so each
individual gets its best scale ``a`` by a 1-D convex minimisation
(:func:`best_scale`); the constant offset is irrelevant.  A tree is compiled once
(to a Python expression over numpy columns, via the operator registry) and
evaluated over all states at once.

Search: ramped half-and-half initialisation, one-point crossover, a mixture of
subtree, node-replacement, constant and shrink mutations under a height limit,
double tournament selection (fitness first, then a size tournament: parsimony
pressure), elitism, a hall of fame and a per-complexity archive for the Pareto
front; after ``restart_after`` generations without improvement all but the elite
are replaced by fresh random trees.  After the search, the numeric constants of the hall of fame and the
front are refined with scipy (Nelder-Mead over the constants, best scale inside).

The ``map`` used for evaluation is swappable (:func:`detbal.parallel.make_backend`,
re-exported here): the builtin map, a process pool, or a Dask cluster; results do
not depend on it.  The same
seed gives the same result on one machine: DEAP's operators and this module draw
from a private ``random.Random(seed)`` (swapped in for the run, see
:func:`_private_random`); neither Python's global ``random`` nor numpy's global
generator is used or touched.
"""

from __future__ import annotations

import logging
import math
import operator
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize

from detbal.analysis.action import action_and_gradient, k_zero
from detbal.errors import DetbalError
from detbal.evo import registry
from detbal.evo.pareto import Formula, pareto_front
from detbal.parallel import DaskBackend, MapBackend, PoolBackend, SerialBackend, make_backend
from detbal.progress import Progress

log = logging.getLogger(__name__)


#: range of freshly drawn ephemeral constants
CONST_RANGE = (-2.0, 2.0)


# -- the data a fitness evaluation needs --------------------------------------
@dataclass(frozen=True)
class ActionData:
    """Feature columns and kernel edges (picklable: shipped once to every worker)."""

    columns: np.ndarray  # (n_features, n_states), C-contiguous
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    normalisation: float
    penalty: str = "exp"
    beta: float = 1.0
    max_scale: float = 50.0

    @classmethod
    def build(cls, X: np.ndarray, src: np.ndarray, dst: np.ndarray, weight: np.ndarray,
              normalisation: float, *, penalty: str = "exp", beta: float = 1.0,
              max_scale: float = 50.0) -> ActionData:
        """Keep only the states that edges touch (renumbered), features as columns."""
        k_zero(penalty)
        X = np.asarray(X, dtype=np.float64)
        src = np.asarray(src)
        dst = np.asarray(dst)
        used = np.unique(np.concatenate([src, dst])) if len(src) else np.zeros(0, dtype=np.int64)
        local = np.full(X.shape[0], -1, dtype=np.int64)
        local[used] = np.arange(len(used))
        return cls(
            columns=np.ascontiguousarray(X[used].T),
            src=local[src].astype(np.int32), dst=local[dst].astype(np.int32),
            weight=np.ascontiguousarray(weight, dtype=np.float64),
            normalisation=float(max(normalisation, 1e-300)), penalty=penalty, beta=float(beta),
            max_scale=float(max_scale),
        )

    @property
    def constant_action(self) -> float:
        """S of a constant potential: K(0) sum T / n_sources."""
        return k_zero(self.penalty) * float(self.weight.sum()) / self.normalisation


def best_scale(u: np.ndarray, src: np.ndarray, dst: np.ndarray, weight: np.ndarray, *,
               penalty: str = "exp", beta: float = 1.0, normalisation: float = 1.0,
               max_scale: float = 50.0) -> tuple[float, float]:
    """``(S, a)`` with a = argmin_a S[a u] (convex in a; bracketed root of dS/da).

    ``u`` is standardised first, so ``max_scale`` bounds the standard deviation of
    beta*V over the states the edges touch.  Non-finite ``u`` gives ``(inf, nan)``.
    """
    u = np.asarray(u, dtype=np.float64)
    if len(src) == 0:
        return 0.0, 0.0
    if not np.all(np.isfinite(u)) or np.max(np.abs(u)) > 1e12:
        return math.inf, math.nan
    sd = float(u.std())
    if sd <= 1e-12 * (1.0 + float(np.abs(u).max())):
        return k_zero(penalty) * float(weight.sum()) / normalisation, 0.0
    z = (u - u.mean()) / sd
    grad = np.empty_like(z)
    cache: dict[float, tuple[float, float]] = {}

    def f(b: float) -> tuple[float, float]:
        if b not in cache:
            S, g = action_and_gradient(b * z, src, dst, weight, kernel=penalty, beta=beta,
                                       normalisation=normalisation, grad_out=grad)
            cache[b] = (S, float(g @ z))
        return cache[b]

    lo, hi = -max_scale, max_scale
    if f(lo)[1] >= 0.0:
        b = lo
    elif f(hi)[1] <= 0.0:
        b = hi
    else:
        b = optimize.brentq(lambda x: f(x)[1], lo, hi, xtol=1e-7, rtol=1e-10, maxiter=200)
    S = f(b)[0]
    return S, b / sd


# -- compiled trees, cached per process -------------------------------------------
_COMPILED: dict[str, Callable[..., Any]] = {}


def _compiled(code: str) -> Callable[..., Any]:
    fn = _COMPILED.get(code)
    if fn is None:
        if len(_COMPILED) > 50_000:
            _COMPILED.clear()
        fn = registry.compile_code(code)
        _COMPILED[code] = fn
    return fn


Spec = tuple[str, tuple[float, ...]]


class Evaluator:
    """``evaluator((code, constants)) -> (action, scale)``; picklable."""

    def __init__(self, data: ActionData) -> None:
        self.data = data

    def values(self, spec: Spec) -> np.ndarray:
        code, consts = spec
        with np.errstate(all="ignore"):
            out = _compiled(code)(self.data.columns, np.asarray(consts, dtype=np.float64))
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (self.data.columns.shape[1],))

    def __call__(self, spec: Spec) -> tuple[float, float]:
        d = self.data
        return best_scale(self.values(spec), d.src, d.dst, d.weight, penalty=d.penalty, beta=d.beta,
                          normalisation=d.normalisation, max_scale=d.max_scale)


# -- the search ---------------------------------------------------------------------
@dataclass(frozen=True)
class GPConfig:
    """Settings of :func:`run_gp`."""

    population: int = 200
    generations: int = 30
    operators: tuple[str, ...] = registry.DEFAULT_OPERATORS
    init_depth: tuple[int, int] = (1, 3)
    max_height: int = 7
    cxpb: float = 0.6
    mutpb: float = 0.35
    tournament: int = 4
    parsimony: float = 1.4
    elite: int = 2
    hall_of_fame: int = 10
    refine: bool = True
    refine_iterations: int = 300
    max_scale: float = 50.0
    restart_after: int | None = None  # re-seed all but the elite after this many flat generations
    target: float | None = None  # stop once the best action is <= target

    def __post_init__(self) -> None:
        if self.population < 4:
            raise DetbalError(f"population must be at least 4, got {self.population}")
        if self.generations < 0:
            raise DetbalError(f"generations must be >= 0, got {self.generations}")
        if not 1.0 <= self.parsimony <= 2.0:
            raise DetbalError(f"parsimony size must be in [1, 2], got {self.parsimony}")
        registry.operators(self.operators)


@dataclass(frozen=True)
class GPResult:
    """Outcome of :func:`run_gp`: the Pareto front (by complexity) and the hall of fame."""

    front: tuple[Formula, ...]
    hall_of_fame: tuple[Formula, ...]
    history: tuple[dict[str, float], ...]
    evaluations: int
    generations: int
    seconds: float
    seed: int
    names: tuple[str, ...]
    config: GPConfig = field(default_factory=GPConfig)

    @property
    def best(self) -> Formula:
        """Lowest action over front and hall of fame."""
        return min(self.front + self.hall_of_fame, key=lambda f: (f.action, f.complexity))

    @property
    def formulas(self) -> tuple[Formula, ...]:
        """Front and hall of fame, no duplicates, by complexity."""
        seen: dict[str, Formula] = {}
        for f in self.front + self.hall_of_fame:
            seen.setdefault(f.sympy, f)
        return tuple(sorted(seen.values(), key=lambda f: (f.complexity, f.action)))


def _random_constant() -> float:
    return round(random.uniform(*CONST_RANGE), 2)


def _creator() -> tuple[type, type]:
    from deap import base, creator, gp

    if not hasattr(creator, "DetbalFitness"):
        creator.create("DetbalFitness", base.Fitness, weights=(-1.0,))
    if not hasattr(creator, "DetbalTree"):
        creator.create("DetbalTree", gp.PrimitiveTree, fitness=creator.DetbalFitness, scale=1.0)
    return creator.DetbalFitness, creator.DetbalTree


def primitive_set(names: Sequence[str], operators: Sequence[str] | None = None) -> Any:
    """A DEAP primitive set over feature ``names`` with the registry's operators."""
    from deap import gp

    pset = gp.PrimitiveSet("V", len(names))
    pset.renameArguments(**{f"ARG{i}": n for i, n in enumerate(names)})
    registry.add_to_pset(pset, operators)
    pset.addEphemeralConstant("detbal_const", _random_constant)
    return pset


class _Search:
    """One GP run (internal): toolbox, caches, archive."""

    def __init__(self, data: ActionData, names: Sequence[str], config: GPConfig,
                 backend: MapBackend) -> None:
        from deap import base, gp, tools

        self.data = data
        self.names = tuple(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.config = config
        self.pset = primitive_set(self.names, config.operators)
        _, Tree = _creator()
        self.Tree = Tree
        tb = base.Toolbox()
        lo, hi = config.init_depth
        tb.register("expr", gp.genHalfAndHalf, pset=self.pset, min_=lo, max_=hi)
        tb.register("individual", tools.initIterate, Tree, tb.expr)
        tb.register("population", tools.initRepeat, list, tb.individual)
        tb.register("select", tools.selDoubleTournament, fitness_size=config.tournament,
                    parsimony_size=config.parsimony, fitness_first=True)
        tb.register("mate", gp.cxOnePoint)
        tb.register("expr_mut", gp.genFull, min_=0, max_=2)
        tb.register("mutate", self._mutate)
        limit = gp.staticLimit(key=operator.attrgetter("height"), max_value=config.max_height)
        tb.decorate("mate", limit)
        tb.decorate("mutate", limit)
        self.evaluator = Evaluator(data)
        tb.register("evaluate", self.evaluator)
        tb.register("map", backend.map)
        self.toolbox = tb
        self.cache: dict[Spec, tuple[float, float]] = {}
        self.archive: dict[int, tuple[float, Any]] = {}  # complexity -> (action, tree)
        self.evaluations = 0

    # variation
    def _mutate(self, ind: Any) -> tuple[Any]:
        from deap import gp

        r = random.random()
        if r < 0.45:
            return gp.mutUniform(ind, expr=self.toolbox.expr_mut, pset=self.pset)
        if r < 0.65:
            return gp.mutNodeReplacement(ind, pset=self.pset)
        if r < 0.9 and any(registry.is_constant(n) for n in ind):
            return self._mut_constant(ind)
        return gp.mutShrink(ind)

    @staticmethod
    def _mut_constant(ind: Any) -> tuple[Any]:
        """Gaussian step on one constant (relative and absolute parts)."""
        positions = [i for i, n in enumerate(ind) if registry.is_constant(n)]
        i = random.choice(positions)
        node = ind[i]
        new = type(node)()
        new.value = float(node.value) + random.gauss(0.0, 0.1 + 0.2 * abs(float(node.value)))
        ind[i] = new
        return (ind,)

    # evaluation
    def spec(self, ind: Any) -> Spec:
        code = registry.tree_code(ind, self.index)
        return code, tuple(float(x) for x in registry.tree_constants(ind))

    def evaluate(self, individuals: Sequence[Any]) -> int:
        todo = [ind for ind in individuals if not ind.fitness.valid]
        specs = [self.spec(ind) for ind in todo]
        fresh = list(dict.fromkeys(s for s in specs if s not in self.cache))
        if fresh:
            for s, r in zip(fresh, self.toolbox.map(self.toolbox.evaluate, fresh)):
                self.cache[s] = r
            self.evaluations += len(fresh)
        for ind, s in zip(todo, specs):
            S, a = self.cache[s]
            ind.fitness.values = (S if math.isfinite(S) else math.inf,)
            ind.scale = a
            self._archive(ind)
        return len(fresh)

    def _archive(self, ind: Any) -> None:
        S = ind.fitness.values[0]
        if not math.isfinite(S):
            return
        c = registry.complexity(ind)
        best = self.archive.get(c)
        if best is None or S < best[0]:
            self.archive[c] = (S, self.toolbox.clone(ind))

    # refinement and export
    def refine(self, ind: Any) -> tuple[np.ndarray, float, float]:
        """Constants and scale minimising the action, starting from the tree's own."""
        code, consts0 = self.spec(ind)
        c0 = np.asarray(consts0, dtype=np.float64)
        S0, a0 = self.evaluator((code, consts0))
        if len(c0) == 0 or not self.config.refine or not math.isfinite(S0):
            return c0, S0, a0

        def objective(c: np.ndarray) -> float:
            S, _ = self.evaluator((code, tuple(c)))
            return S if math.isfinite(S) else 1e300

        res = optimize.minimize(
            objective, c0, method="Nelder-Mead",
            options={"maxiter": self.config.refine_iterations * len(c0), "xatol": 1e-8,
                     "fatol": 1e-12 * max(1.0, abs(S0))},
        )
        if res.fun < S0:
            c = np.asarray(res.x, dtype=np.float64)
            S, a = self.evaluator((code, tuple(c)))
            if S < S0:
                return c, S, a
        return c0, S0, a0

    def formula(self, ind: Any) -> Formula:
        import sympy

        consts, S, a = self.refine(ind)
        expr = registry.tree_to_sympy(ind, consts)
        scaled = sympy.Float(float(a), 17) * expr if math.isfinite(a) else expr
        return Formula(
            expr=scaled, names=self.names, complexity=registry.complexity(ind), action=float(S),
            loss=float(S), engine="gp", equation=f"{a:.6g} * {registry.tree_string(ind, consts)}",
            scale=float(a),
        )


@contextmanager
def _private_random(seed: int) -> Iterator[None]:
    """DEAP's operators and this module draw from a private ``random.Random(seed)``.

    DEAP uses the global ``random`` module, and so do other threads of the process
    (a Dask client's, for instance): with the global generator, a seeded search
    would depend on their timing.  The caller's global state is left untouched.
    """
    import deap.gp
    import deap.tools.crossover
    import deap.tools.mutation
    import deap.tools.selection

    rng = random.Random(seed)
    modules = [deap.gp, deap.tools.crossover, deap.tools.mutation, deap.tools.selection,
               sys.modules[__name__]]
    saved = [m.random for m in modules]  # type: ignore[attr-defined]
    for m in modules:
        m.random = rng  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for m, original in zip(modules, saved):
            m.random = original  # type: ignore[attr-defined]


def run_gp(
    X: np.ndarray,
    names: Sequence[str],
    src: np.ndarray,
    dst: np.ndarray,
    weight: np.ndarray,
    normalisation: float,
    *,
    penalty: str = "exp",
    beta: float = 1.0,
    config: GPConfig | None = None,
    seed: int = 0,
    scheduler: Any = None,
    backend: MapBackend | None = None,
    progress: Progress | None = None,
) -> GPResult:
    """Search for V = a * tree(X) minimising the action on edges ``src -> dst`` with weights T
    (``penalty``: the action's K, ``"exp"`` or ``"softplus"``).

    ``X`` has one row per state (indices of ``src``/``dst``) and one column per
    feature; ``names`` must be identifiers (see :func:`registry.symbol_names`).
    """
    from deap import tools

    config = config or GPConfig()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise DetbalError(f"feature matrix has shape {X.shape}, expected (states, {len(names)})")
    if X.shape[1] == 0:
        raise DetbalError("no features to build formulas from")
    if len(src) == 0:
        raise DetbalError("the kernel has no edges: nothing to fit")
    bad = [n for n, s in zip(names, registry.symbol_names(names)) if n != s]
    if bad:
        raise DetbalError(f"feature names must be identifiers, got {', '.join(bad[:5])}")
    data = ActionData.build(X, src, dst, weight, normalisation, penalty=penalty, beta=beta,
                            max_scale=config.max_scale)
    own_backend = backend is None
    backend = backend or make_backend(scheduler)
    t0 = time.perf_counter()
    with _private_random(seed):
        try:
            search = _Search(data, names, config, backend)
            tb = search.toolbox
            hof = tools.HallOfFame(config.hall_of_fame)
            pop = tb.population(n=config.population)
            search.evaluate(pop)
            hof.update(pop)
            history = [_stats(0, pop, search.evaluations) | {"restarts": 0}]
            if progress:
                progress(0, best=f"{history[-1]['best']:.4g}")
            gen = 0
            last_best, flat, restarts = hof[0].fitness.values[0], 0, 0
            while gen < config.generations and not _reached(hof, config.target):
                gen += 1
                n_elite = min(config.elite, len(hof))
                if config.restart_after and flat >= config.restart_after:
                    offspring = tb.population(n=len(pop) - n_elite)  # stagnation: fresh blood
                    flat, restarts = 0, restarts + 1
                else:
                    offspring = _vary(tb.select(pop, len(pop) - n_elite), tb, config.cxpb, config.mutpb)
                search.evaluate(offspring)
                pop = offspring + [tb.clone(h) for h in hof[:n_elite]]
                hof.update(pop)
                best_now = hof[0].fitness.values[0]
                flat = 0 if best_now < last_best - 1e-9 * abs(last_best) else flat + 1
                last_best = min(last_best, best_now)
                history.append(_stats(gen, pop, search.evaluations) | {"restarts": restarts})
                if progress:
                    progress(1, best=f"{history[-1]['best']:.4g}", size=f"{history[-1]['size']:.1f}")
            front_trees = [tree for _, (_, tree) in sorted(search.archive.items())]
            front_trees = _front_trees(front_trees, search)
            hof_formulas = tuple(search.formula(h) for h in hof)
            front = pareto_front(list(hof_formulas) + [search.formula(t) for t in front_trees])
        finally:
            if own_backend:
                backend.close()
    return GPResult(
        front=front, hall_of_fame=tuple(sorted(hof_formulas, key=lambda f: f.action)),
        history=tuple(history), evaluations=search.evaluations, generations=gen,
        seconds=time.perf_counter() - t0, seed=seed, names=tuple(names), config=config,
    )


def _reached(hof: Any, target: float | None) -> bool:
    return target is not None and len(hof) > 0 and hof[0].fitness.values[0] <= target


def _front_trees(trees: list[Any], search: _Search) -> list[Any]:
    """Archive entries on the (complexity, action) front before refinement."""
    out, best = [], math.inf
    for t in trees:
        S = search.archive[registry.complexity(t)][0]
        if S < best:
            out.append(t)
            best = S
    return out


def _vary(offspring: list[Any], tb: Any, cxpb: float, mutpb: float) -> list[Any]:
    """Clone, then crossover neighbours and mutate (as ``deap.algorithms.varAnd``)."""
    off = [tb.clone(ind) for ind in offspring]
    for i in range(1, len(off), 2):
        if random.random() < cxpb:
            off[i - 1], off[i] = tb.mate(off[i - 1], off[i])
            del off[i - 1].fitness.values, off[i].fitness.values
    for i in range(len(off)):
        if random.random() < mutpb:
            (off[i],) = tb.mutate(off[i])
            del off[i].fitness.values
    return off


def _stats(gen: int, pop: Sequence[Any], evaluations: int) -> dict[str, float]:
    fit = np.array([ind.fitness.values[0] for ind in pop])
    finite = fit[np.isfinite(fit)]
    return {
        "generation": gen,
        "evaluations": evaluations,
        "best": float(finite.min()) if finite.size else math.inf,
        "median": float(np.median(finite)) if finite.size else math.inf,
        "size": float(np.mean([len(ind) for ind in pop])),
    }


__all__ = [
    "ActionData", "DaskBackend", "Evaluator", "GPConfig", "GPResult", "MapBackend", "PoolBackend",
    "SerialBackend", "best_scale", "make_backend", "primitive_set", "run_gp",
]
