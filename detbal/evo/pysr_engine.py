"""PySR as a second discovery engine (optional; needs Julia).

PySR regresses the numeric potential V_N (least action, identifiable states) on
the state features, with weights 1/stderr^2 where bootstrap errors exist:

    minimise  sum_i w_i (V_N(i) - expr(X_i))^2,

and every equation it reports is converted through the operator registry
(:func:`detbal.evo.registry.from_sympy`: exp/log/division/sqrt become their
protected forms) and scored by the action at its best scale, so PySR rows join
the same Pareto table as GP rows.

PySR runs on Julia through ``juliacall``, which tries to *download* Julia at the
first ``import pysr`` when none is found; offline that hangs or fails.  This
module therefore never imports pysr at import time.  :func:`probe` first looks
for a Julia executable (``$JULIA``, ``$PYTHON_JULIAPKG_EXE`` or ``julia`` on PATH,
version >= 1.10), then imports pysr in a subprocess with a time-out and with
``PYTHON_JULIAPKG_OFFLINE=yes`` and ``PYTHON_JULIAPKG_EXE`` set (the JuliaPkg
switches that stop juliacall from installing anything).  When any step fails the
engine is skipped with one line naming what to install.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detbal.errors import DetbalError

log = logging.getLogger(__name__)

#: what to install, shown whenever the engine is unavailable
INSTALL_HINT = "install Julia >= 1.10 and `pip install pysr`"
MIN_JULIA = (1, 10)


class PySRUnavailable(DetbalError):
    """PySR or Julia is missing (the engine is skipped)."""


@dataclass(frozen=True)
class PySRStatus:
    """Outcome of :func:`probe`."""

    available: bool
    reason: str
    julia: str | None = None
    julia_version: str | None = None

    @property
    def message(self) -> str:
        """One line for users."""
        if self.available:
            return f"PySR available (Julia {self.julia_version} at {self.julia})"
        return f"PySR engine unavailable: {self.reason}; {INSTALL_HINT}"


def offline_env(julia: str | None) -> dict[str, str]:
    """Environment that keeps juliacall from downloading Julia or packages."""
    env = dict(os.environ)
    env["PYTHON_JULIAPKG_OFFLINE"] = "yes"
    if julia:
        env["PYTHON_JULIAPKG_EXE"] = julia
    return env


def find_julia() -> str | None:
    """``$JULIA``, ``$PYTHON_JULIAPKG_EXE`` or ``julia`` on PATH (an executable), else None."""
    for var in ("JULIA", "PYTHON_JULIAPKG_EXE"):
        value = os.environ.get(var)
        if value:
            found = shutil.which(value) or (value if os.access(value, os.X_OK) else None)
            if found:
                return found
    return shutil.which("julia")


def _julia_version(julia: str, timeout: float) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([julia, "--version"], capture_output=True, text=True, timeout=timeout,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out.stdout + out.stderr)
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


def probe(timeout: float = 60.0) -> PySRStatus:
    """Can PySR run here, without downloading anything?  (Never imports pysr in this process.)"""
    if importlib.util.find_spec("pysr") is None:
        return PySRStatus(False, "the Python package pysr is not installed")
    julia = find_julia()
    if julia is None:
        return PySRStatus(False, "no Julia executable found (looked at $JULIA and PATH)")
    version = _julia_version(julia, min(timeout, 30.0))
    if version is None:
        return PySRStatus(False, f"{julia} --version failed", julia)
    shown = ".".join(map(str, version))
    if version[:2] < MIN_JULIA:
        return PySRStatus(False, f"Julia {shown} at {julia} is older than 1.10", julia, shown)
    try:
        res = subprocess.run([sys.executable, "-c", "import pysr"], capture_output=True, text=True,
                             timeout=timeout, env=offline_env(julia), check=False)
    except subprocess.TimeoutExpired:
        return PySRStatus(False, f"`import pysr` did not finish within {timeout:g} s", julia, shown)
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {res.returncode}"
        return PySRStatus(False, f"`import pysr` failed offline ({last[:160]})", julia, shown)
    return PySRStatus(True, "ok", julia, shown)


def require(timeout: float = 60.0) -> PySRStatus:
    """:func:`probe`, raising :class:`PySRUnavailable` (one line) when PySR cannot run."""
    status = probe(timeout)
    if not status.available:
        raise PySRUnavailable(status.message)
    return status


@dataclass(frozen=True)
class PySRSettings:
    """A few PySR options (the rest are PySR's defaults)."""

    niterations: int = 40
    populations: int = 15
    maxsize: int = 20
    binary_operators: tuple[str, ...] = ("+", "-", "*", "/")
    unary_operators: tuple[str, ...] = ("exp", "log", "sqrt", "square", "tanh", "abs")
    timeout_s: float | None = None


def regression_target(fit: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, y, w)``: identifiable states, V_N there, weights 1/stderr^2 (1 without errors)."""
    rows = np.flatnonzero(fit.identifiable)
    y = np.asarray(fit.V, dtype=np.float64)[rows]
    se = np.asarray(fit.stderr, dtype=np.float64)[rows]
    good = np.isfinite(se) & (se > 0)
    if good.all() and rows.size:
        w = 1.0 / se**2
    elif good.any():
        floor = float(np.median(se[good]))
        w = 1.0 / np.where(good, se, floor) ** 2
    else:
        w = np.ones_like(y)
    return rows, y, w / w.mean() if w.size else w


def run_pysr(
    X: np.ndarray,
    names: Sequence[str],
    fit: Any,
    kernel: Any,
    *,
    penalty: str = "exp",
    beta: float = 1.0,
    seed: int = 0,
    settings: PySRSettings | None = None,
    status: PySRStatus | None = None,
) -> list[Any]:
    """Formulas found by PySR for V_N(features), scored by the action (see module doc)."""
    import sympy

    from detbal.evo.engines import scored_formula

    status = status or require()
    settings = settings or PySRSettings()
    os.environ.update({k: v for k, v in offline_env(status.julia).items()
                       if k.startswith("PYTHON_JULIAPKG")})
    from pysr import PySRRegressor  # noqa: PLC0415 - Julia starts here, only when asked

    rows, y, w = regression_target(fit)
    if rows.size < 3:
        raise DetbalError("fewer than 3 identifiable states: nothing for PySR to regress on")
    model = PySRRegressor(
        niterations=settings.niterations, populations=settings.populations, maxsize=settings.maxsize,
        binary_operators=list(settings.binary_operators), unary_operators=list(settings.unary_operators),
        random_state=seed, deterministic=True, parallelism="serial", progress=False, verbosity=0,
        timeout_in_seconds=settings.timeout_s,
    )
    model.fit(np.asarray(X, float)[rows], y, weights=w, variable_names=list(names))
    out = []
    for _, rec in model.equations_.iterrows():
        try:
            expr = sympy.sympify(rec["sympy_format"])
            out.append(scored_formula(expr, X, names, kernel, penalty=penalty, beta=beta,
                                      engine="pysr", loss=float(rec["loss"]),
                                      equation=str(rec["equation"]),
                                      meta={"pysr_complexity": int(rec["complexity"])}))
        except (sympy.SympifyError, TypeError, ValueError) as exc:
            log.warning("cannot convert PySR equation %r: %s", rec.get("equation"), exc)
    return out


__all__ = ["INSTALL_HINT", "PySRSettings", "PySRStatus", "PySRUnavailable", "find_julia", "offline_env",
           "probe", "regression_target", "require", "run_pysr"]
