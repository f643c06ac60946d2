"""The compiled Newton-CG solver behind the least-action fit: Hessian pieces and agreement with L-BFGS-B."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from detbal.analysis._newton import CONVERGED_F, CONVERGED_G, minimise_action
from detbal.analysis.action import (
    action_and_gradient,
    evaluate,
    hessian_weights,
    kernel_code,
    laplacian_product,
)

KERNELS = ("exp", "softplus")


def _problem(seed: int, n: int = 25, m: int = 160):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, n, size=m)
    dst = (src + 1 + rng.integers(0, n - 1, size=m)) % n
    order = np.lexsort((dst, src))
    return (rng.normal(0.0, 1.5, size=n), src[order].astype(np.int32), dst[order].astype(np.int32),
            rng.uniform(0.01, 1.0, size=m))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("beta, shift", [(1.0, 0.0), (0.4, 0.0), (2.5, 0.0), (1.0, 4000.0)])
def test_hessian_diagonal_and_product_match_finite_differences(kernel, nthreads, beta, shift) -> None:
    V, src, dst, w = _problem(1)
    V = V + shift  # shift: the direct (non-factorised) paths
    n, kind = len(V), kernel_code(kernel)
    s = [np.empty(n) for _ in range(3)]
    g, diag = np.empty(n), np.empty(n)
    evaluate(kind, V, src, dst, w, beta, g, diag, *s, nthreads)
    c = np.empty(len(src))
    hessian_weights(kind, V, src, dst, w, beta, c, s[0], s[1], nthreads)
    H = np.empty((n, n))
    h = 1e-6
    for i in range(n):
        up, down = V.copy(), V.copy()
        up[i] += h
        down[i] -= h
        H[:, i] = (action_and_gradient(up, src, dst, w, kernel=kernel, beta=beta)[1]
                   - action_and_gradient(down, src, dst, w, kernel=kernel, beta=beta)[1]) / (2 * h)
    assert np.allclose(diag, np.diag(H), rtol=1e-5, atol=1e-7 * np.abs(diag).max())
    v = np.random.default_rng(2).normal(size=n)
    out = np.empty(n)
    laplacian_product(src, dst, c, diag, v, out, s[2], nthreads)
    assert np.allclose(out, H @ v, rtol=1e-5, atol=1e-6 * np.abs(out).max())
    assert abs(out.sum()) < 1e-9 * np.abs(out).sum()  # constants are in the null space


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_newton_reaches_the_lbfgsb_minimum(kernel, beta) -> None:
    _, src, dst, w = _problem(3, n=40, m=400)
    n = 40
    V, S, status, steps, _, ncg = minimise_action(src, dst, w, kernel_code(kernel), beta, np.zeros(n),
                                                  ftol=1e-12, gtol=1e-10, max_iter=200)
    assert status in (CONVERGED_F, CONVERGED_G) and steps < 50 and ncg > 0

    def fun(x):
        return action_and_gradient(x, src, dst, w, kernel=kernel, beta=beta)

    ref = optimize.minimize(fun, np.zeros(n), jac=True, method="L-BFGS-B",
                            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000, "maxcor": 20})
    assert S <= ref.fun * (1 + 1e-12)
    assert np.allclose(V - V.mean(), ref.x - ref.x.mean(), atol=1e-5)
    assert np.abs(fun(V)[1]).max() < 1e-6
