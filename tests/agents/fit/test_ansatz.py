"""Ansatz validation by parsing, canonical forms, and the compiled evaluation and its exact derivatives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detbal.agents.fit.ansatz import (
    FUNCTIONS,
    AnsatzError,
    canonical_form,
    compile_ansatz,
    invalid_reason,
    validate_ansatz,
)

VALID = [
    "param1*log_v_k_nu + param2",
    "tanh(param1*log_v_k_nu)",
    "log10(param1 + square(log_v_k_nu))",
    "2*param1",
    "-param1 + pi*log_v_k_nu",
    "param1/(1 + exp(-param2*(log_v_k_nu - param3))) + param4",
    "param1*log_v_k_nu**2 + param2*log_v_k_nu**(1/2)",
    "abs(arctan(param1)) - arcsin(param2) + arccos(param3) + sin(cos(tan(sqrt(param4))))",
    "log(2.0*param1) + 1.0",
    "log_v_k_nu",  # no parameters: evaluated as is
    "  param1 * log_v_k_nu  ",  # surrounding spaces are stripped
    "param2*param1 + param3*param10 + param4 + param5 + param6 + param7 + param8 + param9",
]

INVALID = [
    ("tan(param1*x)", "unknown name 'x'"),
    ("3.5*param1", "literal '3.5'"),
    ("param1*log_v_k_nu + 0.5", "literal '0.5'"),
    ("10*param1", "literal '10'"),
    ("1e0*param1", "literal '1e0'"),
    ("True*param1", "literal 'True'"),
    ("param1 + 'a'", "literal"),
    ("1j*param1", "literal"),
    ("param1 + param3", "missing param2"),
    ("param2*log_v_k_nu", "missing param1"),
    ("param0 + param1", "unknown name 'param0'"),
    ("param01*log_v_k_nu", "unknown name 'param01'"),
    ("p1*log_v_k_nu", "unknown name 'p1'"),
    ("e*param1", "unknown name 'e'"),
    ("np.tanh(param1)", "attribute access"),
    ("math.pi*param1", "attribute access"),
    ("param1.real", "attribute access"),
    ("sinh(param1)", "function 'sinh'"),
    ("exp2(param1)", "function 'exp2'"),
    ("__import__('os')", "function '__import__'"),
    ("eval('1')", "function 'eval'"),
    ("tanh", "without a call"),
    ("log(param1, 2)", "exactly one positional argument"),
    ("exp(x=param1)", "exactly one positional argument"),
    ("exp(*[param1])", "exactly one positional argument"),
    ("(lambda: param1)()", "call of a Lambda"),
    ("lambda u: u", "Lambda expressions"),
    ("param1 if log_v_k_nu else param2", "IfExp"),
    ("param1 < 2", "Compare"),
    ("param1 and param2", "BoolOp"),
    ("[param1][0]", "Subscript"),
    ("(param1, param2)", "Tuple"),
    ("(y := param1)", "NamedExpr"),
    ("param1 ^ 2", "operator BitXor"),
    ("param1 // 2", "operator FloorDiv"),
    ("param1 % 2", "operator Mod"),
    ("+param1", "unary UAdd"),
    ("not param1", "unary Not"),
    ("param1 = 2", "not a valid expression"),
    ("y = param1*log_v_k_nu", "not a valid expression"),
    ("param1*log_v_k_nu; param2", "not a valid expression"),
    ("2param1", "not a valid expression"),
    ("", "empty"),
    ("   ", "empty"),
    ("param1" + "+param1" * 1200, "longer than"),
]


@pytest.mark.parametrize("text", VALID)
def test_valid(text: str) -> None:
    assert invalid_reason(text) is None


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid_with_reason(text: str, reason: str) -> None:
    got = invalid_reason(text)
    assert got is not None and reason in got


def test_number_of_parameters_and_variables() -> None:
    a = validate_ansatz("param1*r_k + param2*log_Re + param3", ("r_k", "log_Re"))
    assert a.n_params == 3
    with pytest.raises(AnsatzError, match="unknown name 'log_v_k_nu'"):
        validate_ansatz("param1*log_v_k_nu", ("r_k", "log_Re"))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("param1*log_v_k_nu + param2", "param2 + log_v_k_nu*param1"),
        ("square(param1)", "param1**2"),
        ("log10(log_v_k_nu)", "log(log_v_k_nu)/log(2*(2*2 + 1))"),
        ("param1 - -param2", "param2 + param1"),
    ],
)
def test_canonical_form_identifies_rewritings(a: str, b: str) -> None:
    assert canonical_form(validate_ansatz(a)) == canonical_form(validate_ansatz(b))


def test_canonical_form_keeps_tan_and_tanh_apart() -> None:
    assert canonical_form(validate_ansatz("tan(param1)")) != canonical_form(validate_ansatz("tanh(param1)"))


@pytest.mark.parametrize(
    ("a", "b"),
    [  # the same functional form with its fit parameters named differently
        ("param1*log_v_k_nu + param2", "param1 + param2*log_v_k_nu"),
        ("param1*tanh(param2*log_v_k_nu) + param3", "param3*tanh(param1*log_v_k_nu) + param2"),
        ("param1*log_v_k_nu**2 + param2*log_v_k_nu + param3", "param3*log_v_k_nu**2 + param1*log_v_k_nu + param2"),
        ("param1*sin(param2*log_v_k_nu + param3) + param4*cos(param5*log_v_k_nu)",
         "param4*cos(param1*log_v_k_nu) + param2*sin(param3*log_v_k_nu + param5)"),
    ],
)
def test_canonical_form_does_not_depend_on_parameter_names(a: str, b: str) -> None:
    assert canonical_form(validate_ansatz(a)) == canonical_form(validate_ansatz(b))


def test_canonical_form_keeps_different_roles_of_parameters_apart() -> None:
    one = canonical_form(validate_ansatz("param1*exp(param2*log_v_k_nu)"))
    assert one != canonical_form(validate_ansatz("param1*exp(log_v_k_nu) + param2"))
    assert one == canonical_form(validate_ansatz("param2*exp(param1*log_v_k_nu)"))


def test_canonical_form_of_many_parameters_settles_on_relabellings(monkeypatch) -> None:
    """Beyond the exhaustive limit, relabelling in order of appearance still merges renamings."""
    from detbal.agents.fit import ansatz as A

    monkeypatch.setattr(A, "_RELABEL_ALL_UP_TO", 1)
    A._canonical_cached.cache_clear()
    try:
        a = "param1*sin(param2*log_v_k_nu + param3) + param4*cos(param5*log_v_k_nu)"
        b = "param4*cos(param1*log_v_k_nu) + param2*sin(param3*log_v_k_nu + param5)"
        assert canonical_form(validate_ansatz(a)) == canonical_form(validate_ansatz(b))
    finally:
        A._canonical_cached.cache_clear()


def _reference(text: str, x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Plain evaluation with numpy names, independent of the compiler."""
    env = {name: getattr(np, name) for name in FUNCTIONS}
    env |= {"pi": math.pi, "log_v_k_nu": x}
    env |= {f"param{j + 1}": v for j, v in enumerate(p)}
    return np.broadcast_to(eval(text, {"__builtins__": {}}, env), x.shape)  # noqa: S307


EXPRESSIONS = [
    "param1*log_v_k_nu + param2",
    "param1/(1 + exp(-param2*(log_v_k_nu - param3))) + param4",
    "tanh(param1*log_v_k_nu)**2 - sin(param2)*cos(log_v_k_nu) + tan(param3/2)",
    "arctan(param1*log_v_k_nu) + arcsin(param2/2) - arccos(param3/2)",
    "log(2 + square(param1*log_v_k_nu)) + log10(abs(param2) + 1) + sqrt(abs(param3*log_v_k_nu) + 1)",
    "abs(param1)**param2 + param3**2/(param1 - log_v_k_nu)",
    "2**(param1*log_v_k_nu) - pi*param2 - -param3",
    "exp(param1)",
]


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_compiled_value_and_exact_jacobian(text: str) -> None:
    rng = np.random.default_rng(7)
    x = np.linspace(-0.1, 3.5, 41)
    a = validate_ansatz(text)
    c = compile_ansatz(a)
    P = rng.uniform(0.3, 0.9, size=(5, a.n_params))
    f, J = c.value_and_jacobian(x[None, :], P)
    assert f.shape == (5, 41) and J.shape == (a.n_params, 5, 41)
    for s in range(5):
        np.testing.assert_allclose(c.value(x, P[s]), _reference(text, x, P[s]), rtol=1e-12)
        np.testing.assert_allclose(f[s], _reference(text, x, P[s]), rtol=1e-12)
    h = 1e-6
    for j in range(a.n_params):
        up, dn = P.copy(), P.copy()
        up[:, j] += h
        dn[:, j] -= h
        fd = (c.value(x[None, :], up) - c.value(x[None, :], dn)) / (2 * h)
        np.testing.assert_allclose(J[j], fd, rtol=1e-5, atol=1e-6)


def test_values_outside_the_domain_are_nan_not_errors() -> None:
    c = compile_ansatz(validate_ansatz("sqrt(param1*log_v_k_nu) + log(param2)"))
    out = c.value(np.array([[-1.0, 1.0]]), np.array([[1.0, -1.0]]))
    assert np.all(np.isnan(out))


@pytest.mark.parametrize("text", EXPRESSIONS + ["log_v_k_nu", "param1*param1*log_v_k_nu - param1"])
def test_reverse_mode_mse_gradient_matches_the_jacobian(text: str) -> None:
    rng = np.random.default_rng(2)
    X = np.linspace(-0.1, 3.5, 37)[None, :]
    y = np.cos(X[0])
    c = compile_ansatz(validate_ansatz(text))
    P = rng.uniform(0.3, 0.9, size=(4, c.n_params))
    mse, grad = c.mse_and_gradient(X, y, P)
    f, J = c.value_and_jacobian(X, P)
    r = f - y
    np.testing.assert_allclose(mse, np.mean(r * r, axis=1), rtol=1e-13)
    np.testing.assert_allclose(grad, (2 / 37) * np.einsum("ksn,sn->sk", J, r), rtol=1e-9, atol=1e-12)
