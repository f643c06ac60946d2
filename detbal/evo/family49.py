"""The paper's 49-parameter family of explicit potentials (METHOD.md section 5).

V(state) is computed from the ``fam_*`` columns of a
:class:`~detbal.evo.features.FeatureMatrix` (each state parsed once, by
:func:`~detbal.evo.features.featurize`); docs/family49.md gives every formula.
In short, with p the parameters:

    E   = sum of weighted penalties and bonuses of the features      (docs/family49.md)
    E   = min(max(E, 0), max_energy)
    v   = -1 + 2 (1 - exp(min(-E / K, 700)))
    v  -= pattern_affinity_adjustment   if affinity >= pattern_affinity_threshold
                                        and a Nikuradse pattern or log_v_k_nu occurs
    v   = nan_inf_default               if v is not finite
    V   = overall_factor * min(max(v, min_potential), max_potential)
    V   = empty_input_potential         for an empty string (unscaled, as published)

:func:`family_potential` evaluates it for all states at once (numba or numpy);
:func:`family_expression` writes it as one formula over the ``fam_*`` columns in
the operator registry's terms (what the ``family49`` discovery engine reports).
A plain per-string reference implementation (its own tokenizer, feature code and
scalar energy) lives with the tests (``tests/support/family49_reference.py``) and checks both.
:func:`fit_family49` tunes the 49 parameters to minimise the action S[V] on a
run's kernel with CMA-ES (DEAP) or, as a fallback, scipy's Powell method.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from detbal.analysis.counts import Kernel
from detbal.errors import DetbalError
from detbal.evo.features import FAMILY_COLUMNS, FeatureMatrix
from detbal.progress import Progress

log = logging.getLogger(__name__)


#: the 49 named parameters and their published defaults (METHOD.md section 5)
DEFAULTS: dict[str, float] = {
    "empty_input_potential": -1.0,
    "paren_penalty": 2.0,
    "extra_char_penalty": 0.3,
    "extra_char_threshold": 1.0,
    "length_penalty_divisor": 4.0,
    "max_depth_penalty": 0.5,
    "max_depth_threshold": 1.0,
    "func_penalty": 0.28,
    "div_pow_penalty": 0.5,
    "abs_penalty": 0.75,
    "trig_penalty": 0.75,
    "nested_expr_penalty": 1.0,
    "div_zero_risk_penalty": 0.9,
    "pow_risk_penalty": 0.5,
    "sqrt_risk_penalty": 0.2,
    "no_params_penalty": 1.0,
    "few_params_penalty": 0.5,
    "few_params_threshold": 3.0,
    "optimal_params_min": 3.0,
    "optimal_params_max": 6.0,
    "optimal_params_bonus": 0.6,
    "excess_params_penalty": 1.0,
    "excess_params_threshold": 6.0,
    "freq_var_weight": 0.05,
    "freq_var_cap": 8.0,
    "entropy_bonus": 0.6,
    "log_v_bonus": 1.1,
    "log_bonus": 0.6,
    "pattern_affinity_bonus": 1.0,
    "pattern_count_divisor": 6.0,
    "linear_logv_weight": 0.8,
    "centered_linear_weight": 0.65,
    "nonlinear_weight": 0.7,
    "exp_weight": 0.35,
    "proximity_cap": 1.8,
    "proximity_bonus": 0.9,
    "simple_bonus": 1.0,
    "simple_length_threshold": 50.0,
    "simple_func_threshold": 2.0,
    "short_bonus": 0.5,
    "short_length_threshold": 25.0,
    "max_energy": 3.0,
    "K": 1.0,
    "pattern_affinity_threshold": 0.85,
    "pattern_affinity_adjustment": 0.05,
    "min_potential": -1.0,
    "max_potential": 1.0,
    "nan_inf_default": 0.0,
    "overall_factor": 2.0,
}
PARAM_NAMES: tuple[str, ...] = tuple(DEFAULTS)
N_PARAMS = len(PARAM_NAMES)
assert N_PARAMS == 49
#: parameters that divide: they must stay > 0
POSITIVE: tuple[str, ...] = ("length_penalty_divisor", "pattern_count_divisor", "K")
_MIN_POSITIVE = 1e-3
_EXP_CLAMP = 700.0


def _default_bounds() -> dict[str, tuple[float, float]]:
    out = {}
    for name, d in DEFAULTS.items():
        half = 5.0 * max(abs(d), 1.0)
        lo, hi = d - half, d + half
        if name in POSITIVE:
            lo = _MIN_POSITIVE
        out[name] = (lo, hi)
    return out


#: box the fit searches in: default +- 5 max(|default|, 1); divisors and K >= 1e-3
BOUNDS: dict[str, tuple[float, float]] = _default_bounds()


def param_array(params: np.ndarray | Mapping[str, float] | None = None) -> np.ndarray:
    """The 49 parameters as an array in ``PARAM_NAMES`` order (defaults fill a mapping's gaps).

    Raises ValueError for unknown names, a wrong length, non-finite values, or a
    divisor (``POSITIVE``) that is not > 0.
    """
    if params is None:
        arr = np.array([DEFAULTS[n] for n in PARAM_NAMES], dtype=np.float64)
    elif isinstance(params, Mapping):
        unknown = sorted(set(params) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown family parameters: {', '.join(unknown)}")
        arr = np.array([float(params.get(n, DEFAULTS[n])) for n in PARAM_NAMES], dtype=np.float64)
    else:
        arr = np.asarray(params, dtype=np.float64).reshape(-1)
        if arr.shape != (N_PARAMS,):
            raise ValueError(f"expected {N_PARAMS} parameters, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("family parameters must be finite")
    for name in POSITIVE:
        if arr[PARAM_NAMES.index(name)] <= 0:
            raise ValueError(f"family parameter {name} must be > 0")
    return arr


def param_dict(params: np.ndarray | Mapping[str, float] | None = None) -> dict[str, float]:
    """The 49 parameters as ``{name: value}``."""
    return {n: float(v) for n, v in zip(PARAM_NAMES, param_array(params))}


# -- vectorised ----------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class FamilyInputs:
    """The ``fam_*`` columns of a feature matrix, one contiguous array each."""

    cols: dict[str, np.ndarray]
    mode: str
    n_states: int

    @classmethod
    def from_features(cls, F: FeatureMatrix) -> FamilyInputs:
        if F.kind != "ansatz":
            raise DetbalError(f"the 49-parameter family needs ansatz features, not {F.kind}")
        cols = {c[4:]: np.ascontiguousarray(F.column(c), dtype=np.float64) for c in FAMILY_COLUMNS}
        # derived masks, computed once
        cols["empty_mask"] = cols["empty"] > 0
        cols["div_pow"] = cols["n_div"] + cols["n_pow"]
        cols["div_risk"] = (cols["n_div"] > 0).astype(np.float64)
        cols["pow_risk"] = (cols["n_pow"] > 0).astype(np.float64)
        nonlin = cols["logistic"] + cols["tanh"] + cols["softplus"]
        cols["nonlinear"] = nonlin
        cols["pattern_count"] = (
            cols["has_log_v"] + cols["linear_logv"] + cols["centered_linear"] + nonlin
        )
        cols["log1p_length"] = np.log1p(cols["length"])
        cols["prox_ok"] = (cols["has_log_v"] > 0) & (cols["n_params"] > 0)
        cols["key_pattern"] = (nonlin > 0) | (cols["has_log_v"] > 0)
        cols["has_v_mask"] = cols["has_log_v"] > 0
        cols["has_log_mask"] = cols["n_log"] > 0
        cols["simple_ok"] = (cols["simple_chars"] > 0) & (cols["n_pow"] == 0)
        return cls(cols=cols, mode=F.mode, n_states=F.n_states)

    def matrix(self) -> np.ndarray:
        """The columns the numba kernel reads, as one (n_states, k) C array (cached)."""
        M = self.cols.get("_nb_matrix")
        if M is None:
            from detbal.evo._family49_nb import NB_COLUMNS

            M = np.ascontiguousarray(
                np.column_stack([self.cols[c].astype(np.float64) for c in NB_COLUMNS])
                if self.n_states else np.zeros((0, len(NB_COLUMNS)))
            )
            self.cols["_nb_matrix"] = M
        return M


def _energy_terms(c: dict[str, np.ndarray], p: dict[str, float]) -> np.ndarray:
    """Clipped energy E for every state (the order of terms matches the reference)."""
    E = p["paren_penalty"] * c["bad_paren"]
    E = E + np.maximum(0.0, c["extra_chars"] - p["extra_char_threshold"]) * p["extra_char_penalty"]
    E = E + c["log1p_length"] / p["length_penalty_divisor"]
    E = E + np.maximum(0.0, c["max_depth"] - p["max_depth_threshold"]) * p["max_depth_penalty"]
    E = E + c["n_funcs"] * p["func_penalty"]
    E = E + c["div_pow"] * p["div_pow_penalty"]
    E = E + c["n_abs"] * p["abs_penalty"]
    E = E + c["n_trig"] * p["trig_penalty"]
    E = E + c["nested_expr"] * p["nested_expr_penalty"]
    E = E + c["div_risk"] * p["div_zero_risk_penalty"]
    E = E + c["pow_risk"] * p["pow_risk_penalty"]
    E = E + c["sqrt_risk"] * p["sqrt_risk_penalty"]
    n = c["n_params"]
    few_t = p["few_params_threshold"]
    params_term = np.where(
        n == 0, p["no_params_penalty"],
        np.where(
            n < few_t, p["few_params_penalty"] * (few_t - n),
            np.where(
                (p["optimal_params_min"] <= n) & (n <= p["optimal_params_max"]),
                -p["optimal_params_bonus"],
                p["excess_params_penalty"] * np.maximum(0.0, n - p["excess_params_threshold"]),
            ),
        ),
    )
    E = E + params_term
    E = E + p["freq_var_weight"] * np.minimum(c["freq_var"], p["freq_var_cap"])
    E = E - p["entropy_bonus"] * c["entropy_norm"]
    E = E - np.where(c["has_v_mask"], p["log_v_bonus"], np.where(c["has_log_mask"], p["log_bonus"], 0.0))
    affinity = c["pattern_count"] / p["pattern_count_divisor"]
    E = E - p["pattern_affinity_bonus"] * affinity
    prox = (
        p["linear_logv_weight"] * c["linear_logv"]
        + p["centered_linear_weight"] * c["centered_linear"]
        + p["nonlinear_weight"] * c["nonlinear"]
        + p["exp_weight"] * c["n_exp"]
    )
    prox = np.where(c["prox_ok"], np.minimum(p["proximity_cap"], prox), 0.0)
    E = E - p["proximity_bonus"] * prox
    length = c["length"]
    simple = c["simple_ok"] & (c["n_funcs"] <= p["simple_func_threshold"]) & (length < p["simple_length_threshold"])
    short = ~simple & (length < p["short_length_threshold"])
    E = E - np.where(simple, p["simple_bonus"], np.where(short, p["short_bonus"], 0.0))
    return np.minimum(np.maximum(E, 0.0), p["max_energy"]), affinity


ENGINES: tuple[str, ...] = ("numba", "numpy")


def family_potential(
    F: FeatureMatrix | FamilyInputs,
    params: np.ndarray | Mapping[str, float] | None = None,
    *,
    engine: Literal["numba", "numpy"] = "numba",
) -> np.ndarray:
    """V for every state of ``F`` (see the module docstring).

    ``engine="numba"``: one compiled pass over the states; ``"numpy"``: array
    expressions.  Both follow the same operations in the same order.  Pass a
    :class:`FamilyInputs` (built once) inside loops.
    """
    inputs = F if isinstance(F, FamilyInputs) else FamilyInputs.from_features(F)
    theta = param_array(params)
    if engine == "numba":
        from detbal.evo._family49_nb import family_values

        return family_values(inputs.matrix(), theta)
    if engine != "numpy":
        raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    c = inputs.cols
    p = dict(zip(PARAM_NAMES, theta.tolist()))
    E, affinity = _energy_terms(c, p)
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.minimum(-E / p["K"], _EXP_CLAMP)
        val = -1.0 + 2.0 * (1.0 - np.exp(z))
        adjust = (affinity >= p["pattern_affinity_threshold"]) & c["key_pattern"]
        val = val - np.where(adjust, p["pattern_affinity_adjustment"], 0.0)
        val = np.where(np.isfinite(val), val, p["nan_inf_default"])
    val = np.maximum(p["min_potential"], np.minimum(p["max_potential"], val))
    V = val * p["overall_factor"]
    return np.where(c["empty_mask"], p["empty_input_potential"], V)


# -- as a formula over the fam_* columns ------------------------------------------------

def family_expression(params: np.ndarray | Mapping[str, float] | None = None) -> Any:
    """The family with ``params`` as one sympy expression over the ``fam_*`` columns.

    Built from the operator registry (``where`` rules become ``step`` indicators,
    clips ``max``/``min``), so its string parses back (:func:`registry.parse_formula`),
    its LaTeX is the registry's and its numpy callable equals :func:`family_potential`
    to rounding.  Parameters enter as numbers.
    """
    import sympy

    from detbal.evo.registry import pexp, plog, pmax, pmin, step

    p = {n: sympy.Float(v, 17) for n, v in param_dict(params).items()}
    c = {name[4:]: sympy.Symbol(name) for name in FAMILY_COLUMNS}
    one, zero = sympy.Integer(1), sympy.Integer(0)

    def where(cond: Any, a: Any, b: Any) -> Any:
        return cond * a + (one - cond) * b

    def less(x: Any, t: Any) -> Any:  # 1 where x < t
        return step(t - x)

    n = c["n_params"]
    nonlin = c["logistic"] + c["tanh"] + c["softplus"]
    has_v = step(c["has_log_v"])
    E = (p["paren_penalty"] * c["bad_paren"]
         + pmax(zero, c["extra_chars"] - p["extra_char_threshold"]) * p["extra_char_penalty"]
         + plog(one + c["length"]) / p["length_penalty_divisor"]
         + pmax(zero, c["max_depth"] - p["max_depth_threshold"]) * p["max_depth_penalty"]
         + c["n_funcs"] * p["func_penalty"]
         + (c["n_div"] + c["n_pow"]) * p["div_pow_penalty"]
         + c["n_abs"] * p["abs_penalty"]
         + c["n_trig"] * p["trig_penalty"]
         + c["nested_expr"] * p["nested_expr_penalty"]
         + step(c["n_div"]) * p["div_zero_risk_penalty"]
         + step(c["n_pow"]) * p["pow_risk_penalty"]
         + c["sqrt_risk"] * p["sqrt_risk_penalty"])
    optimal = (one - less(n, p["optimal_params_min"])) * (one - step(n - p["optimal_params_max"]))
    E += where(one - step(n), p["no_params_penalty"],
               where(less(n, p["few_params_threshold"]),
                     p["few_params_penalty"] * (p["few_params_threshold"] - n),
                     where(optimal, -p["optimal_params_bonus"],
                           p["excess_params_penalty"] * pmax(zero, n - p["excess_params_threshold"]))))
    E += p["freq_var_weight"] * pmin(c["freq_var"], p["freq_var_cap"])
    E -= p["entropy_bonus"] * c["entropy_norm"]
    E -= where(has_v, p["log_v_bonus"], step(c["n_log"]) * p["log_bonus"])
    affinity = (c["has_log_v"] + c["linear_logv"] + c["centered_linear"] + nonlin) / p["pattern_count_divisor"]
    E -= p["pattern_affinity_bonus"] * affinity
    prox = (p["linear_logv_weight"] * c["linear_logv"] + p["centered_linear_weight"] * c["centered_linear"]
            + p["nonlinear_weight"] * nonlin + p["exp_weight"] * c["n_exp"])
    E -= p["proximity_bonus"] * has_v * step(n) * pmin(p["proximity_cap"], prox)
    length = c["length"]
    simple = (step(c["simple_chars"]) * (one - step(c["n_pow"]))
              * (one - step(c["n_funcs"] - p["simple_func_threshold"]))
              * less(length, p["simple_length_threshold"]))
    E -= where(simple, p["simple_bonus"], less(length, p["short_length_threshold"]) * p["short_bonus"])
    E = pmin(pmax(E, zero), p["max_energy"])
    val = -one + 2 * (one - pexp(-E / p["K"]))
    key = step(nonlin + c["has_log_v"])
    val -= (one - less(affinity, p["pattern_affinity_threshold"])) * key * p["pattern_affinity_adjustment"]
    val = pmax(p["min_potential"], pmin(p["max_potential"], val))
    return where(step(c["empty"]), p["empty_input_potential"], val * p["overall_factor"])


# -- fitting the 49 parameters to the action ---------------------------------------------

class Family49Objective:
    """S[V_theta] on a kernel's edges, with V_theta = family_potential(F, theta).

    States of the kernel are mapped to rows of ``F`` once; each call costs one
    vectorised family evaluation and one numba action pass:
    S = (1 / n_sources) sum_e T_e K(V(src_e) - V(dst_e)).
    """

    def __init__(
        self,
        F: FeatureMatrix,
        kernel: Kernel,
        *,
        penalty: str = "exp",
        beta: float = 1.0,
    ) -> None:
        from detbal.analysis.action import action_and_gradient, k_zero

        if len(kernel.src) == 0:
            raise DetbalError("the kernel has no edges to fit the family to")
        rows = F.rows(kernel.states)
        self.inputs = FamilyInputs.from_features(F.take(rows))
        self.mode = F.mode
        self.src = np.ascontiguousarray(kernel.src)
        self.dst = np.ascontiguousarray(kernel.dst)
        self.weight = np.ascontiguousarray(kernel.T, dtype=np.float64)
        self.normalisation = float(max(kernel.n_sources, 1))
        self.penalty = penalty
        self.beta = float(beta)
        self.k0 = k_zero(penalty)
        self._action = action_and_gradient
        self._grad = np.empty(kernel.n_states)
        self.n_evals = 0

    def potential(self, params: np.ndarray | Mapping[str, float] | None = None) -> np.ndarray:
        """V for every kernel state."""
        return family_potential(self.inputs, params)

    def action_of(self, V: np.ndarray) -> float:
        S, _ = self._action(
            V, self.src, self.dst, self.weight, kernel=self.penalty, beta=self.beta,
            normalisation=self.normalisation, grad_out=self._grad,
        )
        return S

    def __call__(self, params: np.ndarray | Mapping[str, float] | None = None) -> float:
        self.n_evals += 1
        S = self.action_of(self.potential(params))
        return S if math.isfinite(S) else 1e300


@dataclass(frozen=True, eq=False)
class Family49Fit:
    """Result of :func:`fit_family49`; ``V``/``V_default`` follow ``states``."""

    params: dict[str, float]
    action: float
    action_default: float
    k0: float
    penalty: str
    beta: float
    method: str
    seed: int
    mode: str
    n_evals: int
    history: tuple[float, ...]
    states: tuple[str, ...]
    V: np.ndarray
    V_default: np.ndarray
    direction: dict[str, float]
    direction_default: dict[str, float]
    n_edges: int
    n_sources: int
    elapsed_s: float
    params_default: dict[str, float]

    @property
    def params_array(self) -> np.ndarray:
        return param_array(self.params)

    def summary(self) -> dict[str, object]:
        """JSON-ready summary (no per-state arrays)."""
        return {
            "family": "family49", "tokenizer_mode": self.mode, "method": self.method,
            "seed": self.seed, "kernel": self.penalty, "beta": self.beta, "k0": self.k0,
            "action_default": self.action_default, "action": self.action,
            "n_evals": self.n_evals, "n_states": len(self.states), "n_edges": self.n_edges,
            "n_sources": self.n_sources, "direction_default": self.direction_default,
            "direction": self.direction, "params": self.params, "elapsed_s": self.elapsed_s,
        }


def _search_space(start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scale, lower, upper): theta = start + scale * x, clipped to BOUNDS."""
    d = np.array([DEFAULTS[n] for n in PARAM_NAMES])
    scale = np.maximum(np.abs(d), 0.5)
    lo = np.array([BOUNDS[n][0] for n in PARAM_NAMES])
    hi = np.array([BOUNDS[n][1] for n in PARAM_NAMES])
    return scale, np.minimum(lo, start), np.maximum(hi, start)


def fit_family49(
    F: FeatureMatrix,
    kernel: Kernel,
    *,
    method: Literal["cmaes", "scipy"] = "cmaes",
    seed: int | np.random.Generator = 0,
    penalty: str = "exp",
    beta: float = 1.0,
    max_evals: int = 3000,
    sigma0: float = 0.3,
    popsize: int | None = None,
    start: np.ndarray | Mapping[str, float] | None = None,
    progress: Progress | None = None,
) -> Family49Fit:
    """Tune the 49 parameters to minimise S[V] on ``kernel`` (METHOD.md sections 4-5).

    Search in x with theta = start + s * x, s_i = max(|default_i|, 0.5), each theta
    clipped to :data:`BOUNDS`.  ``cmaes``: DEAP's CMA-ES from x = 0 with step
    ``sigma0`` and ``popsize`` children per generation (DEAP's default 4 + 3 ln 49
    = 15), until ``max_evals``; its normal draws come from
    ``numpy.random.default_rng(seed)`` (``seed`` may be a Generator), never from numpy's
    global generator, so a seed gives the same result.  ``scipy``: Powell with
    bounds (deterministic; ``seed`` unused).  The best candidate ever evaluated is
    returned; it is never worse than ``start``.  ``progress(n, action=...)`` is
    called after each generation (or every 50 evaluations for scipy).
    """
    t0 = time.perf_counter()
    objective = Family49Objective(F, kernel, penalty=penalty, beta=beta)
    theta0 = param_array(start)
    scale, lo, hi = _search_space(theta0)

    def to_theta(x: np.ndarray) -> np.ndarray:
        return np.clip(theta0 + scale * np.asarray(x, dtype=np.float64), lo, hi)

    S0 = objective(theta0)
    best_theta, best_S = theta0.copy(), S0
    history: list[float] = [S0]

    if method == "cmaes":
        from deap import base, cma

        rng = np.random.default_rng(seed)

        class _SeededStrategy(cma.Strategy):
            """DEAP's CMA-ES drawing from ``rng`` instead of numpy's global generator."""

            def __init__(self, generator: np.random.Generator, **kwargs: object) -> None:
                self.rng = generator
                super().__init__(**kwargs)

            def generate(self, ind_init: Callable[..., object]) -> list[object]:
                arz = self.rng.standard_normal((self.lambda_, self.dim))
                arz = self.centroid + self.sigma * np.dot(arz, self.BD.T)
                return list(map(ind_init, arz))

        class _MinFitness(base.Fitness):
            weights = (-1.0,)

        class _Individual(np.ndarray):
            fitness: base.Fitness

        def make(a: np.ndarray) -> _Individual:
            ind = np.array(a, dtype=np.float64).view(_Individual)
            ind.fitness = _MinFitness()
            return ind

        kwargs = {} if popsize is None else {"lambda_": int(popsize)}
        strategy = _SeededStrategy(rng, centroid=np.zeros(N_PARAMS), sigma=sigma0, **kwargs)
        evals = 1
        while evals < max_evals:
            population = strategy.generate(make)
            for ind in population:
                theta = to_theta(ind)
                S = objective(theta)
                ind.fitness.values = (S,)
                if S < best_S:
                    best_S, best_theta = S, theta
            evals += len(population)
            strategy.update(population)
            history.append(best_S)
            if progress is not None:
                progress(len(population), action=f"{best_S:.5f}")
    elif method == "scipy":
        from scipy import optimize

        calls = [0]

        def fun(x: np.ndarray) -> float:
            nonlocal best_S, best_theta
            theta = to_theta(x)
            S = objective(theta)
            if S < best_S:
                best_S, best_theta = S, theta
            calls[0] += 1
            if calls[0] % 50 == 0:
                history.append(best_S)
                if progress is not None:
                    progress(50, action=f"{best_S:.5f}")
            return S

        bounds = list(zip((lo - theta0) / scale, (hi - theta0) / scale))
        optimize.minimize(
            fun, np.zeros(N_PARAMS), method="Powell", bounds=bounds,
            options={"maxfev": max(1, max_evals - 1), "xtol": 1e-4, "ftol": 1e-10},
        )
        history.append(best_S)
    else:
        raise DetbalError(f"unknown fit method {method!r}: use cmaes or scipy")

    from detbal.evo.transitions import direction_stats

    V = objective.potential(best_theta)
    V0 = objective.potential(theta0)
    fit = Family49Fit(
        params=param_dict(best_theta), action=float(best_S), action_default=float(S0),
        k0=objective.k0, penalty=penalty, beta=float(beta), method=method,
        seed=int(seed) if isinstance(seed, (int, np.integer)) else -1, mode=F.mode, n_evals=objective.n_evals, history=tuple(history),
        states=kernel.states, V=V, V_default=V0,
        direction=direction_stats(V, kernel), direction_default=direction_stats(V0, kernel),
        n_edges=int(len(kernel.src)), n_sources=kernel.n_sources,
        elapsed_s=time.perf_counter() - t0, params_default=param_dict(theta0),
    )
    log.info("family49 %s fit: S %.5f -> %.5f in %d evaluations", method, S0, best_S, fit.n_evals)
    return fit
