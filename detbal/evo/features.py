"""State features for explicit potentials: every state string is parsed once.

Two kinds of state (METHOD.md section 1):

* ``words``: letter-sum words.  Columns ``word_*`` (letter sum, |sum - target|,
  length, letter classes ...) and ``parse_error`` (1 when the string is not purely
  alphabetic).
* ``ansatz``: expression strings.  Columns ``fam_*`` are the inputs of the
  49-parameter family (METHOD.md section 5; docs/family49.md gives each one), and
  depend on the tokenizer ``mode`` (``fixed`` or ``paper``, see
  :mod:`detbal.evo.tokenize`); columns ``tree_*`` come from a real :mod:`ast`
  parse (``^`` read as ``**``) and do not depend on the mode; ``parse_error`` is 1
  when the string does not parse as one Python expression (its tree features are
  then 0).

All values are finite float64.  :func:`featurize` is the only place strings are
read; optimisation loops work on :attr:`FeatureMatrix.X`.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from detbal.errors import DetbalError
from detbal.evo.tokenize import (
    FUNCTIONS,
    TRIG_FUNCTIONS,
    VARIABLE,
    TokenMode,
    check_mode,
    classify_name,
    lex_fixed,
    paper_string,
)
from detbal.progress import Progress

log = logging.getLogger(__name__)

FeatureKind = Literal["words", "ansatz"]

#: inputs of the 49-parameter family, in column order
FAMILY_COLUMNS: tuple[str, ...] = (
    "fam_empty",            # stripped string is empty
    "fam_length",           # len(stripped string)
    "fam_bad_paren",        # a ')' without '(' or an unclosed '('
    "fam_max_depth",        # maximum parenthesis depth
    "fam_extra_chars",      # characters outside [0-9a-z_ +-*/^.(),] and whitespace
    "fam_n_funcs",          # function names
    "fam_n_exp",            # exp
    "fam_n_log",            # log, log10 (paper: substring counts of log, ln, log10)
    "fam_n_sqrt",           # sqrt
    "fam_n_abs",            # abs
    "fam_n_trig",           # sin cos tan arcsin arccos arctan (paper: substrings sin/cos/tan)
    "fam_n_div",            # '/'
    "fam_n_pow",            # '**' and '^'
    "fam_n_params",         # distinct param<k>
    "fam_freq_var",         # variance of the use counts of the distinct parameters
    "fam_entropy_norm",     # normalised entropy of those use counts
    "fam_has_log_v",        # the data variable occurs
    "fam_linear_logv",      # param * log_v_k_nu
    "fam_centered_linear",  # param * (log_v_k_nu - param)
    "fam_logistic",         # 1 / (1 + exp
    "fam_tanh",             # tanh(
    "fam_softplus",         # log(1 + exp
    "fam_nested_expr",      # exp( or log( occurs (the published flag)
    "fam_sqrt_risk",        # a sqrt not guarded as sqrt(abs ...
    "fam_simple_chars",     # only [0-9a-z_ +-*/.(),] and whitespace
)

_TREE_CALLS = tuple(f"tree_call_{f}" for f in FUNCTIONS)
#: features of the real parse
TREE_COLUMNS: tuple[str, ...] = (
    "tree_nodes", "tree_depth", "tree_n_add", "tree_n_sub", "tree_n_mul", "tree_n_div",
    "tree_n_pow", "tree_n_neg", "tree_n_other_op", "tree_n_calls", *_TREE_CALLS,
    "tree_n_unknown_calls", "tree_n_distinct_params", "tree_n_param_uses",
    "tree_has_log_v", "tree_n_var_uses", "tree_n_pi", "tree_n_one", "tree_n_two",
    "tree_n_other_const", "tree_n_unknown_names", "tree_exp_log_nesting",
)
ANSATZ_COLUMNS: tuple[str, ...] = FAMILY_COLUMNS + TREE_COLUMNS + ("parse_error",)

WORD_COLUMNS: tuple[str, ...] = (
    "word_letter_sum", "word_abs_dev", "word_length", "word_n_vowels", "word_n_consonants",
    "word_n_y", "word_n_rare", "word_n_high", "word_n_low", "word_n_distinct", "word_n_double",
    "word_max_value", "word_mean_value", "word_n_nonalpha", "word_is_valid", "parse_error",
)

_VOWELS = frozenset("AEIOU")
_RARE = frozenset("JKQXZ")


@dataclass(frozen=True, eq=False)
class FeatureMatrix:
    """Features of ``states``: ``X[i, j]`` is feature ``names[j]`` of ``states[i]``."""

    names: tuple[str, ...]
    X: np.ndarray
    states: tuple[str, ...]
    mode: str
    kind: str
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _rows: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.X.shape != (len(self.states), len(self.names)):
            raise ValueError(f"X has shape {self.X.shape}, expected ({len(self.states)}, {len(self.names)})")
        self._index.update({n: j for j, n in enumerate(self.names)})
        self._rows.update({s: i for i, s in enumerate(self.states)})

    @property
    def n_states(self) -> int:
        return len(self.states)

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise DetbalError(f"no feature {name!r} in this {self.kind} feature matrix") from None

    def column(self, name: str) -> np.ndarray:
        """Feature ``name`` for every state (a view)."""
        return self.X[:, self.index(name)]

    def rows(self, states: Sequence[str]) -> np.ndarray:
        """Row of each of ``states`` (int64); DetbalError if one was not featurized."""
        try:
            return np.fromiter((self._rows[s] for s in states), dtype=np.int64, count=len(states))
        except KeyError as exc:
            raise DetbalError(f"state {exc.args[0]!r} has no features") from None

    def take(self, rows: np.ndarray | Sequence[int]) -> FeatureMatrix:
        """The matrix restricted to ``rows`` (in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return FeatureMatrix(
            names=self.names, X=self.X[rows], states=tuple(self.states[i] for i in rows),
            mode=self.mode, kind=self.kind,
        )

    def with_columns(self, names: Sequence[str], values: np.ndarray) -> FeatureMatrix:
        """A copy with extra columns appended (``values``: n_states x len(names))."""
        values = np.asarray(values, dtype=np.float64).reshape(self.n_states, len(names))
        return FeatureMatrix(
            names=self.names + tuple(names), X=np.hstack([self.X, values]),
            states=self.states, mode=self.mode, kind=self.kind,
        )

    def record(self, state: str) -> dict[str, float]:
        """``{name: value}`` for one state."""
        row = self.X[self.rows([state])[0]]
        return {n: float(v) for n, v in zip(self.names, row)}


# -- ansatz: the family's features ------------------------------------------------

def _paren_scan(s: str) -> tuple[bool, int]:
    """(unbalanced, maximum depth); a stray ')' is counted and the depth reset to 0."""
    depth = 0
    deepest = 0
    bad = False
    for ch in s:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
            if depth < 0:
                bad = True
                depth = 0
    return bad or depth != 0, deepest


def _param_stats(names: Sequence[str]) -> tuple[int, float, float]:
    """(distinct, variance of use counts, normalised entropy of use counts).

    With counts c_i over n distinct names, C = sum c_i, p_i = c_i / C:
    var = sum (c_i - C/n)^2 / n; H = -sum p_i log(p_i + 1e-12);
    H_norm = H / (log n + 1e-12) for n > 1, else 0.
    """
    uses: dict[str, int] = {}
    for name in names:
        uses[name] = uses.get(name, 0) + 1
    n = len(uses)
    if n == 0:
        return 0, 0.0, 0.0
    counts = [uses[k] for k in sorted(uses)]
    total = sum(counts)
    mean = total / n
    var = sum((c - mean) ** 2 for c in counts) / n
    if n == 1:
        return n, var, 0.0
    ent = -sum((c / total) * math.log(c / total + 1e-12) for c in counts)
    return n, var, ent / (math.log(n) + 1e-12)


_EXTRA_RE = re.compile(r"[^0-9a-z_+\-*/^.(),\s]")
_SIMPLE_RE = re.compile(r"[0-9a-z_\s+\-*/.(),]+")


def _char_features(s: str) -> tuple[float, float, float, float, float]:
    """(length, bad_paren, max_depth, extra_chars, simple_chars) of the stripped string."""
    low = s.lower()
    bad, deepest = _paren_scan(s)
    extra = len(_EXTRA_RE.findall(low))
    simple = _SIMPLE_RE.fullmatch(low) is not None
    return float(len(s)), float(bad), float(deepest), float(extra), float(simple)


def _family_fixed(expr: str) -> list[float]:
    """Family inputs read from the token stream of the real lexer."""
    s = expr.strip()
    if not s:
        return [1.0] + [0.0] * (len(FAMILY_COLUMNS) - 1)
    length, bad, deepest, extra, simple = _char_features(s)
    toks = lex_fixed(s)
    kinds = [k for k, _ in toks]
    texts = [t for _, t in toks]
    funcs = [t for k, t in toks if k == "func"]
    n_params, freq_var, ent = _param_stats([t for k, t in toks if k == "param"])
    has_v = VARIABLE in texts

    def seq_at(i: int, pattern: Sequence[str]) -> bool:
        # pattern items: a token text, or '<param>' for any parameter
        if i + len(pattern) > len(toks):
            return False
        for j, want in enumerate(pattern):
            if want == "<param>":
                if kinds[i + j] != "param":
                    return False
            elif texts[i + j] != want:
                return False
        return True

    def occurs(pattern: Sequence[str]) -> bool:
        return any(seq_at(i, pattern) for i in range(len(toks)))

    sqrt_risk = any(
        t == "sqrt" and not seq_at(i + 1, ("(", "abs")) for i, t in enumerate(texts)
    )
    return [
        0.0, length, bad, deepest, extra,
        float(len(funcs)),
        float(funcs.count("exp")),
        float(funcs.count("log") + funcs.count("log10")),
        float(funcs.count("sqrt")),
        float(funcs.count("abs")),
        float(sum(1 for f in funcs if f in TRIG_FUNCTIONS)),
        float(texts.count("/")),
        float(kinds.count("pow")),
        float(n_params), freq_var, ent,
        float(has_v),
        float(occurs(("<param>", "*", VARIABLE))),
        float(occurs(("<param>", "*", "(", VARIABLE, "-", "<param>", ")"))),
        float(occurs(("1", "/", "(", "1", "+", "exp"))),
        float(occurs(("tanh", "("))),
        float(occurs(("log", "(", "1", "+", "exp"))),
        float(occurs(("exp", "(")) or occurs(("log", "("))),
        float(sqrt_risk),
        simple,
    ]


_P_FUNCS = re.compile(r"\b(?:exp|log|ln|log10|sqrt|tanh|sin|cos|tan|abs|pow|ceil|floor|log_v_k_nu)\b")
_P_PARAM = re.compile(r"\bparam\d+\b")
_P_LINEAR = re.compile(r"\bparam\d+\s*\*\s*log_v_k_nu\b")
_P_CENTERED = re.compile(r"\bparam\d+\s*\*\s*\(\s*log_v_k_nu\s*-\s*param\d+\s*\)")
_P_LOGISTIC = re.compile(r"1\s*/\s*\(\s*1\s*\+\s*exp")
_P_TANH = re.compile(r"\btanh\s*\(")
_P_SOFTPLUS = re.compile(r"log\s*\(\s*1\s*\+\s*exp")
_P_NESTED = re.compile(r"(?:exp|log)\s*\(")
_P_SQRT_ABS = re.compile(r"sqrt\s*\(\s*abs")


def _family_paper(expr: str) -> list[float]:
    """Family inputs as the published code computed them: substring counts and
    regular expressions on the string re-joined from the paper tokenizer."""
    s = paper_string(expr)
    if not s:
        return [1.0] + [0.0] * (len(FAMILY_COLUMNS) - 1)
    low = s.lower()
    length, bad, deepest, extra, simple = _char_features(s)
    n_funcs = len(_P_FUNCS.findall(low))
    n_params, freq_var, ent = _param_stats(_P_PARAM.findall(low))
    n_sqrt = low.count("sqrt")
    return [
        0.0, length, bad, deepest, extra,
        float(n_funcs),
        float(low.count("exp")),
        float(low.count("log") + low.count("ln") + low.count("log10")),
        float(n_sqrt),
        float(low.count("abs")),
        float(low.count("sin") + low.count("cos") + low.count("tan")),
        float(low.count("/")),
        float(low.count("**") + low.count("^")),
        float(n_params), freq_var, ent,
        float(VARIABLE in low),
        float(_P_LINEAR.search(low) is not None),
        float(_P_CENTERED.search(low) is not None),
        float(_P_LOGISTIC.search(low) is not None),
        float(_P_TANH.search(low) is not None),
        float(_P_SOFTPLUS.search(low) is not None),
        float(_P_NESTED.search(low) is not None),
        float(n_sqrt > 0 and _P_SQRT_ABS.search(low) is None),
        simple,
    ]


def family_features(expr: str, mode: TokenMode = "fixed") -> dict[str, float]:
    """The family's inputs (``FAMILY_COLUMNS``) for one string."""
    check_mode(mode)
    values = _family_paper(expr) if mode == "paper" else _family_fixed(expr)
    return dict(zip(FAMILY_COLUMNS, values))


# -- ansatz: tree features --------------------------------------------------------

_BINOPS = {ast.Add: "tree_n_add", ast.Sub: "tree_n_sub", ast.Mult: "tree_n_mul",
           ast.Div: "tree_n_div", ast.Pow: "tree_n_pow"}
_EXP_LOG = frozenset({"exp", "log", "log10"})


def tree_features(expr: str) -> dict[str, float]:
    """Features of the :mod:`ast` parse of ``expr`` (``^`` read as ``**``), plus ``parse_error``."""
    out = dict.fromkeys(TREE_COLUMNS, 0.0)
    out["parse_error"] = 0.0
    text = expr.strip().lower().replace("^", "**")
    try:
        tree = ast.parse(text, mode="eval").body if text else None
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if tree is None:
        out["parse_error"] = 1.0
        return out
    params: dict[str, int] = {}
    call_funcs: set[int] = set()
    stack: list[tuple[ast.AST, int, int]] = [(tree, 1, 0)]
    while stack:
        node, depth, nest = stack.pop()
        if isinstance(node, ast.expr):
            out["tree_nodes"] += 1
            out["tree_depth"] = max(out["tree_depth"], depth)
        child_nest = nest
        if isinstance(node, ast.BinOp):
            out[_BINOPS.get(type(node.op), "tree_n_other_op")] += 1
        elif isinstance(node, ast.UnaryOp):
            out["tree_n_neg" if isinstance(node.op, (ast.USub, ast.UAdd)) else "tree_n_other_op"] += 1
        elif isinstance(node, (ast.BoolOp, ast.Compare)):
            out["tree_n_other_op"] += 1
        elif isinstance(node, ast.Call):
            out["tree_n_calls"] += 1
            name = node.func.id if isinstance(node.func, ast.Name) else ""
            if isinstance(node.func, ast.Name):
                call_funcs.add(id(node.func))
            if name in FUNCTIONS:
                out[f"tree_call_{name}"] += 1
            else:
                out["tree_n_unknown_calls"] += 1
            if name in _EXP_LOG:
                child_nest = nest + 1
                out["tree_exp_log_nesting"] = max(out["tree_exp_log_nesting"], child_nest)
        elif isinstance(node, ast.Name) and id(node) not in call_funcs:
            kind = classify_name(node.id)
            if kind == "param":
                params[node.id] = params.get(node.id, 0) + 1
            elif kind == "var":
                out["tree_n_var_uses"] += 1
            elif kind == "const":
                out["tree_n_pi"] += 1
            else:
                out["tree_n_unknown_names"] += 1
        elif isinstance(node, ast.Constant):
            if node.value == 1:
                out["tree_n_one"] += 1
            elif node.value == 2:
                out["tree_n_two"] += 1
            else:
                out["tree_n_other_const"] += 1
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth + 1 if isinstance(node, ast.expr) else depth, child_nest))
    out["tree_n_distinct_params"] = float(len(params))
    out["tree_n_param_uses"] = float(sum(params.values()))
    out["tree_has_log_v"] = float(out["tree_n_var_uses"] > 0)
    return out


def ansatz_row(expr: str, mode: TokenMode = "fixed") -> list[float]:
    """One row of ``ANSATZ_COLUMNS``."""
    fam = _family_paper(expr) if mode == "paper" else _family_fixed(expr)
    tree = tree_features(expr)
    return fam + [tree[c] for c in TREE_COLUMNS] + [tree["parse_error"]]


# -- words ---------------------------------------------------------------------------

def word_row(word: str, target_sum: int = 100) -> list[float]:
    """One row of ``WORD_COLUMNS`` (letter values A=1 ... Z=26, case-insensitive)."""
    w = word.strip().upper()
    letters = [c for c in w if "A" <= c <= "Z"]
    values = [ord(c) - 64 for c in letters]
    total = float(sum(values))
    n = len(letters)
    valid = bool(w) and n == len(w) and total == target_sum
    return [
        total,
        abs(total - target_sum),
        float(len(w)),
        float(sum(c in _VOWELS for c in letters)),
        float(sum(c not in _VOWELS and c != "Y" for c in letters)),
        float(letters.count("Y")),
        float(sum(c in _RARE for c in letters)),
        float(sum(v >= 20 for v in values)),
        float(sum(v <= 5 for v in values)),
        float(len(set(letters))),
        float(sum(a == b for a, b in zip(w, w[1:]))),
        float(max(values, default=0)),
        total / n if n else 0.0,
        float(len(w) - n),
        float(valid),
        float(not w or n != len(w)),
    ]


# -- featurize -------------------------------------------------------------------

_ANSATZ_HINT = re.compile(r"[()*/+^]|param|log_v_k_nu")


def guess_kind(states: Sequence[str]) -> FeatureKind:
    """``ansatz`` when some state has an operator, a parenthesis, ``param`` or the
    data variable; else ``words``."""
    return "ansatz" if any(_ANSATZ_HINT.search(s) for s in states) else "words"


def featurize(
    states: Sequence[str],
    kind: Literal["words", "ansatz", "auto"] = "auto",
    *,
    mode: TokenMode = "fixed",
    target_sum: int = 100,
    progress: Progress | None = None,
) -> FeatureMatrix:
    """Features of every state, each string read once (see module docstring).

    ``mode`` selects the tokenizer for the ``fam_*`` columns of ansatz states and
    is recorded in the result (for words it is recorded only).
    """
    check_mode(mode)
    states = tuple(states)
    if kind == "auto":
        kind = guess_kind(states) if states else "ansatz"
    if kind == "words":
        names = WORD_COLUMNS
        row = lambda s: word_row(s, target_sum)  # noqa: E731
    elif kind == "ansatz":
        names = ANSATZ_COLUMNS
        row = lambda s: ansatz_row(s, mode)  # noqa: E731
    else:
        raise DetbalError(f"unknown feature kind {kind!r}: use words, ansatz or auto")
    X = np.zeros((len(states), len(names)))
    cache: dict[str, int] = {}
    for i, s in enumerate(states):
        j = cache.get(s)
        if j is None:
            cache[s] = i
            X[i] = row(s)
        else:
            X[i] = X[j]
        if progress is not None and (i + 1) % 1000 == 0:
            progress(1000)
    if progress is not None and len(states) % 1000:
        progress(len(states) % 1000)
    errors = int(X[:, names.index("parse_error")].sum()) if len(states) else 0
    if errors:
        log.info("%d of %d %s states did not parse", errors, len(states), kind)
    return FeatureMatrix(names=names, X=X, states=states, mode=mode, kind=kind)
