"""Tokenizing ansatz strings (METHOD.md sections 1 and 5).

Two modes:

* ``fixed``: a real lexer.  Identifiers are read whole (longest match), so
  ``tanh`` is tanh, ``log_v_k_nu`` is the data variable and ``param12`` is one
  parameter; numbers are read whole; ``**`` (and ``^``) is power.  The input is
  lower-cased first, as the published feature code lower-cases its input.
* ``paper``: the published tokenizer, flaw included.  It tries a fixed list of
  alternatives at each position, first match wins, and skips characters that
  match none: ``tan`` is tried before ``tanh`` (``tanh`` -> ``tan``, the ``h`` is
  skipped), ``log`` before ``log_v_k_nu`` (-> ``log``), ``param[1-9]`` takes one
  digit, digits other than 1 and 2 and every other symbol vanish.  Tokens outside
  its 34-entry vocabulary (whitespace runs other than one blank) are dropped.
  The features are then computed on the string re-joined from these tokens.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from detbal.agents.fit.language import (
    FUNCTIONS,
    NAMED_CONSTANTS,
    PARAM_PREFIX,
    VARIABLES,
)
from detbal.agents.fit.language import (
    TRIG_FUNCTIONS as TRIG_FUNCTIONS,  # re-exported for detbal.evo.features
)

if TYPE_CHECKING:
    import numpy as np

TokenMode = Literal["fixed", "paper"]
TOKEN_MODES: tuple[str, ...] = ("fixed", "paper")

#: the Nikuradse data variable (the ansatz language's tables live in detbal.agents.fit.language)
VARIABLE = VARIABLES["nikuradse_2"][0]
CONSTANT_NAMES: frozenset[str] = frozenset(NAMED_CONSTANTS)

_FUNCTION_SET = frozenset(FUNCTIONS)
_PARAM_RE = re.compile(PARAM_PREFIX + "[0-9]+")

# -- paper mode ----------------------------------------------------------------
# The published alternatives in their order; the first that matches at a position
# wins.  Written out here as the specification of the flaw.
_PAPER_ALTERNATIVES = (
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "tanh", "log10", "log", "exp",
    "square", "sqrt", "abs", r"\*\*", r"\*", "/", r"\+", "-", r"\(", r"\)", r"\s+",
    "param[1-9]", "log_v_k_nu", "1", "2", "pi",
)
_PAPER_RE = re.compile("|".join(_PAPER_ALTERNATIVES))
#: the published 34-token vocabulary; anything else the regex yields is dropped
PAPER_VOCAB: frozenset[str] = frozenset(
    list(FUNCTIONS)
    + ["*", "**", "/", "+", "-", "1", "2", "pi", VARIABLE]
    + [f"param{i}" for i in range(1, 10)]
    + ["(", ")", " "]
)

# -- fixed mode ------------------------------------------------------------------
_FIXED_RE = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<name>[a-z_][a-z0-9_]*)"
    r"|(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"|(?P<op>\*\*|[-+*/^(),])"
    r"|(?P<other>.)",
    re.S,
)


def check_mode(mode: str) -> None:
    if mode not in TOKEN_MODES:
        raise ValueError(f"unknown tokenizer mode {mode!r}: use one of {', '.join(TOKEN_MODES)}")


def tokenize_paper(expr: str) -> tuple[str, ...]:
    """Tokens of the published tokenizer (blank tokens ``' '`` kept, as it kept them)."""
    return tuple(t for t in _PAPER_RE.findall(expr) if t in PAPER_VOCAB)


def paper_string(expr: str) -> str:
    """The string the published feature code saw: its tokens re-joined and stripped."""
    return "".join(tokenize_paper(expr)).strip()


def classify_name(name: str) -> str:
    """Kind of an identifier: ``func``, ``var``, ``param``, ``const`` or ``name``."""
    if name in _FUNCTION_SET:
        return "func"
    if name == VARIABLE:
        return "var"
    if _PARAM_RE.fullmatch(name):
        return "param"
    if name in CONSTANT_NAMES:
        return "const"
    return "name"


def lex_fixed(expr: str) -> tuple[tuple[str, str], ...]:
    """``(kind, text)`` tokens of the lower-cased, stripped ``expr``, whitespace dropped.

    Kinds: ``func var param const name num op pow other``; ``**`` and ``^`` are ``pow``.
    """
    out: list[tuple[str, str]] = []
    for m in _FIXED_RE.finditer(expr.strip().lower()):
        kind = m.lastgroup
        text = m.group()
        if kind == "ws":
            continue
        if kind == "name":
            kind = classify_name(text)
        elif kind == "op" and text in ("**", "^"):
            kind = "pow"
        out.append((str(kind), text))
    return tuple(out)


def tokenize(expr: str, mode: TokenMode = "fixed") -> tuple[str, ...]:
    """Token texts of ``expr`` in ``mode`` (``fixed``: no whitespace tokens)."""
    check_mode(mode)
    if mode == "paper":
        return tokenize_paper(expr)
    return tuple(text for _kind, text in lex_fixed(expr))


# -- synthetic ansatz strings (tests and benchmarks) --------------------------------

_NIKURADSE_SNIPPETS = (
    "{p}*log_v_k_nu",
    "{p}*(log_v_k_nu - {q})",
    "1/(1 + exp({e}))",
    "tanh({e})",
    "log(1 + exp({e}))",
    "sqrt(abs({e}))",
)


def random_ansatz(rng: "np.random.Generator", *, max_depth: int = 4, n_params: int = 6) -> str:
    """A random expression from the ansatz grammar of METHOD.md section 1.

    Leaves are ``param1..param{n_params}``, ``log_v_k_nu``, 1, 2, pi; inner nodes
    are the 13 functions and + - * / **; with some probability a Nikuradse
    pattern (param*x, param*(x - param), logistic, tanh, softplus, sqrt(abs)) is
    spliced in.  Spacing around operators varies.
    """
    sp = " " if rng.random() < 0.5 else ""

    def param() -> str:
        return f"param{int(rng.integers(1, n_params + 1))}"

    def node(depth: int) -> str:
        r = rng.random()
        if depth >= max_depth or r < 0.25:
            leaf = rng.random()
            if leaf < 0.5:
                return param()
            if leaf < 0.8:
                return VARIABLE
            return str(rng.choice(["1", "2", "pi"]))
        if r < 0.4:
            tpl = _NIKURADSE_SNIPPETS[int(rng.integers(len(_NIKURADSE_SNIPPETS)))]
            return tpl.format(p=param(), q=param(), e=node(depth + 1))
        if r < 0.6:
            return f"{FUNCTIONS[int(rng.integers(len(FUNCTIONS)))]}({node(depth + 1)})"
        op = str(rng.choice(["+", "-", "*", "/", "**"], p=[0.3, 0.2, 0.3, 0.12, 0.08]))
        left, right = node(depth + 1), node(depth + 1)
        if rng.random() < 0.4:
            left = f"({left})"
        if rng.random() < 0.4 or op in ("/", "**"):
            right = f"({right})"
        return f"{left}{sp}{op}{sp}{right}"

    return node(0)
