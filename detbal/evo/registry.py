"""One registry of operators for symbolic potentials.

Each :class:`Operator` is defined once with its arity, its numpy implementation,
its sympy counterpart and its complexity cost.  Everything else is derived:

* DEAP primitives (:func:`add_to_pset`) call the numpy implementation;
* compiled trees (:func:`compile_tree`) call the same numpy implementation,
  vectorised over all states at once;
* sympy export (:func:`tree_to_sympy`) uses the sympy counterpart; protected
  operators are sympy functions (``pdiv``, ``plog``, ``pexp``) whose ``_imp_`` *is*
  the numpy implementation, so ``sympy.lambdify`` of an exported expression
  evaluates exactly what the tree evaluates;
* LaTeX is ``sympy.latex`` of the export (the protected functions print as the
  plain operation they guard: ``pdiv(a, b)`` as a fraction).

Protection (numpy and sympy agree by construction):

* ``div(a, b) = a / b`` where ``|b| > 1e-9``, else 1;
* ``log(x) = log|x|`` where ``|x| > 1e-9``, else 0;
* ``sqrt(x) = sqrt|x|``;
* ``exp(x) = exp(min(x, 50))``.

Three piecewise operators (``max``, ``min``, ``step``: 1 where x > 0, else 0) are
there so that rule-based potentials such as the 49-parameter family are formulas
too; they are not in the default GP set.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy

from detbal.errors import DetbalError

#: below this magnitude a divisor or a log argument is treated as zero
EPS = 1e-9
#: exp is clipped at exp(EXP_CLIP)
EXP_CLIP = 50.0


# -- numpy implementations (the single source of numerical truth) ----------
def _f(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def np_pdiv(a: Any, b: Any) -> np.ndarray:
    """a / b where |b| > EPS, else 1."""
    a, b = _f(a), _f(b)
    ok = np.abs(b) > EPS
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(ok, a / np.where(ok, b, 1.0), 1.0)


def np_plog(x: Any) -> np.ndarray:
    """log|x| where |x| > EPS, else 0."""
    x = np.abs(_f(x))
    ok = x > EPS
    return np.where(ok, np.log(np.where(ok, x, 1.0)), 0.0)


def np_psqrt(x: Any) -> np.ndarray:
    """sqrt|x|."""
    return np.sqrt(np.abs(_f(x)))


def np_pexp(x: Any) -> np.ndarray:
    """exp(min(x, EXP_CLIP))."""
    return np.exp(np.minimum(_f(x), EXP_CLIP))


def _np_square(x: Any) -> np.ndarray:
    x = _f(x)
    with np.errstate(over="ignore"):
        return x * x


def _np_add(a: Any, b: Any) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.add(_f(a), _f(b))


def _np_sub(a: Any, b: Any) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.subtract(_f(a), _f(b))


def _np_mul(a: Any, b: Any) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.multiply(_f(a), _f(b))


def _np_neg(x: Any) -> np.ndarray:
    return np.negative(_f(x))


def _np_tanh(x: Any) -> np.ndarray:
    return np.tanh(_f(x))


def _np_abs(x: Any) -> np.ndarray:
    return np.abs(_f(x))


def _np_sin(x: Any) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.sin(_f(x))


def _np_cos(x: Any) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.cos(_f(x))


# -- sympy counterparts of the protected operators ---------------------------
def _num(x: sympy.Expr) -> float | None:
    """Python float of a real sympy number, None for anything else."""
    if x.is_Number and x.is_real:
        return float(x)
    return None


def _power(tex: str, exp: str | None) -> str:
    """``tex`` raised to ``exp`` (sympy's printer passes powers of functions this way)."""
    return tex if exp is None else r"\left(%s\right)^{%s}" % (tex, exp)


class pdiv(sympy.Function):  # noqa: N801 - printed name
    """Protected division: a / b where |b| > 1e-9, else 1."""

    nargs = 2
    _imp_ = staticmethod(np_pdiv)

    @classmethod
    def eval(cls, a: sympy.Expr, b: sympy.Expr) -> sympy.Expr | None:
        v = _num(b)
        if v is not None:
            return a / b if abs(v) > EPS else sympy.Integer(1)
        return None

    def _latex(self, printer: Any, exp: str | None = None) -> str:
        a, b = self.args
        return _power(r"\frac{%s}{%s}" % (printer._print(a), printer._print(b)), exp)


class plog(sympy.Function):  # noqa: N801
    """Protected logarithm: log|x| where |x| > 1e-9, else 0."""

    nargs = 1
    _imp_ = staticmethod(np_plog)

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        v = _num(x)
        if v is not None:
            return sympy.Float(math.log(abs(v))) if abs(v) > EPS else sympy.Integer(0)
        return None

    def _latex(self, printer: Any, exp: str | None = None) -> str:
        return _power(r"\log\left|%s\right|" % printer._print(self.args[0]), exp)


class pexp(sympy.Function):  # noqa: N801
    """Clipped exponential: exp(min(x, 50))."""

    nargs = 1
    _imp_ = staticmethod(np_pexp)

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        v = _num(x)
        if v is not None:
            return sympy.Float(math.exp(min(v, EXP_CLIP)))
        return None

    def _latex(self, printer: Any, exp: str | None = None) -> str:
        return _power(r"e^{%s}" % printer._print(self.args[0]), exp)


def np_pmax(a: Any, b: Any) -> np.ndarray:
    """Elementwise max(a, b)."""
    return np.maximum(_f(a), _f(b))


def np_pmin(a: Any, b: Any) -> np.ndarray:
    """Elementwise min(a, b)."""
    return np.minimum(_f(a), _f(b))


def np_step(x: Any) -> np.ndarray:
    """1 where x > 0, else 0 (NaN gives 0)."""
    return np.where(_f(x) > 0.0, 1.0, 0.0)


class _Extremum(sympy.Function):
    """max or min of two arguments, evaluated by numpy (``sympy.Max``/``Min`` would not
    lambdify onto arrays); subclasses set ``_imp_``, ``_larger`` and ``_tex``."""

    nargs = 2
    _larger = True
    _tex = r"\max"

    @classmethod
    def eval(cls, a: sympy.Expr, b: sympy.Expr) -> sympy.Expr | None:
        x, y = _num(a), _num(b)
        if x is not None and y is not None:
            return a if (x >= y) == cls._larger else b
        return None

    def _latex(self, printer: Any, exp: str | None = None) -> str:
        a, b = self.args
        return _power(r"%s\left(%s, %s\right)" % (self._tex, printer._print(a), printer._print(b)), exp)


class pmax(_Extremum):  # noqa: N801
    """max(a, b)."""

    _imp_ = staticmethod(np_pmax)


class pmin(_Extremum):  # noqa: N801
    """min(a, b)."""

    _imp_ = staticmethod(np_pmin)
    _larger = False
    _tex = r"\min"


class step(sympy.Function):  # noqa: N801
    """Indicator of x > 0 (1 or 0)."""

    nargs = 1
    _imp_ = staticmethod(np_step)

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        v = _num(x)
        if v is not None:
            return sympy.Integer(1 if v > 0 else 0)
        return None

    def _latex(self, printer: Any, exp: str | None = None) -> str:
        return _power(r"\mathbb{1}\left[%s > 0\right]" % printer._print(self.args[0]), exp)


def _sym_sqrt(x: sympy.Expr) -> sympy.Expr:
    return sympy.sqrt(sympy.Abs(x))


@dataclass(frozen=True)
class Operator:
    """One primitive: ``numpy(*args)`` and ``sympy(*args)`` compute the same function."""

    name: str
    arity: int
    numpy: Callable[..., np.ndarray]
    sympy: Callable[..., sympy.Expr]
    cost: int
    doc: str

    def latex(self) -> str:
        """LaTeX of the operator applied to placeholder arguments (derived from sympy)."""
        args = sympy.symbols("a b")[: self.arity]
        return sympy.latex(self.sympy(*args))


def _ops() -> dict[str, Operator]:
    table = [
        Operator("add", 2, _np_add, lambda a, b: a + b, 1, "a + b"),
        Operator("sub", 2, _np_sub, lambda a, b: a - b, 1, "a - b"),
        Operator("mul", 2, _np_mul, lambda a, b: a * b, 1, "a * b"),
        Operator("div", 2, np_pdiv, pdiv, 2, "a / b, 1 where |b| <= 1e-9"),
        Operator("neg", 1, _np_neg, lambda a: -a, 1, "-a"),
        Operator("square", 1, _np_square, lambda a: a**2, 2, "a ** 2"),
        Operator("exp", 1, np_pexp, pexp, 3, "exp(min(a, 50))"),
        Operator("log", 1, np_plog, plog, 3, "log|a|, 0 where |a| <= 1e-9"),
        Operator("sqrt", 1, np_psqrt, _sym_sqrt, 3, "sqrt|a|"),
        Operator("tanh", 1, _np_tanh, sympy.tanh, 2, "tanh(a)"),
        Operator("abs", 1, _np_abs, sympy.Abs, 2, "|a|"),
        Operator("sin", 1, _np_sin, sympy.sin, 3, "sin(a)"),
        Operator("cos", 1, _np_cos, sympy.cos, 3, "cos(a)"),
        Operator("max", 2, np_pmax, pmax, 2, "max(a, b)"),
        Operator("min", 2, np_pmin, pmin, 2, "min(a, b)"),
        Operator("step", 1, np_step, step, 2, "1 where a > 0, else 0"),
    ]
    return {op.name: op for op in table}


#: every operator, by name
OPERATORS: Mapping[str, Operator] = _ops()
#: the default primitive set for discovery
DEFAULT_OPERATORS: tuple[str, ...] = ("add", "sub", "mul", "div", "neg", "square", "exp", "log",
                                      "sqrt", "tanh", "abs")
#: cost of a feature or a constant leaf
LEAF_COST = 1
#: the sympy functions standing for protected operators (for sympify)
PROTECTED = {"pdiv": pdiv, "plog": plog, "pexp": pexp, "pmax": pmax, "pmin": pmin, "step": step}


def operators(names: Iterable[str] | None = None) -> tuple[Operator, ...]:
    """Operators by name (default set when ``names`` is None)."""
    chosen = DEFAULT_OPERATORS if names is None else tuple(names)
    unknown = [n for n in chosen if n not in OPERATORS]
    if unknown:
        raise DetbalError(
            f"unknown operator(s) {', '.join(unknown)}: choose from {', '.join(OPERATORS)}"
        )
    return tuple(OPERATORS[n] for n in chosen)


# -- feature names ---------------------------------------------------------
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = set(OPERATORS) | set(PROTECTED) | {
    "X", "c", "E", "I", "N", "O", "Q", "S", "pi", "oo", "zoo", "nan", "beta", "gamma", "lambda",
    "Abs", "exp", "log", "sqrt", "sin", "cos", "tanh",
}


def symbol_names(names: Sequence[str]) -> tuple[str, ...]:
    """Identifier for each feature: its name if usable in formulas, else ``x{i}``."""
    out: list[str] = []
    for i, name in enumerate(names):
        ok = bool(_IDENT.match(name)) and not keyword.iskeyword(name) and name not in _RESERVED
        candidate = name if ok else f"x{i}"
        if candidate in out:
            candidate = f"x{i}"
        out.append(candidate)
    return tuple(out)


# -- trees (DEAP PrimitiveTree or any prefix list of nodes) --------------------
def _is_primitive(node: Any) -> bool:
    return hasattr(node, "arity") and node.arity > 0


def _fold(tree: Sequence[Any], leaf: Callable[[Any], Any], prim: Callable[[str, list[Any]], Any]) -> Any:
    """Evaluate a prefix tree bottom-up without recursion."""
    stack: list[tuple[Any, list[Any]]] = []
    result: Any = None
    for node in tree:
        stack.append((node, []))
        while stack:
            top, args = stack[-1]
            need = top.arity if _is_primitive(top) else 0
            if len(args) < need:
                break
            stack.pop()
            result = prim(top.name, args) if _is_primitive(top) else leaf(top)
            if not stack:
                break
            stack[-1][1].append(result)
    return result


def is_constant(node: Any) -> bool:
    """An ephemeral constant (a terminal whose value is a number)."""
    return not _is_primitive(node) and isinstance(getattr(node, "value", None), (int, float))


def tree_constants(tree: Sequence[Any]) -> np.ndarray:
    """Numeric constants of a tree in prefix order."""
    return np.array([float(n.value) for n in tree if is_constant(n)], dtype=np.float64)


def complexity(tree: Sequence[Any]) -> int:
    """Sum of operator costs plus LEAF_COST per feature or constant."""
    return sum(OPERATORS[n.name].cost if _is_primitive(n) else LEAF_COST for n in tree)


def tree_code(tree: Sequence[Any], arg_index: Mapping[str, int]) -> str:
    """Python expression over columns ``X[i]`` and constants ``c[k]`` (constants in prefix order)."""
    counter = iter(range(len(tree)))  # leaves are visited in prefix order

    def leaf(node: Any) -> str:
        if is_constant(node):
            return f"c[{next(counter)}]"
        name = str(node.value)
        if name not in arg_index:
            raise DetbalError(f"formula uses {name!r}, which is not a feature")
        return f"X[{arg_index[name]}]"

    return _fold(tree, leaf, lambda name, args: f"{name}({', '.join(args)})")


_NAMESPACE: dict[str, Any] = {op.name: op.numpy for op in OPERATORS.values()}


def compile_code(code: str) -> Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray]:
    """Compile a :func:`tree_code` expression into ``f(X_columns, constants)``."""
    return eval(f"lambda X, c: {code}", dict(_NAMESPACE))  # noqa: S307 - our own code


def compile_tree(tree: Sequence[Any], names: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
    """Numpy callable ``V(X)`` of a tree, X of shape (n_states, n_features)."""
    index = {n: i for i, n in enumerate(names)}
    fn = compile_code(tree_code(tree, index))
    consts = tree_constants(tree)

    def call(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        out = fn(tuple(X.T), consts)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (X.shape[0],)).copy()

    return call


def tree_to_sympy(tree: Sequence[Any], constants: Sequence[float] | None = None) -> sympy.Expr:
    """The sympy expression of a tree (features as symbols, constants as Floats)."""
    consts = iter(tree_constants(tree) if constants is None else np.asarray(constants, float))

    def leaf(node: Any) -> sympy.Expr:
        if is_constant(node):
            return sympy.Float(float(next(consts)), 17)
        return sympy.Symbol(str(node.value))

    return _fold(tree, leaf, lambda name, args: OPERATORS[name].sympy(*args))


def tree_string(tree: Sequence[Any], constants: Sequence[float] | None = None) -> str:
    """Prefix notation ``add(mul(0.8, f1), f2)`` with the given constants."""
    consts = iter(tree_constants(tree) if constants is None else np.asarray(constants, float))

    def leaf(node: Any) -> str:
        return f"{float(next(consts)):.6g}" if is_constant(node) else str(node.value)

    return _fold(tree, leaf, lambda name, args: f"{name}({', '.join(args)})")


# -- sympy side ----------------------------------------------------------------
def sympy_locals(names: Sequence[str]) -> dict[str, Any]:
    """Namespace for ``sympy.sympify`` of formulas over ``names``."""
    ns: dict[str, Any] = {n: sympy.Symbol(n) for n in names}
    ns.update(PROTECTED)
    return ns


def parse_formula(text: str, names: Sequence[str]) -> sympy.Expr:
    """Parse a user formula over feature names (sympy syntax; ``div``/``log``/... allowed)."""
    ns = sympy_locals(names)
    for op in OPERATORS.values():
        ns.setdefault(op.name, op.sympy)
    ns.update({"log": plog, "exp": pexp, "div": pdiv})
    try:
        expr = sympy.sympify(text, locals=ns)
    except sympy.SympifyError:
        raise DetbalError(
            f"cannot parse formula {text!r}: not a valid expression (sympy syntax over feature"
            " names, e.g. '0.8*word_abs_dev - log(word_length)')"
        ) from None
    except (SyntaxError, TypeError, ValueError, AttributeError) as exc:
        raise DetbalError(f"cannot parse formula {text!r}: {str(exc).splitlines()[0]}") from None
    if not isinstance(expr, sympy.Expr):
        raise DetbalError(f"formula {text!r} is not an expression")
    unknown = sorted(str(s) for s in expr.free_symbols if str(s) not in names)
    if unknown:
        shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise DetbalError(f"formula uses unknown name(s) {', '.join(unknown)}; features: {shown}")
    return from_sympy(expr)


def from_sympy(expr: sympy.Expr) -> sympy.Expr:
    """Rewrite a plain sympy expression onto the registry's protected operators.

    ``exp -> pexp``, ``log -> plog`` (log|x|), ``1/x -> pdiv(1, x)``, ``sqrt(x) -> sqrt|x|``;
    anything else is kept as it is (its numpy callable still works through lambdify).
    """

    def rewrite(e: sympy.Expr) -> sympy.Expr:
        if e.is_Atom:
            return e
        args = [rewrite(a) for a in e.args]
        if e.func is sympy.exp:
            return pexp(args[0])
        if e.func is sympy.log:
            return plog(args[0])
        if e.func in (sympy.Max, sympy.Min) and len(args) >= 2:
            out, fn = args[0], pmax if e.func is sympy.Max else pmin
            for a in args[1:]:
                out = fn(out, a)
            return out
        if e.is_Pow:
            base, ex = args
            if ex == sympy.Rational(1, 2) or ex == sympy.Float(0.5):
                return sympy.sqrt(sympy.Abs(base))
            if ex.is_Number and ex.is_negative:
                positive = base ** (-ex) if ex != -1 else base
                return pdiv(sympy.Integer(1), positive)
            return base**ex
        return e.func(*args)

    return rewrite(sympy.sympify(expr))


def sympy_complexity(expr: sympy.Expr) -> int:
    """Complexity of a sympy expression counted with the registry's costs (approximate)."""
    costs = {pdiv: OPERATORS["div"].cost, plog: OPERATORS["log"].cost, pexp: OPERATORS["exp"].cost,
             sympy.tanh: OPERATORS["tanh"].cost, sympy.Abs: OPERATORS["abs"].cost,
             sympy.sin: OPERATORS["sin"].cost, sympy.cos: OPERATORS["cos"].cost,
             pmax: OPERATORS["max"].cost, pmin: OPERATORS["min"].cost, step: OPERATORS["step"].cost}
    total = 0
    for node in sympy.preorder_traversal(expr):
        if node.is_Atom:
            total += LEAF_COST
        elif node.is_Add or node.is_Mul:
            total += OPERATORS["add"].cost * (len(node.args) - 1)
        elif node.is_Pow:
            total += OPERATORS["sqrt" if node.exp == sympy.Rational(1, 2) else "square"].cost
        else:
            total += costs.get(node.func, 2)
    return total


def latex(expr: sympy.Expr) -> str:
    """LaTeX of an exported expression."""
    return sympy.latex(expr)


def to_numpy(expr: sympy.Expr, names: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
    """Numpy callable ``V(X)`` of a sympy expression over feature ``names``."""
    symbols = [sympy.Symbol(n) for n in names]
    fn = sympy.lambdify(symbols, expr, modules="numpy")

    def call(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        with np.errstate(all="ignore"):
            out = fn(*X.T)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (X.shape[0],)).copy()

    return call


def add_to_pset(pset: Any, names: Iterable[str] | None = None) -> None:
    """Add the operators to a DEAP ``PrimitiveSet`` (their numpy implementations)."""
    for op in operators(names):
        pset.addPrimitive(op.numpy, op.arity, name=op.name)


__all__ = [
    "DEFAULT_OPERATORS", "EPS", "EXP_CLIP", "LEAF_COST", "OPERATORS", "Operator", "PROTECTED",
    "add_to_pset", "compile_code", "compile_tree", "complexity", "from_sympy", "is_constant",
    "latex", "operators", "parse_formula", "pdiv", "pexp", "plog", "pmax", "pmin", "step", "symbol_names", "sympy_locals",
    "to_numpy", "tree_code", "tree_constants", "tree_string", "tree_to_sympy", "sympy_complexity",
]
