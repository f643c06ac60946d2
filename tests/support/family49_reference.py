"""Plain per-string reference of the 49-parameter family (test helper, not part of the package).

Its own tokenizer, feature code and scalar energy, written independently of
:mod:`detbal.evo.features` and :mod:`detbal.evo.family49`, to check the numba and
numpy engines and the sympy formula (``tests/evo/test_family49.py``) and as the
per-string baseline of ``bench/bench_family49.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from detbal.evo.family49 import _EXP_CLAMP, param_dict

# -- tokenizers and features --------------------------------------------------------

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
_REF_FUNCS = ("sin", "cos", "tan", "arcsin", "arccos", "arctan", "tanh",
              "log", "log10", "exp", "square", "sqrt", "abs")
_REF_TRIG = ("sin", "cos", "tan", "arcsin", "arccos", "arctan")
_PAPER_ORDER = ("sin", "cos", "tan", "arcsin", "arccos", "arctan", "tanh", "log10", "log", "exp",
                "square", "sqrt", "abs", "**", "*", "/", "+", "-", "(", ")", "<ws>", "<param1-9>",
                "log_v_k_nu", "1", "2", "pi")
_PAPER_KEEP = set(_REF_FUNCS) | {"*", "**", "/", "+", "-", "1", "2", "pi", "log_v_k_nu", "(", ")", " "} | {
    "param" + d for d in "123456789"}
_PAPER_FUNC_WORDS = ("exp", "log", "ln", "log10", "sqrt", "tanh", "sin", "cos", "tan", "abs",
                     "pow", "ceil", "floor", "log_v_k_nu")


def _ref_paper_tokens(s: str) -> list[str]:
    """Published tokenizer, by hand: first alternative that matches wins, else skip a char."""
    out = []
    i = 0
    while i < len(s):
        tok = ""
        for alt in _PAPER_ORDER:
            if alt == "<ws>":
                j = i
                while j < len(s) and s[j].isspace():
                    j += 1
                tok = s[i:j]
            elif alt == "<param1-9>":
                if s[i:i + 5] == "param" and i + 5 < len(s) and s[i + 5] in "123456789":
                    tok = s[i:i + 6]
            elif s[i:i + len(alt)] == alt:
                tok = alt
            if tok:
                break
        if tok:
            if tok in _PAPER_KEEP:
                out.append(tok)
            i += len(tok)
        else:
            i += 1
    return out


def _ref_fixed_tokens(s: str) -> list[tuple[str, str]]:
    """Longest-match lexer, by hand: (kind, text) without whitespace."""
    out = []
    i = 0
    n = len(s)
    while i < n:
        ch = s[i]
        if ch.isspace():
            i += 1
        elif ch in _LOWER or ch == "_":
            j = i
            while j < n and (s[j] in _LOWER or s[j] in _DIGITS or s[j] == "_"):
                j += 1
            word = s[i:j]
            if word in _REF_FUNCS:
                kind = "func"
            elif word == "log_v_k_nu":
                kind = "var"
            elif word.startswith("param") and len(word) > 5 and all(d in _DIGITS for d in word[5:]):
                kind = "param"
            elif word == "pi":
                kind = "const"
            else:
                kind = "name"
            out.append((kind, word))
            i = j
        elif ch in _DIGITS or (ch == "." and i + 1 < n and s[i + 1] in _DIGITS):
            j = i
            while j < n and s[j] in _DIGITS:
                j += 1
            if j < n and s[j] == ".":
                j += 1
                while j < n and s[j] in _DIGITS:
                    j += 1
            out.append(("num", s[i:j]))
            i = j
        elif s[i:i + 2] == "**":
            out.append(("pow", "**"))
            i += 2
        elif ch == "^":
            out.append(("pow", "^"))
            i += 1
        elif ch in "+-*/(),":
            out.append(("op", ch))
            i += 1
        else:
            out.append(("other", ch))
            i += 1
    return out


def _ref_parens(s: str) -> tuple[bool, int]:
    level = 0
    top = 0
    broken = False
    for ch in s:
        if ch == "(":
            level += 1
            top = max(top, level)
        elif ch == ")":
            level -= 1
            if level < 0:
                broken = True
                level = 0
    return broken or level != 0, top


def _ref_char_counts(s: str) -> tuple[int, bool]:
    """(characters outside the allowed set, all characters in the 'simple' set)."""
    low = s.lower()
    allowed = _LOWER + _DIGITS + "_+-*/^.(),"
    simple_set = _LOWER + _DIGITS + "_+-*/.(),"
    extra = sum(1 for ch in low if ch not in allowed and not ch.isspace())
    simple = len(low) > 0 and all(ch in simple_set or ch.isspace() for ch in low)
    return extra, simple


def _ref_param_stats(names: list[str]) -> tuple[int, float, float]:
    distinct = sorted(set(names))
    k = len(distinct)
    if k == 0:
        return 0, 0.0, 0.0
    counts = [names.count(d) for d in distinct]
    total = sum(counts)
    mean = total / k
    var = sum((c - mean) ** 2 for c in counts) / k
    if k < 2:
        return k, var, 0.0
    h = 0.0
    for c in counts:
        h -= (c / total) * math.log(c / total + 1e-12)
    return k, var, h / (math.log(k) + 1e-12)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _ref_match(s: str, start: int, parts: tuple[str, ...]) -> bool:
    """Does ``parts`` occur at ``start`` with optional whitespace between parts?

    A part ``<param>`` is ``param`` + digits; ``<b>`` asserts a word boundary.
    """
    i = start
    first = True
    for part in parts:
        if part == "<b>":
            before = i > 0 and _is_word_char(s[i - 1])
            after = i < len(s) and _is_word_char(s[i])
            if before == after:
                return False
            continue
        if not first:
            while i < len(s) and s[i].isspace():
                i += 1
        first = False
        if part == "<param>":
            if s[i:i + 5] != "param" or i + 5 >= len(s) or not s[i + 5].isdecimal():
                return False
            i += 5
            while i < len(s) and s[i].isdecimal():
                i += 1
        elif s[i:i + len(part)] == part:
            i += len(part)
        else:
            return False
    return True


def _ref_search(s: str, parts: tuple[str, ...]) -> bool:
    return any(_ref_match(s, i, parts) for i in range(len(s)))


def _ref_words(s: str) -> list[str]:
    words = []
    cur = ""
    for ch in s:
        if _is_word_char(ch):
            cur += ch
        else:
            if cur:
                words.append(cur)
            cur = ""
    if cur:
        words.append(cur)
    return words


def _ref_features_paper(expr: str) -> dict[str, float] | None:
    s = "".join(_ref_paper_tokens(expr)).strip()
    if not s:
        return None
    low = s.lower()
    broken, top = _ref_parens(s)
    extra, simple = _ref_char_counts(s)
    words = _ref_words(low)
    params = [w for w in words if w.startswith("param") and len(w) > 5 and w[5:].isdecimal()]
    k, var, ent = _ref_param_stats(params)
    n_sqrt = low.count("sqrt")
    return {
        "length": len(s), "bad_paren": broken, "max_depth": top, "extra_chars": extra,
        "simple_chars": simple,
        "n_funcs": sum(1 for w in words if w in _PAPER_FUNC_WORDS),
        "n_exp": low.count("exp"),
        "n_log": low.count("log") + low.count("ln") + low.count("log10"),
        "n_sqrt": n_sqrt, "n_abs": low.count("abs"),
        "n_trig": low.count("sin") + low.count("cos") + low.count("tan"),
        "n_div": low.count("/"), "n_pow": low.count("**") + low.count("^"),
        "n_params": k, "freq_var": var, "entropy_norm": ent,
        "has_log_v": "log_v_k_nu" in low,
        "linear_logv": _ref_search(low, ("<b>", "<param>", "*", "log_v_k_nu", "<b>")),
        "centered_linear": _ref_search(
            low, ("<b>", "<param>", "*", "(", "log_v_k_nu", "-", "<param>", ")")),
        "logistic": _ref_search(low, ("1", "/", "(", "1", "+", "exp")),
        "tanh": _ref_search(low, ("<b>", "tanh", "(")),
        "softplus": _ref_search(low, ("log", "(", "1", "+", "exp")),
        "nested_expr": _ref_search(low, ("exp", "(")) or _ref_search(low, ("log", "(")),
        "sqrt_risk": n_sqrt > 0 and not _ref_search(low, ("sqrt", "(", "abs")),
    }


def _ref_features_fixed(expr: str) -> dict[str, float] | None:
    s = expr.strip()
    if not s:
        return None
    toks = _ref_fixed_tokens(s.lower())
    texts = [t for _, t in toks]
    funcs = [t for kind, t in toks if kind == "func"]
    params = [t for kind, t in toks if kind == "param"]
    k, var, ent = _ref_param_stats(params)
    broken, top = _ref_parens(s)
    extra, simple = _ref_char_counts(s)

    def found(pattern: tuple[str, ...]) -> bool:
        for i in range(len(toks) - len(pattern) + 1):
            ok = True
            for j, want in enumerate(pattern):
                kind, text = toks[i + j]
                if (want == "<param>" and kind != "param") or (want != "<param>" and text != want):
                    ok = False
                    break
            if ok:
                return True
        return False

    unguarded = False
    for i, t in enumerate(texts):
        if t == "sqrt" and texts[i + 1:i + 3] != ["(", "abs"]:
            unguarded = True
    return {
        "length": len(s), "bad_paren": broken, "max_depth": top, "extra_chars": extra,
        "simple_chars": simple,
        "n_funcs": len(funcs),
        "n_exp": funcs.count("exp"),
        "n_log": funcs.count("log") + funcs.count("log10"),
        "n_sqrt": funcs.count("sqrt"), "n_abs": funcs.count("abs"),
        "n_trig": sum(1 for f in funcs if f in _REF_TRIG),
        "n_div": texts.count("/"), "n_pow": sum(1 for kind, _ in toks if kind == "pow"),
        "n_params": k, "freq_var": var, "entropy_norm": ent,
        "has_log_v": "log_v_k_nu" in texts,
        "linear_logv": found(("<param>", "*", "log_v_k_nu")),
        "centered_linear": found(("<param>", "*", "(", "log_v_k_nu", "-", "<param>", ")")),
        "logistic": found(("1", "/", "(", "1", "+", "exp")),
        "tanh": found(("tanh", "(")),
        "softplus": found(("log", "(", "1", "+", "exp")),
        "nested_expr": found(("exp", "(")) or found(("log", "(")),
        "sqrt_risk": unguarded,
    }


def family_potential_reference(
    expr: str,
    params: np.ndarray | Mapping[str, float] | None = None,
    mode: str = "fixed",
) -> float:
    """V of one string, computed plainly from scratch (tokens, features, energy)."""
    if mode not in ("fixed", "paper"):
        raise ValueError(f"unknown tokenizer mode {mode!r}: use fixed or paper")
    p = param_dict(params)
    f = _ref_features_paper(expr) if mode == "paper" else _ref_features_fixed(expr)
    if f is None:
        return p["empty_input_potential"]
    return reference_value(f, p)


def reference_value(f: Mapping[str, float], p: Mapping[str, float]) -> float:
    """V from one state's family inputs ``f`` (``FAMILY_COLUMNS`` without ``fam_``,
    non-empty string) and parameters ``p``, plainly, one ``if`` per rule."""
    energy = 0.0
    if f["bad_paren"]:
        energy += p["paren_penalty"]
    energy += max(0.0, f["extra_chars"] - p["extra_char_threshold"]) * p["extra_char_penalty"]
    energy += math.log1p(f["length"]) / p["length_penalty_divisor"]
    energy += max(0.0, f["max_depth"] - p["max_depth_threshold"]) * p["max_depth_penalty"]
    energy += f["n_funcs"] * p["func_penalty"]
    energy += (f["n_div"] + f["n_pow"]) * p["div_pow_penalty"]
    energy += f["n_abs"] * p["abs_penalty"]
    energy += f["n_trig"] * p["trig_penalty"]
    if f["nested_expr"]:
        energy += p["nested_expr_penalty"]
    if f["n_div"] > 0:
        energy += p["div_zero_risk_penalty"]
    if f["n_pow"] > 0:
        energy += p["pow_risk_penalty"]
    if f["sqrt_risk"]:
        energy += p["sqrt_risk_penalty"]
    k = f["n_params"]
    if k == 0:
        energy += p["no_params_penalty"]
    elif k < p["few_params_threshold"]:
        energy += p["few_params_penalty"] * (p["few_params_threshold"] - k)
    elif p["optimal_params_min"] <= k <= p["optimal_params_max"]:
        energy -= p["optimal_params_bonus"]
    else:
        energy += p["excess_params_penalty"] * max(0.0, k - p["excess_params_threshold"])
    energy += p["freq_var_weight"] * min(f["freq_var"], p["freq_var_cap"])
    energy -= p["entropy_bonus"] * f["entropy_norm"]
    if f["has_log_v"]:
        energy -= p["log_v_bonus"]
    elif f["n_log"] > 0:
        energy -= p["log_bonus"]
    nonlinear = int(f["logistic"]) + int(f["tanh"]) + int(f["softplus"])
    n_patterns = int(f["has_log_v"]) + int(f["linear_logv"]) + int(f["centered_linear"]) + nonlinear
    affinity = n_patterns / p["pattern_count_divisor"]
    energy -= p["pattern_affinity_bonus"] * affinity
    if f["has_log_v"] and k > 0:
        score = (p["linear_logv_weight"] * int(f["linear_logv"])
                 + p["centered_linear_weight"] * int(f["centered_linear"])
                 + p["nonlinear_weight"] * nonlinear
                 + p["exp_weight"] * f["n_exp"])
        energy -= p["proximity_bonus"] * min(p["proximity_cap"], score)
    simple = f["simple_chars"] and f["n_funcs"] <= p["simple_func_threshold"] and f["n_pow"] == 0
    if simple and f["length"] < p["simple_length_threshold"]:
        energy -= p["simple_bonus"]
    elif f["length"] < p["short_length_threshold"]:
        energy -= p["short_bonus"]
    energy = min(max(energy, 0.0), p["max_energy"])
    z = min(-energy / p["K"], _EXP_CLAMP)
    val = -1.0 + 2.0 * (1.0 - math.exp(z))
    if affinity >= p["pattern_affinity_threshold"] and (nonlinear > 0 or f["has_log_v"]):
        val -= p["pattern_affinity_adjustment"]
    if not math.isfinite(val):
        val = p["nan_inf_default"]
    val = max(p["min_potential"], min(p["max_potential"], val))
    return val * p["overall_factor"]
