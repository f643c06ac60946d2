"""State features and the fixed/paper tokenizers (detbal.evo.features, detbal.evo.tokenize)."""

from __future__ import annotations

import ast

import numpy as np
import pytest

from detbal.errors import DetbalError
from detbal.evo import features as feat
from detbal.evo.features import (
    ANSATZ_COLUMNS,
    WORD_COLUMNS,
    family_features,
    featurize,
    tree_features,
)
from detbal.evo.tokenize import random_ansatz, tokenize

NIKURADSE = "param1*log_v_k_nu + param2*tanh(param3*(log_v_k_nu - param4)) + log(1 + exp(param5))"


@pytest.mark.parametrize(
    ("expr", "fixed", "paper"),
    [
        ("tanh(param1)", ("tanh", "(", "param1", ")"), ("tan", "(", "param1", ")")),
        ("param1*log_v_k_nu", ("param1", "*", "log_v_k_nu"), ("param1", "*", "log")),
        ("param10+3.5", ("param10", "+", "3.5"), ("param1", "+")),
        ("log10(x)**2", ("log10", "(", "x", ")", "**", "2"), ("log10", "(", ")", "**", "2")),
        ("arctan(pi) ^ 2", ("arctan", "(", "pi", ")", "^", "2"), ("arctan", "(", "pi", ")", " ", " ", "2")),
    ],
)
def test_tokenizer_modes(expr: str, fixed: tuple[str, ...], paper: tuple[str, ...]) -> None:
    assert tokenize(expr, "fixed") == fixed
    assert tokenize(expr, "paper") == paper


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        tokenize("param1", "sloppy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("feature", "fixed", "paper"),
    [
        ("fam_has_log_v", 1.0, 0.0),
        ("fam_linear_logv", 1.0, 0.0),
        ("fam_centered_linear", 1.0, 0.0),
        ("fam_tanh", 1.0, 0.0),
        ("fam_softplus", 1.0, 1.0),   # log(1 + exp survives the paper tokenizer
        ("fam_n_trig", 0.0, 1.0),     # paper: tanh -> tan counts as trig
        ("fam_n_log", 1.0, 3.0),      # paper: both log_v_k_nu -> log
        ("fam_n_params", 5.0, 5.0),
    ],
)
def test_nikuradse_features_fire_only_in_fixed_mode(feature: str, fixed: float, paper: float) -> None:
    assert family_features(NIKURADSE, "fixed")[feature] == fixed
    assert family_features(NIKURADSE, "paper")[feature] == paper


def test_logistic_pattern_needs_a_real_one_in_fixed_mode() -> None:
    # the published regex finds "1/(1+exp" inside "param1/(1+exp"
    expr = "param1/(1+exp(log_v_k_nu))"
    assert family_features(expr, "paper")["fam_logistic"] == 1.0
    assert family_features(expr, "fixed")["fam_logistic"] == 0.0
    assert family_features("1/(1+exp(log_v_k_nu))", "fixed")["fam_logistic"] == 1.0


@pytest.mark.parametrize(
    ("expr", "risk"),
    [("sqrt(param1)", 1.0), ("sqrt(abs(param1))", 0.0), ("sqrt( abs(param1)) + sqrt(param2)", 1.0),
     ("param1", 0.0)],
)
def test_sqrt_risk_fixed(expr: str, risk: float) -> None:
    assert family_features(expr, "fixed")["fam_sqrt_risk"] == risk


def test_parens_and_characters() -> None:
    f = family_features("((param1) + $param2", "fixed")
    assert f["fam_bad_paren"] == 1.0
    assert f["fam_max_depth"] == 2.0
    assert f["fam_extra_chars"] == 1.0
    assert f["fam_simple_chars"] == 0.0
    g = family_features(")param1(", "fixed")
    assert g["fam_bad_paren"] == 1.0


def test_tree_features_of_a_known_expression() -> None:
    t = tree_features("param1*exp(log(param2 ^ 2)) - log_v_k_nu / pi")
    assert t["parse_error"] == 0.0
    assert t["tree_n_mul"] == 1 and t["tree_n_sub"] == 1 and t["tree_n_div"] == 1
    assert t["tree_n_pow"] == 1          # ^ read as **
    assert t["tree_call_exp"] == 1 and t["tree_call_log"] == 1
    assert t["tree_exp_log_nesting"] == 2
    assert t["tree_n_distinct_params"] == 2
    assert t["tree_has_log_v"] == 1 and t["tree_n_pi"] == 1 and t["tree_n_two"] == 1
    # every expression node of the parse is counted
    assert t["tree_nodes"] == len([n for n in ast.walk(ast.parse(
        "param1*exp(log(param2 ** 2)) - log_v_k_nu / pi", mode="eval").body)
        if isinstance(n, ast.expr)])


@pytest.mark.parametrize("bad", ["", "   ", "((param1", "param1 +", "param1 ** * 2", "1 = 2", "\x00"])
def test_unparseable_strings_get_defaults_and_flag(bad: str) -> None:
    F = featurize([bad, "param1"], "ansatz")
    assert np.all(np.isfinite(F.X))
    assert F.column("parse_error").tolist() == [1.0, 0.0]
    tree_cols = [F.index(c) for c in ANSATZ_COLUMNS if c.startswith("tree_")]
    assert np.all(F.X[0, tree_cols] == 0.0)


@pytest.mark.parametrize("mode", ["fixed", "paper"])
@pytest.mark.parametrize("seed", [0, 1])
def test_featurize_random_ansatz_is_finite_and_records_mode(mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    states = [random_ansatz(rng) for _ in range(150)]
    F = featurize(states, mode=mode)
    assert F.kind == "ansatz" and F.mode == mode
    assert F.X.shape == (150, len(ANSATZ_COLUMNS)) and F.X.dtype == np.float64
    assert np.all(np.isfinite(F.X))
    assert F.column("parse_error").sum() == 0      # the generator writes valid Python
    if mode == "fixed":  # the lexer and the parse agree on the parameters
        np.testing.assert_array_equal(F.column("tree_n_distinct_params"), F.column("fam_n_params"))


def test_each_string_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = ast.parse

    def counting(source: str, *args: object, **kwargs: object) -> ast.AST:
        calls.append(source)
        return real(source, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(feat.ast, "parse", counting)
    states = ["param1*log_v_k_nu", "param2+1", "param1*log_v_k_nu", "exp(param1)"]
    F = featurize(states, "ansatz")
    assert len(calls) == 3
    np.testing.assert_array_equal(F.X[0], F.X[2])


@pytest.mark.parametrize(
    ("word", "letter_sum", "valid"),
    [("BUZZY", 100, 1.0), ("ATTITUDE", 100, 1.0), ("excellent", 100, 1.0), ("HELLO", 52, 0.0)],
)
def test_word_features(word: str, letter_sum: int, valid: float) -> None:
    F = featurize([word], "auto")
    assert F.kind == "words"
    r = F.record(word)
    assert r["word_letter_sum"] == letter_sum
    assert r["word_abs_dev"] == abs(letter_sum - 100)
    assert r["word_length"] == len(word)
    assert r["word_is_valid"] == valid
    assert r["parse_error"] == 0.0


def test_word_classes_and_non_alpha() -> None:
    F = featurize(["BUZZY", "AB1"], "words")
    b = F.record("BUZZY")
    assert (b["word_n_vowels"], b["word_n_y"], b["word_n_rare"], b["word_n_double"]) == (1, 1, 2, 1)
    assert b["word_n_high"] == 4 and b["word_max_value"] == 26 and b["word_n_distinct"] == 4
    bad = F.record("AB1")
    assert bad["parse_error"] == 1.0 and bad["word_n_nonalpha"] == 1 and bad["word_is_valid"] == 0.0
    assert F.names == WORD_COLUMNS


def test_feature_matrix_rows_take_and_errors() -> None:
    F = featurize(["param1", "param2*log_v_k_nu", "tanh(param1)"], "ansatz")
    rows = F.rows(["tanh(param1)", "param1"])
    assert rows.tolist() == [2, 0]
    sub = F.take(rows)
    assert sub.states == ("tanh(param1)", "param1") and sub.mode == F.mode
    np.testing.assert_array_equal(sub.X, F.X[[2, 0]])
    with pytest.raises(DetbalError):
        F.rows(["nope"])
    with pytest.raises(DetbalError):
        F.column("no_such_feature")


def test_auto_kind() -> None:
    assert featurize(["BUZZY", "ATTITUDE"]).kind == "words"
    assert featurize(["BUZZY", "param1*log_v_k_nu"]).kind == "ansatz"
