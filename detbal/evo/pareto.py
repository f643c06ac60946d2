"""Found formulas and the Pareto table (complexity, action).

A :class:`Formula` is an exact sympy expression over feature symbols, built
through :mod:`detbal.evo.registry`, so its sympy string, its LaTeX and its numpy
callable describe one function.  Every engine (GP, PySR, the 49-parameter family,
a user's formula) reports :class:`Formula` objects; :func:`pareto_front` keeps, for
increasing complexity, only the formulas that lower the action, and
:func:`write_table` writes rows with the columns :data:`COLUMNS` to CSV.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from detbal.errors import InputError

#: columns of the Pareto table (formulas.csv)
COLUMNS: tuple[str, ...] = (
    "complexity", "action", "loss", "pareto", "equation", "sympy", "latex", "engine",
)


@dataclass(frozen=True)
class Formula:
    """An explicit potential V = expr(features); ``names`` are its symbols in column order.

    ``action`` is S[V] on the kernel it was scored on (scale included in ``expr``);
    ``loss`` is the engine's own objective (the action for GP, the weighted MSE for PySR).
    """

    expr: Any  # sympy.Expr
    names: tuple[str, ...]
    complexity: int
    action: float
    loss: float
    engine: str
    equation: str = ""
    scale: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @cached_property
    def sympy(self) -> str:
        return str(self.expr)

    @cached_property
    def latex(self) -> str:
        from detbal.evo.registry import latex

        return latex(self.expr)

    @cached_property
    def function(self) -> Callable[[np.ndarray], np.ndarray]:
        """Numpy callable ``V(X)``, X of shape (n_states, len(names))."""
        from detbal.evo.registry import to_numpy

        return to_numpy(self.expr, self.names)

    def evaluate(self, X: np.ndarray) -> np.ndarray:
        return self.function(X)

    def row(self) -> dict[str, Any]:
        return {
            "complexity": int(self.complexity),
            "action": _fmt(self.action),
            "loss": _fmt(self.loss),
            "equation": self.equation or self.sympy,
            "sympy": self.sympy,
            "latex": self.latex,
            "engine": self.engine,
        }


def _fmt(x: float) -> str:
    return f"{x:.10g}" if math.isfinite(x) else ""


def pareto_front(formulas: Iterable[Formula]) -> tuple[Formula, ...]:
    """Formulas not dominated in (complexity, action), by increasing complexity."""
    ordered = sorted(
        (f for f in formulas if math.isfinite(f.action)),
        key=lambda f: (f.complexity, f.action),
    )
    front: list[Formula] = []
    best = math.inf
    for f in ordered:
        if not front or f.action < best - 1e-12 * max(1.0, abs(best)):
            front.append(f)
            best = f.action
    return tuple(front)


def write_table(formulas: Sequence[Formula], path: str | Path) -> Path:
    """Write the rows of ``formulas`` (columns :data:`COLUMNS`) to CSV.

    ``pareto`` is true for the formulas on the (complexity, action) front; the
    others (hall-of-fame members, per-engine bests) are dominated but kept.
    """
    from detbal.io import export_table

    return export_table(table_rows(formulas), list(COLUMNS), path)


def table_rows(formulas: Sequence[Formula]) -> list[dict[str, Any]]:
    """One dict per formula with the columns :data:`COLUMNS` (``pareto``: on the front)."""
    front = {id(f) for f in pareto_front(formulas)}
    return [f.row() | {"pareto": id(f) in front} for f in formulas]


def read_table(path: str | Path) -> list[dict[str, str]]:
    """Rows of a formulas CSV written by :func:`write_table`."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror})") from None
    if not rows or "sympy" not in rows[0]:
        raise InputError(path, "not a formulas table (needs a 'sympy' column)")
    return rows


def best_row(rows: Sequence[dict[str, str]]) -> dict[str, str]:
    """The row with the lowest action (ties: the simplest)."""
    def key(r: dict[str, str]) -> tuple[float, float]:
        try:
            a = float(r.get("action") or "inf")
        except ValueError:
            a = math.inf
        try:
            c = float(r.get("complexity") or "inf")
        except ValueError:
            c = math.inf
        return (a, c)

    return min(rows, key=key)


__all__ = ["COLUMNS", "Formula", "best_row", "pareto_front", "read_table", "table_rows", "write_table"]
