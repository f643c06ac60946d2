"""Ansatz strings: validation by parsing, a sympy canonical form, compiled numpy evaluation.

An ansatz is a Python expression over the data variables (``log_v_k_nu`` for
``nikuradse_2``), fit parameters ``param1..paramK`` numbered consecutively from 1,
the functions :data:`FUNCTIONS`, the operators ``+ - * / **`` and unary minus, and the
constants ``1``, ``2`` and ``pi``.  Validation walks the syntax tree from :func:`ast.parse`;
anything outside this grammar raises :class:`AnsatzError` with a one-line reason (the
agent records it as the escape ``invalid_ansatz``).

A validated ansatz compiles once into a vectorised function ``f(X, P)``: ``X`` has shape
``(n_features, n)``, ``P`` shape ``(S, K)`` (``S`` parameter vectors at once) and the
result shape ``(S, n)``.  :meth:`CompiledAnsatz.value_and_jacobian` evaluates the same
code on forward-mode dual numbers, giving ``f`` and ``df/dparam_j`` exactly;
:meth:`CompiledAnsatz.mse_and_gradient` (used by the fit) gets the MSE and its exact
gradient by one forward and one reverse sweep over a tape of numpy operations.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from detbal.agents.fit.language import (
    BINARY_OPERATORS,
    FUNCTIONS,
    LITERAL_SPELLINGS,
    NAMED_CONSTANTS,
    PARAM_PREFIX,
)

MAX_LENGTH = 2000
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}


class AnsatzError(ValueError):
    """An ansatz outside the grammar; ``reason`` is one line for ``escape_detail``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Ansatz:
    """A validated ansatz: its text, variables, number of parameters and parsed body."""

    text: str
    variables: tuple[str, ...]
    n_params: int
    tree: ast.expr = field(compare=False, repr=False)


def _param_index(name: str) -> int | None:
    """``j`` for ``paramj`` (j >= 1, no leading zero), else None."""
    if not name.startswith(PARAM_PREFIX):
        return None
    digits = name[len(PARAM_PREFIX):]
    if not digits.isascii() or not digits.isdigit() or digits.startswith("0"):
        return None
    return int(digits)


def _node_name(node: ast.AST) -> str:
    return type(node).__name__


class _Checker:
    def __init__(self, text: str, variables: Sequence[str]) -> None:
        self.text = text
        self.variables = tuple(variables)
        self.params: set[int] = set()

    def check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise AnsatzError(f"operator {_node_name(node.op)} is not allowed"
                                  f" (only {' '.join(BINARY_OPERATORS)})")
            self.check(node.left)
            self.check(node.right)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub):
                raise AnsatzError(f"unary {_node_name(node.op)} is not allowed (only unary minus)")
            self.check(node.operand)
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                raise AnsatzError(f"attribute access ({ast.unparse(func)}) is not allowed")
            if not isinstance(func, ast.Name):
                raise AnsatzError(f"call of a {_node_name(func)} is not allowed")
            if func.id not in FUNCTIONS:
                raise AnsatzError(f"function {func.id!r} is not allowed")
            if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
                raise AnsatzError(f"{func.id} takes exactly one positional argument")
            self.check(node.args[0])
        elif isinstance(node, ast.Name):
            name = node.id
            if name in self.variables or name in NAMED_CONSTANTS:
                return
            j = _param_index(name)
            if j is not None:
                self.params.add(j)
            elif name in FUNCTIONS:
                raise AnsatzError(f"function {name} used without a call")
            else:
                raise AnsatzError(f"unknown name {name!r}")
        elif isinstance(node, ast.Attribute):
            raise AnsatzError(f"attribute access ({ast.unparse(node)}) is not allowed")
        elif isinstance(node, ast.Constant):
            value = node.value
            spelled = ast.get_source_segment(self.text, node)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or spelled not in LITERAL_SPELLINGS
            ):
                raise AnsatzError(
                    f"literal {spelled if spelled is not None else value!r} is not allowed"
                    " (only the constants 1, 2 and pi)"
                )
        else:
            raise AnsatzError(f"{_node_name(node)} expressions are not allowed")


def validate_ansatz(text: str, variables: Sequence[str] = ("log_v_k_nu",)) -> Ansatz:
    """Parse and check ``text``; raise :class:`AnsatzError` with the reason if it is not a valid ansatz."""
    if not isinstance(text, str) or not text.strip():
        raise AnsatzError("empty ansatz")
    text = text.strip()
    if len(text) > MAX_LENGTH:
        raise AnsatzError(f"longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise AnsatzError(f"not a valid expression ({exc.msg})") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise AnsatzError(f"cannot parse ({type(exc).__name__})") from None
    checker = _Checker(text, variables)
    try:
        checker.check(tree.body)
    except RecursionError:
        raise AnsatzError("too deeply nested") from None
    k = max(checker.params, default=0)
    missing = sorted(set(range(1, k + 1)) - checker.params)
    if missing:
        gaps = ", ".join(f"param{j}" for j in missing[:3])
        raise AnsatzError(f"parameters must be numbered param1..param{k} without gaps (missing {gaps})")
    return Ansatz(text=text, variables=tuple(variables), n_params=k, tree=tree.body)


_PARAM_TOKEN = re.compile(rf"\b{PARAM_PREFIX}([0-9]+)\b")


def renumber_params(text: str) -> str:
    """``text`` with its parameters renamed param1, param2, ... in order of first use.

    ``param3*log_v_k_nu + param7 + param3`` becomes ``param1*log_v_k_nu + param2 + param1``.
    The decoding grammar lets the model pick parameter numbers freely; renumbering
    afterwards makes every answer it admits a valid state.
    """
    order: dict[str, int] = {}

    def sub(m: re.Match[str]) -> str:
        j = order.setdefault(m.group(1), len(order) + 1)
        return f"{PARAM_PREFIX}{j}"

    return _PARAM_TOKEN.sub(sub, text)


def invalid_reason(text: str, variables: Sequence[str] = ("log_v_k_nu",)) -> str | None:
    """None for a valid ansatz, else the reason it is rejected."""
    try:
        validate_ansatz(text, variables)
    except AnsatzError as exc:
        return exc.reason
    return None


# -- canonical form -----------------------------------------------------------

def _to_sympy(node: ast.expr, symbols: dict[str, Any]) -> Any:
    import sympy as sp

    if isinstance(node, ast.BinOp):
        a = _to_sympy(node.left, symbols)
        b = _to_sympy(node.right, symbols)
        op = type(node.op)
        if op is ast.Add:
            return a + b
        if op is ast.Sub:
            return a - b
        if op is ast.Mult:
            return a * b
        if op is ast.Div:
            return a / b
        return a**b
    if isinstance(node, ast.UnaryOp):
        return -_to_sympy(node.operand, symbols)
    if isinstance(node, ast.Call):
        u = _to_sympy(node.args[0], symbols)
        name = node.func.id  # type: ignore[attr-defined]
        table = {
            "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "arcsin": sp.asin,
            "arccos": sp.acos, "arctan": sp.atan, "tanh": sp.tanh, "log": sp.log,
            "exp": sp.exp, "sqrt": sp.sqrt, "abs": sp.Abs,
        }
        if name == "square":
            return u**2
        if name == "log10":
            return sp.log(u, 10)
        return table[name](u)
    if isinstance(node, ast.Name):
        if node.id == "pi":
            return sp.pi
        if node.id not in symbols:
            symbols[node.id] = sp.Symbol(node.id, real=True)
        return symbols[node.id]
    if isinstance(node, ast.Constant):
        return sp.Integer(int(node.value))
    raise AnsatzError(f"{_node_name(node)} expressions are not allowed")  # unreachable after validation


#: up to this many fit parameters every relabelling is tried (5! = 120 printings)
_RELABEL_ALL_UP_TO = 5


def _relabelled(expr: Any) -> str:
    """The smallest printed form of ``expr`` over relabellings of its fit parameters.

    Sympy orders sums and products by symbol name, so each relabelling prints
    differently; the smallest printing (shortest, then alphabetical) names the class.
    Up to :data:`_RELABEL_ALL_UP_TO` parameters every permutation is tried; beyond
    that, parameters are renamed in order of first appearance until the printing
    settles (the same class can then, rarely, print two ways).
    """
    import itertools

    import sympy as sp

    params = sorted((x for x in expr.free_symbols if _PARAM_TOKEN.fullmatch(x.name)), key=lambda x: x.name)
    if not params:
        return str(expr)
    temp = [sp.Dummy(f"q{j}", real=True) for j in range(len(params))]
    names = [sp.Symbol(f"{PARAM_PREFIX}{j}", real=True) for j in range(1, len(params) + 1)]
    base = expr.xreplace(dict(zip(params, temp)))

    def printed(order: Sequence[int]) -> str:
        return str(base.xreplace({temp[i]: names[k] for k, i in enumerate(order)}))

    def key(s: str) -> tuple[int, str]:
        return len(s), s

    if len(params) <= _RELABEL_ALL_UP_TO:
        return min((printed(p) for p in itertools.permutations(range(len(params)))), key=key)
    order = list(range(len(params)))  # order[k]: the parameter now labelled k+1
    s = printed(order)
    for _ in range(8):
        # labels in order of first appearance; the k-th of them becomes label k+1
        first = list(dict.fromkeys(int(m.group(1)) - 1 for m in _PARAM_TOKEN.finditer(s)))
        order = [order[label] for label in first]
        nxt = printed(order)
        if nxt == s:
            break
        s = nxt
    return s


@lru_cache(maxsize=4096)
def _canonical_cached(text: str, variables: tuple[str, ...]) -> str:
    ansatz = validate_ansatz(text, variables)
    return _relabelled(_to_sympy(ansatz.tree, {}))


def canonical_form(ansatz: Ansatz) -> str:
    """The ansatz's functional form: sympy's automatic canonical form (sorted sums and
    products, ``log10(u) -> log(u)/log(10)``) with the fit parameters relabelled.

    Only sympy's construction-time rules are applied (no ``simplify``), so this is
    cheap and deterministic; symbols are real.  Fit parameters are dummies (the fit
    is the same whatever they are called), so the form is the smallest printing over
    their relabellings: ``param2 + param1*x`` and ``param1 + param2*x`` have one
    canonical form.  Ansatzes with one canonical form
    are one functional form; the analysis can merge them into one state.
    """
    return _canonical_cached(ansatz.text, ansatz.variables)


# -- compiled evaluation ------------------------------------------------------

class _Rewrite(ast.NodeTransformer):
    """Variables -> ``X[i]``, ``paramj`` -> ``P[j-1]``, ``pi`` -> float, ``f(u)`` -> ``F.f(u)``."""

    def __init__(self, variables: Sequence[str]) -> None:
        self.index = {v: i for i, v in enumerate(variables)}

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.index:
            new: ast.AST = ast.Subscript(ast.Name("X", ast.Load()), ast.Constant(self.index[node.id]), ast.Load())
        elif node.id in NAMED_CONSTANTS:
            new = ast.Constant(NAMED_CONSTANTS[node.id])
        else:
            j = _param_index(node.id)
            new = ast.Subscript(ast.Name("P", ast.Load()), ast.Constant(j - 1), ast.Load())  # type: ignore[operator]
        return ast.copy_location(new, node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        arg = self.visit(node.args[0])
        func = ast.Attribute(ast.Name("F", ast.Load()), node.func.id, ast.Load())  # type: ignore[attr-defined]
        return ast.copy_location(ast.Call(func, [arg], []), node)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        return ast.copy_location(ast.Constant(float(node.value)), node)


class _NumpyOps:
    sin = staticmethod(np.sin)
    cos = staticmethod(np.cos)
    tan = staticmethod(np.tan)
    arcsin = staticmethod(np.arcsin)
    arccos = staticmethod(np.arccos)
    arctan = staticmethod(np.arctan)
    tanh = staticmethod(np.tanh)
    log = staticmethod(np.log)
    log10 = staticmethod(np.log10)
    exp = staticmethod(np.exp)
    square = staticmethod(np.square)
    sqrt = staticmethod(np.sqrt)
    abs = staticmethod(np.abs)


_LN10 = math.log(10.0)


class Dual:
    """Forward-mode dual number: value ``v`` and tangents ``d`` (leading axis = parameter)."""

    __slots__ = ("v", "d")
    __array_priority__ = 1000.0

    def __init__(self, v: Any, d: Any) -> None:
        self.v = v
        self.d = d

    @staticmethod
    def _split(o: Any) -> tuple[Any, Any]:
        return (o.v, o.d) if isinstance(o, Dual) else (o, None)

    def __add__(self, o: Any) -> Dual:
        ov, od = Dual._split(o)
        return Dual(self.v + ov, self.d if od is None else self.d + od)

    __radd__ = __add__

    def __sub__(self, o: Any) -> Dual:
        ov, od = Dual._split(o)
        return Dual(self.v - ov, self.d if od is None else self.d - od)

    def __rsub__(self, o: Any) -> Dual:
        return Dual(o - self.v, -self.d)

    def __mul__(self, o: Any) -> Dual:
        ov, od = Dual._split(o)
        d = self.d * ov if od is None else self.d * ov + od * self.v
        return Dual(self.v * ov, d)

    __rmul__ = __mul__

    def __truediv__(self, o: Any) -> Dual:
        ov, od = Dual._split(o)
        v = self.v / ov
        d = self.d / ov if od is None else (self.d - od * v) / ov
        return Dual(v, d)

    def __rtruediv__(self, o: Any) -> Dual:
        v = o / self.v
        return Dual(v, -self.d * (v / self.v))

    def __pow__(self, o: Any) -> Dual:
        ov, od = Dual._split(o)
        v = self.v**ov
        d = self.d * (ov * self.v ** (ov - 1.0))
        if od is not None:
            d = d + od * (v * np.log(self.v))
        return Dual(v, d)

    def __rpow__(self, o: Any) -> Dual:
        v = o**self.v
        return Dual(v, self.d * (v * np.log(o)))

    def __neg__(self) -> Dual:
        return Dual(-self.v, -self.d)


def _lift(fn: Any, deriv: Any) -> Any:
    def apply(u: Any) -> Any:
        if isinstance(u, Dual):
            return Dual(fn(u.v), u.d * deriv(u.v))
        return fn(u)

    return staticmethod(apply)


class _DualOps:
    sin = _lift(np.sin, np.cos)
    cos = _lift(np.cos, lambda u: -np.sin(u))
    tan = _lift(np.tan, lambda u: 1.0 / np.cos(u) ** 2)
    arcsin = _lift(np.arcsin, lambda u: 1.0 / np.sqrt(1.0 - u * u))
    arccos = _lift(np.arccos, lambda u: -1.0 / np.sqrt(1.0 - u * u))
    arctan = _lift(np.arctan, lambda u: 1.0 / (1.0 + u * u))
    tanh = _lift(np.tanh, lambda u: 1.0 - np.tanh(u) ** 2)
    log = _lift(np.log, lambda u: 1.0 / u)
    log10 = _lift(np.log10, lambda u: 1.0 / (u * _LN10))
    exp = _lift(np.exp, np.exp)
    square = _lift(np.square, lambda u: 2.0 * u)
    sqrt = _lift(np.sqrt, lambda u: 0.5 / np.sqrt(u))
    abs = _lift(np.abs, np.sign)


@dataclass(frozen=True)
class CompiledAnsatz:
    """``f(X, P)`` compiled once from a validated ansatz (see the module docstring for shapes)."""

    ansatz: Ansatz
    code: Any = field(repr=False)
    tape: tuple[tuple[Any, ...], ...] = field(default=(), repr=False)

    @property
    def n_params(self) -> int:
        return self.ansatz.n_params

    def _eval(self, X: np.ndarray, cols: list[Any], ops: type) -> Any:
        return eval(self.code, {"__builtins__": {}, "F": ops}, {"X": X, "P": cols})  # noqa: S307

    def value(self, X: np.ndarray, params: np.ndarray) -> np.ndarray:
        """``f`` with shape ``(S, n)`` for ``params`` of shape ``(S, K)`` (``(n,)`` for shape ``(K,)``)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        P = np.asarray(params, dtype=float)
        single = P.ndim == 1
        P2 = P.reshape(1, -1) if single else P
        cols = [P2[:, j : j + 1] for j in range(self.n_params)]
        with np.errstate(all="ignore"):
            out = np.broadcast_to(self._eval(X, cols, _NumpyOps), (P2.shape[0], X.shape[1]))
        return out[0] if single else out

    def value_and_jacobian(self, X: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(f, J)``: ``f`` shape ``(S, n)``, ``J[j] = df/dparam_{j+1}`` shape ``(K, S, n)``."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        P = np.atleast_2d(np.asarray(params, dtype=float))
        S, K = P.shape
        n = X.shape[1]
        cols: list[Any] = []
        for j in range(K):
            d = np.zeros((K, S, 1))
            d[j] = 1.0
            cols.append(Dual(P[:, j : j + 1], d))
        with np.errstate(all="ignore"):
            out = self._eval(X, cols, _DualOps)
            if isinstance(out, Dual):
                f = np.broadcast_to(out.v, (S, n))
                J = np.broadcast_to(out.d, (K, S, n))
            else:
                f = np.broadcast_to(out, (S, n))
                J = np.zeros((K, S, n))
        return f, J

    def mse_and_gradient(self, X: np.ndarray, y: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MSE per parameter vector (shape ``(S,)``) and its exact gradient (``(S, K)``), by reverse mode.

        ``MSE = mean_i (f_i - y_i)^2`` and ``dMSE/dp_j = (2/n) sum_i (f_i - y_i) df_i/dp_j``; one
        forward and one backward sweep over the tape, whatever ``K`` is.
        """
        X = np.atleast_2d(np.asarray(X, dtype=float))
        P = np.atleast_2d(np.asarray(params, dtype=float))
        S, K = P.shape
        n = X.shape[1]
        with np.errstate(all="ignore"):
            vals = _forward(self.tape, X, P)
            r = np.broadcast_to(vals[-1], (S, n)) - y
            mse = np.mean(r * r, axis=1)
            if K == 0 or not self.tape[-1][4]:
                return mse, np.zeros((S, K))
            grad = _backward(self.tape, vals, (2.0 / n) * r, K)
        return mse, grad



# -- reverse mode: a tape of numpy operations ------------------------------------

_VALUE_FUNCS = {name: getattr(_NumpyOps, name) for name in FUNCTIONS}


def _dfn(name: str, u: Any, v: Any) -> Any:
    """d name(u) / du, given u and v = name(u)."""
    if name == "sin":
        return np.cos(u)
    if name == "cos":
        return -np.sin(u)
    if name == "tan":
        return 1.0 + v * v
    if name == "arcsin":
        return 1.0 / np.sqrt(1.0 - u * u)
    if name == "arccos":
        return -1.0 / np.sqrt(1.0 - u * u)
    if name == "arctan":
        return 1.0 / (1.0 + u * u)
    if name == "tanh":
        return 1.0 - v * v
    if name == "log":
        return 1.0 / u
    if name == "log10":
        return 1.0 / (u * _LN10)
    if name == "exp":
        return v
    if name == "square":
        return 2.0 * u
    if name == "sqrt":
        return 0.5 / v
    return np.sign(u)  # abs


def _build_tape(node: ast.expr, variables: Sequence[str], tape: list[tuple[Any, ...]]) -> int:
    """Append ``node``'s operations to ``tape`` (post-order); return the index of its result.

    Entries: ``(kind, arg, a, b, depends_on_params)`` with kind one of x p c + - * / ** neg fn.
    """
    if isinstance(node, ast.BinOp):
        a = _build_tape(node.left, variables, tape)
        b = _build_tape(node.right, variables, tape)
        kind = _BINOPS[type(node.op)]
        tape.append((kind, None, a, b, tape[a][4] or tape[b][4]))
    elif isinstance(node, ast.UnaryOp):
        a = _build_tape(node.operand, variables, tape)
        tape.append(("neg", None, a, -1, tape[a][4]))
    elif isinstance(node, ast.Call):
        a = _build_tape(node.args[0], variables, tape)
        tape.append(("fn", node.func.id, a, -1, tape[a][4]))  # type: ignore[attr-defined]
    elif isinstance(node, ast.Name):
        if node.id in variables:
            tape.append(("x", list(variables).index(node.id), -1, -1, False))
        elif node.id in NAMED_CONSTANTS:
            tape.append(("c", NAMED_CONSTANTS[node.id], -1, -1, False))
        else:
            tape.append(("p", _param_index(node.id) - 1, -1, -1, True))  # type: ignore[operator]
    else:
        tape.append(("c", float(node.value), -1, -1, False))  # type: ignore[attr-defined]
    return len(tape) - 1


def _forward(tape: Sequence[tuple[Any, ...]], X: np.ndarray, P: np.ndarray) -> list[Any]:
    vals: list[Any] = []
    for kind, arg, a, b, _dep in tape:
        if kind == "x":
            v = X[arg]
        elif kind == "p":
            v = P[:, arg : arg + 1]
        elif kind == "c":
            v = arg
        elif kind == "+":
            v = vals[a] + vals[b]
        elif kind == "-":
            v = vals[a] - vals[b]
        elif kind == "*":
            v = vals[a] * vals[b]
        elif kind == "/":
            v = vals[a] / vals[b]
        elif kind == "**":
            v = vals[a] ** vals[b]
        elif kind == "neg":
            v = -vals[a]
        else:
            v = _VALUE_FUNCS[arg](vals[a])
        vals.append(v)
    return vals


def _backward(tape: Sequence[tuple[Any, ...]], vals: list[Any], g_out: np.ndarray, K: int) -> np.ndarray:
    """Reverse sweep: ``sum_i g_out[s, i] * d f[s, i] / d param_j`` for every start s (shape ``(S, K)``)."""
    S = g_out.shape[0]
    grad = np.zeros((S, K))
    adj: list[Any] = [None] * len(tape)
    adj[-1] = g_out

    def push(i: int, g: Any) -> None:
        if tape[i][4]:
            adj[i] = g if adj[i] is None else adj[i] + g

    for k in range(len(tape) - 1, -1, -1):
        g = adj[k]
        if g is None:
            continue
        adj[k] = None
        kind, arg, a, b, _dep = tape[k]
        if kind == "p":
            grad[:, arg] += np.broadcast_to(g, g_out.shape).sum(axis=1)
        elif kind == "+":
            push(a, g)
            push(b, g)
        elif kind == "-":
            push(a, g)
            if tape[b][4]:
                push(b, -g)
        elif kind == "*":
            if tape[a][4]:
                push(a, g * vals[b])
            if tape[b][4]:
                push(b, g * vals[a])
        elif kind == "/":
            q = g / vals[b]
            push(a, q)
            if tape[b][4]:
                push(b, -q * vals[k])
        elif kind == "**":
            if tape[a][4]:
                push(a, g * (vals[b] * vals[a] ** (vals[b] - 1.0)))
            if tape[b][4]:
                push(b, g * (vals[k] * np.log(vals[a])))
        elif kind == "neg":
            push(a, -g)
        elif kind == "fn":
            push(a, g * _dfn(arg, vals[a], vals[k]))
    return grad

def compile_ansatz(ansatz: Ansatz) -> CompiledAnsatz:
    """Compile a validated :class:`Ansatz` to a :class:`CompiledAnsatz` (no re-validation)."""
    import copy

    body = _Rewrite(ansatz.variables).visit(copy.deepcopy(ansatz.tree))
    expr = ast.fix_missing_locations(ast.Expression(body))
    code = compile(expr, "<ansatz>", "eval")
    tape: list[tuple[Any, ...]] = []
    _build_tape(ansatz.tree, ansatz.variables, tape)
    return CompiledAnsatz(ansatz=ansatz, code=code, tape=tuple(tape))
