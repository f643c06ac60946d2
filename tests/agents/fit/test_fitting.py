"""Multi-start L-BFGS-B fitting and the score of METHOD.md."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detbal.agents.fit.ansatz import compile_ansatz, validate_ansatz
from detbal.agents.fit.fitting import FitFailed, _setulb, fit_parameters, fit_seed, score_from_mse


def _compiled(text: str):  # type: ignore[no-untyped-def]
    return compile_ansatz(validate_ansatz(text))


X = np.linspace(-0.1, 3.5, 362)[None, :]

CASES = [
    ("param1*log_v_k_nu + param2", (0.8, -1.3)),
    ("param1 + param2*tanh(param3*(log_v_k_nu - param4))", (1.3, -0.55, 3.0, 1.2)),
    ("param1*exp(-param2*log_v_k_nu) + param3", (2.0, 1.5, 0.5)),
    ("param1*sin(param2*log_v_k_nu) + param3*square(log_v_k_nu)", (1.5, 2.2, -0.3)),
]


@pytest.mark.parametrize(("text", "truth"), CASES)
@pytest.mark.parametrize("lockstep", [None, False])
def test_recovers_known_parameters(text: str, truth: tuple[float, ...], lockstep: bool | None) -> None:
    c = _compiled(text)
    y = c.value(X, np.array(truth))
    res = fit_parameters(c, X, y, starts=40, seed=fit_seed(text, 0), lockstep=lockstep)
    assert res.mse < 1e-10
    assert res.n_finite == 40
    np.testing.assert_allclose(c.value(X, np.array(res.params)), y, atol=1e-4)
    # tanh and sin models are symmetric under a joint sign change of two parameters
    got = np.abs(res.params) if ("tanh" in text or "sin" in text) else np.array(res.params)
    want = np.abs(truth) if ("tanh" in text or "sin" in text) else np.array(truth)
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_lockstep_driver_is_available_on_this_scipy() -> None:
    assert _setulb() is not None


def test_noisy_fit_matches_least_squares() -> None:
    rng = np.random.default_rng(3)
    x = X[0]
    y = 0.3 * x + 1.7 + rng.normal(0, 0.1, x.size)
    res = fit_parameters(_compiled("param1*log_v_k_nu + param2"), X, y, starts=10, seed=1)
    slope, icept = np.polyfit(x, y, 1)
    np.testing.assert_allclose(res.params, (slope, icept), atol=1e-5)
    assert res.mse == pytest.approx(np.mean((slope * x + icept - y) ** 2), rel=1e-8)


def test_parameters_stay_in_the_box() -> None:
    y = 25.0 * X[0]  # the best slope in [-10, 10] is 10
    res = fit_parameters(_compiled("param1*log_v_k_nu"), X, y, starts=8, seed=0)
    assert res.params[0] == pytest.approx(10.0)


def test_same_seed_same_result() -> None:
    c = _compiled("param1*tanh(param2*log_v_k_nu) + param3")
    y = np.cos(X[0])
    a = fit_parameters(c, X, y, starts=20, seed=[5, 9])
    b = fit_parameters(c, X, y, starts=20, seed=[5, 9])
    assert a == b


@pytest.mark.parametrize("text", ["sqrt(param1*log_v_k_nu)", "log(param1*log_v_k_nu)", "log(-square(param1) - 1)"])
def test_not_finite_anywhere_is_fit_failed(text: str) -> None:
    """x takes both signs, so these are NaN for every start (the parameter is never exactly 0)."""
    with pytest.raises(FitFailed, match="not finite"):
        fit_parameters(_compiled(text), X, np.zeros(362), starts=16, seed=0)


def test_no_parameters() -> None:
    res = fit_parameters(_compiled("2*log_v_k_nu"), X, 2 * X[0] + 1, starts=5)
    assert res.params == () and res.mse == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        (1.0, 20.0),  # the baseline itself
        (1e4, 80.0),  # 10^4 times smaller MSE
        (1e2, 50.0),
        (1e-1, 20.0 - 60.0 / 4),
        (1e8, 100.0),  # clipped: 20 + 120
        (1e-20, 0.0),  # clipped below
    ],
)
def test_score_mapping(ratio: float, expected: float) -> None:
    mse_base = 0.0627
    assert score_from_mse(mse_base / ratio, mse_base) == pytest.approx(expected)


def test_score_edge_cases() -> None:
    assert score_from_mse(0.0, 1.0) == 100.0
    assert math.isnan(score_from_mse(math.inf, 1.0))
    assert math.isnan(score_from_mse(math.nan, 1.0))
