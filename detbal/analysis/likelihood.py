"""The likelihood potential: quasi-symmetry fitted to the counts themselves.

Given the number of transitions between two sampled sources f and g in either
direction, n_fg + n_gf, the count f -> g is binomial with

    logit P(f -> g | f <-> g) = log N0(f) - log N0(g) + beta (V(f) - V(g))

(detailed balance, T(g<-f)/T(f<-g) = exp(beta (V_f - V_g)), read as a
Bradley-Terry model with offsets).  Every pair whose two states were both sampled
as a source counts, including pairs seen in one direction only: they are
binomial trials whose outcomes all went one way.  With W = beta V + log N0 the
negative log-likelihood is sum_e n_e log(1 + exp(-(W_f - W_g))), the softplus
action with the counts as weights, so the compiled Newton-CG solver of the
least-action fit (:mod:`detbal.analysis._newton`) minimises it; its Hessian is
the weighted graph Laplacian sum_pairs (n_fg + n_gf) p (1 - p), the binomial
Fisher information.

**Prior.** beta V ~ N(0, tau^2) independently, which adds |beta V|^2 / (2 tau^2)
(the Hessian gains 1/tau^2 on the diagonal).  tau is chosen by empirical Bayes:
it maximises the Laplace approximation of the marginal likelihood

    log p(n | tau) ~ -NLL(V*) - |V*|^2 / (2 tau^2) - m log tau - 1/2 log det H(tau)

(V* the posterior mode, H the Hessian there; log det from a sparse LU).  We use
the marginal likelihood rather than held-out likelihood because it uses every
count (on sparse data most states have a handful of transitions, and holding
some out changes which states can be fitted at all), it is deterministic, and
it costs one factorisation per trial width instead of one refit per fold.

**Errors.** The Laplace posterior standard deviation sqrt(diag H^-1) (gauge:
zero mean over the fitted states, so var(V_i - mean V) = (H^-1)_ii - 1/(m/tau^2)),
and, on request, a bootstrap (attempts resampled per source, the MAP refitted at
the same tau).  Shrinkage makes the bootstrap spread smaller than the posterior
one for weakly constrained states: the bootstrap measures the spread of the
estimate, the posterior the error about the truth.

**Which states get a number.** Only states sampled as a source that share at
least one pair (a transition either way) with another sampled source, in the
largest connected component of that pair graph.  The others are flagged, never
given the prior's value: ``not_sampled`` (never a source: nothing says how often
it would have left), ``dropped`` (removed by the N0 cut), ``no_pairs`` (a source whose
transitions all go to or come from unsampled states), ``other_component`` (the
data fix V there only relative to its own component).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from detbal.analysis.counts import Kernel
from detbal.analysis.potential import PotentialFit
from detbal.analysis.pvalues import BootstrapPValue
from detbal.analysis.resample import (
    SequentialStop,
    map_replicates,
    map_until,
    replicate_seeds,
    sample_edge_counts,
)
from detbal.errors import DetbalError
from detbal.parallel import MapBackend
from detbal.progress import Progress

#: range of prior widths (of beta V) searched by empirical Bayes
PRIOR_WIDTH_RANGE = (0.05, 30.0)
#: dense inverse for the Laplace errors up to this many states, LU solves beyond
_DENSE_LIMIT = 3000


@dataclass(frozen=True)
class PairData:
    """Directed edges f -> g with n > 0 between states that were both sampled as a source."""

    n_states: int
    src: np.ndarray
    dst: np.ndarray
    count: np.ndarray
    offset: np.ndarray  # log N0 per state (0 where N0 = 0)
    sampled: np.ndarray


def pair_data(kernel: Kernel, count: np.ndarray | None = None) -> PairData:
    """The likelihood's data from a kernel (``count`` replaces its edge counts)."""
    c = kernel.count if count is None else np.asarray(count, dtype=np.float64)
    sampled = kernel.kept & (kernel.counts.attempts > 0) & (kernel.n0 > 0)
    ok = sampled[kernel.src] & sampled[kernel.dst] & (c > 0)
    with np.errstate(divide="ignore"):
        offset = np.where(kernel.n0 > 0, np.log(np.where(kernel.n0 > 0, kernel.n0, 1.0)), 0.0)
    return PairData(kernel.n_states, kernel.src[ok], kernel.dst[ok], c[ok], offset, sampled)


@dataclass(frozen=True)
class _Domain:
    states: np.ndarray  # global indices of the fitted states (main component)
    local: np.ndarray  # global -> local, -1 outside
    label: np.ndarray  # pair-graph component per state, -1 outside the pair graph
    main: int


def _domain(data: PairData) -> _Domain:
    n = data.n_states
    graph = sparse.coo_matrix((np.ones(len(data.src)), (data.src, data.dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    in_graph = np.zeros(n, dtype=bool)
    in_graph[data.src] = True
    in_graph[data.dst] = True
    label = np.where(in_graph, labels, -1)
    if not in_graph.any():
        return _Domain(np.zeros(0, dtype=np.int64), np.full(n, -1), label, -1)
    sizes = np.bincount(label[in_graph])
    main = int(np.argmax(sizes))
    states = np.flatnonzero(label == main)
    local = np.full(n, -1, dtype=np.int64)
    local[states] = np.arange(len(states))
    return _Domain(states, local, label, main)


@dataclass(frozen=True)
class _Problem:
    src: np.ndarray  # local indices, int32
    dst: np.ndarray
    count: np.ndarray
    centre: np.ndarray  # log N0 of the fitted states: the prior mean of W
    m: int


def _problem(data: PairData, dom: _Domain, count: np.ndarray | None = None) -> _Problem:
    c = data.count if count is None else count
    s, d = dom.local[data.src], dom.local[data.dst]
    keep = (s >= 0) & (d >= 0) & (c > 0)
    return _Problem(s[keep].astype(np.int32), d[keep].astype(np.int32), c[keep].astype(np.float64),
                    data.offset[dom.states], len(dom.states))


def _nll(W: np.ndarray, p: _Problem) -> float:
    z = W[p.src] - W[p.dst]
    return float(np.sum(p.count * np.logaddexp(0.0, -z)))


def _map(p: _Problem, ridge: float, W0: np.ndarray, tol: float = 1e-12,
         max_iter: int = 500) -> tuple[np.ndarray, bool]:
    """Posterior mode of W = beta V + log N0 (prior mean log N0, precision ``ridge``)."""
    from detbal.analysis._newton import CONVERGED_F, CONVERGED_G, minimise_action
    from detbal.analysis.action import SOFTPLUS

    W, _, status, _, _, _ = minimise_action(
        p.src, p.dst, p.count, SOFTPLUS, 1.0, W0, ftol=tol, gtol=1e-9, max_iter=max_iter,
        ridge=ridge, centre=p.centre,
    )
    return W, status in (CONVERGED_F, CONVERGED_G)


def information_matrix(p: _Problem, W: np.ndarray, ridge: float = 0.0) -> sparse.csc_matrix:
    """Fisher information (weighted Laplacian, weights n p (1 - p)) plus ``ridge`` on the diagonal."""
    z = W[p.src] - W[p.dst]
    sig = 0.5 * (1.0 + np.tanh(0.5 * z))
    c = p.count * sig * (1.0 - sig)
    rows = np.concatenate([p.src, p.dst, p.src, p.dst, np.arange(p.m)])
    cols = np.concatenate([p.src, p.dst, p.dst, p.src, np.arange(p.m)])
    vals = np.concatenate([c, c, -c, -c, np.full(p.m, ridge)])
    return sparse.csc_matrix((vals, (rows, cols)), shape=(p.m, p.m))


def _logdet(H: sparse.csc_matrix) -> float:
    from scipy.sparse.linalg import splu

    lu = splu(H, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    return float(np.sum(np.log(np.abs(lu.U.diagonal()))))


def _inverse_diagonal(H: sparse.csc_matrix) -> np.ndarray:
    """diag(H^-1) of a symmetric positive definite H.

    States hanging off the graph (degree <= 1, repeatedly) are eliminated first, exactly:
    eliminating a leaf l with neighbour p (pivot d, coupling h) lowers H_pp by h^2/d, and
    afterwards (H^-1)_ll = 1/d + (h/d)^2 (H^-1)_pp.  The remaining core is inverted densely
    up to ``_DENSE_LIMIT`` states, by blocks of sparse LU solves beyond.
    """
    H = sparse.csr_matrix(H)
    m = H.shape[0]
    diag = H.diagonal().astype(float).copy()
    off = H - sparse.diags(H.diagonal())
    off.eliminate_zeros()
    nbrs = [dict(zip(off.indices[off.indptr[i]:off.indptr[i + 1]].tolist(),
                     off.data[off.indptr[i]:off.indptr[i + 1]].tolist())) for i in range(m)]
    alive = np.ones(m, dtype=bool)
    stack = [i for i in range(m) if len(nbrs[i]) <= 1]
    order: list[tuple[int, int, float, float]] = []
    while stack:
        leaf = stack.pop()
        if not alive[leaf] or len(nbrs[leaf]) > 1:
            continue
        alive[leaf] = False
        d = diag[leaf]
        if nbrs[leaf]:
            ((p, h),) = nbrs[leaf].items()
            diag[p] -= h * h / d
            del nbrs[p][leaf]
            order.append((leaf, p, h, d))
            if alive[p] and len(nbrs[p]) <= 1:
                stack.append(p)
        else:
            order.append((leaf, -1, 0.0, d))
        nbrs[leaf] = {}
    out = np.empty(m)
    core = np.flatnonzero(alive)
    if len(core):
        C = sparse.csc_matrix(off[core][:, core] + sparse.diags(diag[core]))
        out[core] = _core_inverse_diagonal(C)
    for leaf, p, h, d in reversed(order):
        out[leaf] = 1.0 / d + ((h / d) ** 2 * out[p] if p >= 0 else 0.0)
    return out


def _core_inverse_diagonal(H: sparse.csc_matrix) -> np.ndarray:
    m = H.shape[0]
    if m <= _DENSE_LIMIT:
        return np.diag(np.linalg.inv(H.toarray())).copy()
    from scipy.sparse.linalg import splu

    lu = splu(H, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    out = np.empty(m)
    block = 256
    for lo in range(0, m, block):
        hi = min(m, lo + block)
        rhs = np.zeros((m, hi - lo))
        rhs[np.arange(lo, hi), np.arange(hi - lo)] = 1.0
        out[lo:hi] = lu.solve(rhs)[np.arange(lo, hi), np.arange(hi - lo)]
    return out


def log_evidence(p: _Problem, W: np.ndarray, ridge: float) -> float:
    """Laplace approximation of log p(counts | prior precision ``ridge``), up to a constant."""
    V = W - p.centre
    H = information_matrix(p, W, ridge)
    return (-_nll(W, p) - 0.5 * ridge * float(V @ V) + 0.5 * p.m * math.log(ridge)
            - 0.5 * _logdet(H))


@dataclass(frozen=True)
class LikelihoodFit:
    """The likelihood potential (``potential``: V, Laplace stderr, flags) and its prior."""

    potential: PotentialFit
    prior_width: float
    log_evidence: float
    n_pairs: int
    n_edges: int
    stderr_laplace: np.ndarray
    stderr_bootstrap: np.ndarray
    width_method: str = "empirical Bayes: Laplace marginal likelihood"

    def as_dict(self) -> dict[str, object]:
        ok = self.potential.identifiable
        return {
            "estimator": "likelihood", "prior_width_beta_V": self.prior_width,
            "prior_width_method": self.width_method, "log_evidence": self.log_evidence,
            "pairs": self.n_pairs, "edges": self.n_edges,
            "median_stderr_laplace": _nanmedian(self.stderr_laplace[ok]),
            "median_stderr_bootstrap": _nanmedian(self.stderr_bootstrap[ok]),
        }


def _nanmedian(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else math.nan


class LikelihoodPotential:
    """Estimator: ``LikelihoodPotential().fit(kernel) -> LikelihoodFit``.

    ``prior_width`` fixes tau (the prior's standard deviation of beta V) instead of
    choosing it by empirical Bayes; ``bootstrap`` resamples for bootstrap errors.
    """

    def __init__(self, beta: float = 1.0, gauge: str = "mean", prior_width: float | None = None,
                 bootstrap: int = 0, seed: int | None = 0, penalty: str = "exp",
                 n_jobs: int = 1, *, action_kernel: str | None = None,
                 backend: MapBackend | None = None) -> None:
        if beta <= 0:
            raise DetbalError(f"beta must be positive, got {beta}")
        if prior_width is not None and not prior_width > 0:
            raise DetbalError(f"prior_width must be positive, got {prior_width}")
        self.beta = float(beta)
        self.gauge = gauge
        self.prior_width = prior_width
        self.bootstrap = int(bootstrap)
        self.seed = seed
        #: the action's K for the reported action (``action_kernel``: its former name)
        self.penalty = self.action_kernel = penalty if action_kernel is None else action_kernel
        self.n_jobs = max(1, int(n_jobs))
        #: runs the bootstrap instead of ``n_jobs`` threads (:mod:`detbal.parallel`)
        self.backend = backend

    def fit(self, kernel: Kernel, progress: Progress | None = None) -> LikelihoodFit:
        data = pair_data(kernel)
        dom = _domain(data)
        if len(dom.states) < 2:
            raise DetbalError("no pair of sampled source states with a transition between them:"
                              " the likelihood potential needs at least one")
        prob = _problem(data, dom)
        W = prob.centre.copy()
        converged = True

        def neg_evidence(log_tau: float) -> float:
            nonlocal W, converged
            ridge = math.exp(-2.0 * log_tau)
            W, converged = _map(prob, ridge, W)
            return -log_evidence(prob, W, ridge)

        if self.prior_width is None:
            from scipy import optimize

            lo, hi = (math.log(x) for x in PRIOR_WIDTH_RANGE)
            res = optimize.minimize_scalar(neg_evidence, bounds=(lo, hi), method="bounded",
                                           options={"xatol": 0.01})
            tau = math.exp(float(res.x))
        else:
            tau = float(self.prior_width)
        ridge = 1.0 / tau**2
        W, converged = _map(prob, ridge, W)
        evidence = log_evidence(prob, W, ridge)
        H = information_matrix(prob, W, ridge)
        var = _inverse_diagonal(H) - 1.0 / (ridge * prob.m)  # gauge: zero mean
        bV = W - prob.centre
        reference = None if self.gauge == "mean" else kernel.counts.index(str(self.gauge))
        n = kernel.n_states
        flags = self._flags(kernel, data, dom)
        if reference is not None:
            if flags[reference]:
                raise DetbalError(f"reference state {kernel.states[reference]!r} has no likelihood"
                                  f" potential ({flags[reference]}); choose another or use gauge mean")
            r = dom.local[reference]
            e = np.zeros(prob.m)
            e[r] = 1.0
            from scipy.sparse.linalg import spsolve

            col = np.atleast_1d(spsolve(H, e))
            var = var + 1.0 / (ridge * prob.m) + col[r] - 2.0 * col
            bV = bV - bV[r]
        V = np.full(n, np.nan)
        V[dom.states] = bV / self.beta
        se = np.full(n, np.nan)
        se[dom.states] = np.sqrt(np.maximum(var, 0.0)) / self.beta
        boot = None
        se_boot = np.full(n, np.nan)
        if self.bootstrap > 0:
            boot = self._bootstrap(kernel, data, dom, ridge, W, reference, progress)
            valid = np.sum(np.isfinite(boot), axis=0)
            enough = valid >= max(2, boot.shape[0] // 2)
            se_boot[enough] = np.nanstd(boot[:, enough], axis=0, ddof=1)
        from detbal.analysis.action import action, k_zero

        inside = np.isfinite(V[kernel.src]) & np.isfinite(V[kernel.dst])
        S = action(np.nan_to_num(V), kernel.src[inside], kernel.dst[inside], kernel.T[inside],
                   kernel=self.action_kernel, beta=self.beta, normalisation=max(kernel.n_sources, 1))
        pot = PotentialFit(
            states=kernel.states, V=V, V_fit=V.copy(), stderr=se, flags=tuple(flags),
            component=dom.label, sources=kernel.counts.attempts, action=S,
            k0=k_zero(self.action_kernel), kernel=self.action_kernel, beta=self.beta,
            gauge="mean" if reference is None else kernel.states[reference],
            n_sources=kernel.n_sources, converged=converged, iterations=0, bootstrap_V=boot,
        )
        n_pairs = len(np.unique(np.minimum(prob.src, prob.dst).astype(np.int64) * prob.m
                                + np.maximum(prob.src, prob.dst)))
        return LikelihoodFit(potential=pot, prior_width=tau, log_evidence=evidence,
                             n_pairs=n_pairs, n_edges=len(prob.src), stderr_laplace=se,
                             stderr_bootstrap=se_boot)

    @staticmethod
    def _flags(kernel: Kernel, data: PairData, dom: _Domain) -> list[str]:
        flags = np.select(
            [kernel.counts.attempts <= 0, ~kernel.kept, dom.label < 0, dom.label != dom.main],
            ["not_sampled", "dropped", "no_pairs", "other_component"], default="",
        )
        return flags.tolist()

    def _bootstrap(self, kernel: Kernel, data: PairData, dom: _Domain, ridge: float,
                   W_fit: np.ndarray, reference: int | None, progress: Progress | None) -> np.ndarray:
        """Attempts resampled per source; MAP refitted at the same prior width."""
        pair_edge = data.sampled[kernel.src] & data.sampled[kernel.dst]
        V_fit = W_fit - data.offset[dom.states]
        beta = self.beta  # not self: the replicate function is pickled to a backend's workers

        def one(seed: int) -> np.ndarray:
            cnt = sample_edge_counts(kernel.src, kernel.T, kernel.trials, seed).astype(float)
            keep = pair_edge & (cnt > 0)
            sub = PairData(data.n_states, kernel.src[keep], kernel.dst[keep], cnt[keep], data.offset,
                           data.sampled)
            prob = _problem(sub, dom)
            W, _ = _map(prob, ridge, W_fit)
            seen = np.zeros(prob.m, dtype=bool)
            seen[prob.src] = True
            seen[prob.dst] = True
            bV = W - prob.centre
            if reference is not None:
                bV = bV - bV[dom.local[reference]]
            else:  # align on the states this replicate could fit
                bV = bV - bV[seen].mean() + V_fit[seen].mean()
            row = np.full(kernel.n_states, np.nan)
            row[dom.states[seen]] = bV[seen] / beta
            return row

        rows = map_replicates(one, replicate_seeds(self.seed, self.bootstrap), n_jobs=self.n_jobs,
                              progress=progress, backend=self.backend)
        return np.array(rows).reshape(self.bootstrap, kernel.n_states)


def fit_likelihood_potential(kernel: Kernel, /, **options: object) -> LikelihoodFit:
    """Functional form of :class:`LikelihoodPotential`."""
    progress = options.pop("progress", None)
    return LikelihoodPotential(**options).fit(kernel, progress=progress)  # type: ignore[arg-type]


# -- the deviance test of quasi-symmetry --------------------------------------------
@dataclass(frozen=True)
class _QuasiSymmetry:
    """Maximum-likelihood quasi-symmetry fit inside the strongly connected components."""

    deviance: float
    df: int
    n_pairs: int
    n_states: int
    n_components: int
    src: np.ndarray  # global indices of the fitted directed edges (observed, n > 0)
    dst: np.ndarray
    mu: np.ndarray  # fitted mean count of each
    mu_reverse: np.ndarray  # fitted mean count of its reverse
    has_reverse: np.ndarray  # whether the reverse edge was observed


def quasi_symmetry(data: PairData, tol: float = 1e-12) -> _QuasiSymmetry:
    """Fit logit P(f -> g | pair) = log N0(f)/N0(g) + V_f - V_g by maximum likelihood.

    The maximum exists only inside strongly connected components of the observed
    transitions (elsewhere potential differences run off to infinity and the pairs
    are fitted exactly), so only pairs inside a component of two or more states
    count; df = pairs - states + components, the number of independent cycles.
    """
    from detbal.analysis.counts import reverse_index
    from detbal.analysis.potential import _minimise

    n = data.n_states
    graph = sparse.coo_matrix((np.ones(len(data.src)), (data.src, data.dst)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=True, connection="strong")
    sizes = np.bincount(labels, minlength=int(labels.max()) + 1 if n else 0)
    inside = (labels[data.src] == labels[data.dst]) & (sizes[labels[data.src]] >= 2)
    s, d, c = data.src[inside], data.dst[inside], data.count[inside]
    states = np.unique(np.concatenate([s, d]))
    if len(states) == 0:
        empty = np.zeros(0)
        return _QuasiSymmetry(0.0, 0, 0, 0, 0, s, d, empty, empty, np.zeros(0, dtype=bool))
    local = np.full(n, -1, dtype=np.int64)
    local[states] = np.arange(len(states))
    ls, ld = local[s].astype(np.int32), local[d].astype(np.int32)
    # Newton-CG, and L-BFGS-B from where it stopped should it fail (at 1e5 states it can stop
    # on a failed line search two steps in, one pair's fitted mean at 0 and the deviance inf)
    W, _, _, _ = _minimise(len(states), ls, ld, c, "softplus", 1.0, data.offset[states], tol, 1000,
                           gtol=1e-9, threads=False)
    rev = reverse_index(s, d, n)
    has_rev = rev >= 0
    total = c + np.where(has_rev, c[np.maximum(rev, 0)], 0.0)
    sig = 0.5 * (1.0 + np.tanh(0.5 * (W[ls] - W[ld])))
    mu = total * sig
    mu_rev = total - mu
    deviance = float(2.0 * np.sum(c * np.log(c / mu)))
    n_pairs = int(np.count_nonzero(~has_rev) + np.count_nonzero(has_rev) // 2)
    n_comp = len(np.unique(labels[states]))
    df = n_pairs - len(states) + n_comp
    return _QuasiSymmetry(max(deviance, 0.0), df, n_pairs, len(states), n_comp, s, d, mu, mu_rev,
                          has_rev)


def quasi_symmetric_kernel(kernel: Kernel, qs: _QuasiSymmetry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(src, dst, p)`` of the fitted reversible kernel: T = mu / N0 on the fitted pairs
    (including the unobserved reverse of one-way pairs), the estimate elsewhere.

    The fit keeps every state's fitted out-count equal to its observed one, so
    rows stay below 1.
    """
    n = kernel.n_states
    key = kernel.src.astype(np.int64) * n + kernel.dst
    fitted = qs.src.astype(np.int64) * n + qs.dst
    p = kernel.T.copy()
    pos = np.searchsorted(key, fitted)  # kernel edges are sorted by (src, dst)
    p[pos] = qs.mu / kernel.n0[qs.src]
    one_way = ~qs.has_reverse
    src = np.concatenate([kernel.src, qs.dst[one_way]])
    dst = np.concatenate([kernel.dst, qs.src[one_way]])
    p = np.concatenate([p, qs.mu_reverse[one_way] / kernel.n0[qs.dst[one_way]]])
    order = np.lexsort((dst, src))
    return src[order], dst[order], p[order]


@dataclass(frozen=True)
class DevianceTest:
    """Likelihood-ratio test of quasi-symmetry (detailed balance) against the free model."""

    n_pairs: int
    n_states: int
    n_components: int
    df: int
    deviance: float
    p: BootstrapPValue
    p_asymptotic: float

    @property
    def p_value(self) -> float:
        return self.p.value

    @property
    def rejects(self) -> bool:
        return bool(self.p.value < 0.05)

    def as_dict(self) -> dict[str, object]:
        return {
            "n_pairs": self.n_pairs, "n_states": self.n_states, "n_components": self.n_components,
            "df": self.df, "deviance": self.deviance,
            "deviance_per_df": self.deviance / self.df if self.df > 0 else math.nan,
            "p_asymptotic": self.p_asymptotic, **self.p.as_dict(),
        }


def deviance_test(kernel: Kernel, *, simulations: int = 200, seed: int | None = 0,
                  n_jobs: int = 1, progress: Progress | None = None,
                  stop: SequentialStop | None = None,
                  backend: MapBackend | None = None) -> DevianceTest:
    """G^2 = 2 sum n log(n / mu) of the quasi-symmetry fit, df = independent cycles.

    The p-value is a parametric bootstrap: the fitted reversible kernel is simulated
    with the same attempts per source and refitted; beyond the simulated range the
    tail is extrapolated (:func:`detbal.analysis.pvalues.bootstrap_p_value`).  ``stop``
    ends the simulations once the 5% decision is settled (on a prefix of the same seeds);
    ``backend`` (:mod:`detbal.parallel`) runs them instead of ``n_jobs`` threads.
    """
    from scipy.special import (
        chdtrc,  # = scipy.stats.chi2.sf(x, df), without scipy.stats
    )

    from detbal.analysis.pvalues import bootstrap_p_value

    data = pair_data(kernel)
    qs = quasi_symmetry(data)
    p_asym = float(chdtrc(qs.df, qs.deviance)) if qs.df > 0 else math.nan
    sims: list[float] = []
    if simulations > 0 and qs.df > 0:
        src, dst, p = quasi_symmetric_kernel(kernel, qs)

        def one(seed: int) -> tuple[float, int]:
            cnt = sample_edge_counts(src, p, kernel.trials, seed).astype(float)
            ok = data.sampled[src] & data.sampled[dst] & (cnt > 0)
            sim = quasi_symmetry(PairData(data.n_states, src[ok], dst[ok], cnt[ok], data.offset,
                                          data.sampled))
            return sim.deviance, sim.df

        def extreme(r: tuple[float, int]) -> bool | None:
            return None if r[1] <= 0 else r[0] * qs.df / r[1] >= qs.deviance

        for dev, df in map_until(one, replicate_seeds(seed, simulations), extreme, stop,
                                 n_jobs=n_jobs, progress=progress, backend=backend):
            if df > 0:
                sims.append(dev * qs.df / df)  # G^2 per df, on the data's df
    # compared per degree of freedom: on sparse data the simulations, drawn on the observed
    # edges only, keep fewer pairs (and cycles) than the data, and their asymptotic p-values
    # would not be comparable with the data's
    pv = bootstrap_p_value(qs.deviance, sims)
    return DevianceTest(qs.n_pairs, qs.n_states, qs.n_components, qs.df, qs.deviance, pv, p_asym)
