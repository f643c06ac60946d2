"""The least-action potential against a peer: deeptime's reversible maximum-likelihood MSM."""

from __future__ import annotations

import numpy as np
import pytest

from detbal.analysis.counts import estimate_kernel
from detbal.analysis.potential import LeastActionPotential
from detbal.systems import metropolis_chain, sample_fixed

deeptime = pytest.importorskip("deeptime")


def _msm_potential(counts) -> np.ndarray:
    from deeptime.markov import TransitionCountModel
    from deeptime.markov.msm import MaximumLikelihoodMSM

    n = counts.n_states
    C = np.zeros((n, n))
    C[counts.src, counts.dst] = counts.count
    C[np.arange(n), np.arange(n)] += counts.self_loops
    msm = MaximumLikelihoodMSM(reversible=True).fit(TransitionCountModel(C)).fetch_model()
    V = np.full(n, np.nan)
    V[msm.count_model.state_symbols] = -np.log(msm.stationary_distribution)
    return V


@pytest.mark.parametrize("kernel", ["exp", "softplus"])
@pytest.mark.parametrize("seed", [3, 4])
def test_agrees_with_reversible_msm(kernel: str, seed: int) -> None:
    chain = metropolis_chain(100, mean_degree=5, seed=seed)
    counts = sample_fixed(chain, 400, seed=seed + 1)
    ours = LeastActionPotential(kernel=kernel).fit(estimate_kernel(counts)).V
    peer = _msm_potential(counts)
    ok = np.isfinite(ours) & np.isfinite(peer)
    assert ok.sum() > 90
    assert np.corrcoef(ours[ok], peer[ok])[0, 1] > 0.99
    # both recover the truth comparably well
    r_ours = np.corrcoef(ours[ok], chain.potential[ok])[0, 1]
    r_peer = np.corrcoef(peer[ok], chain.potential[ok])[0, 1]
    assert r_ours > 0.98
    assert r_ours > r_peer - 0.01
    # same scale: slopes of V against the truth agree (no hidden factor of beta)
    slope_ours = np.polyfit(chain.potential[ok], ours[ok], 1)[0]
    slope_peer = np.polyfit(chain.potential[ok], peer[ok], 1)[0]
    assert slope_ours == pytest.approx(slope_peer, rel=0.05)
