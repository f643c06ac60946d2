"""``detbal analyze``'s pipeline: load, estimate the kernel, analyse, save.

The library call is :func:`detbal.analysis.result.analyze` (``detbal.analyze``): a
kernel in, an :class:`~detbal.analysis.result.AnalysisResult` out, nothing written.
:func:`run_analysis` here is the path-based wrapper used by the command and the demo
(load, estimate the kernel, analyse, save; it returns the result, so callers print
from its attributes); it starts the figures in a child process as soon as their
inputs exist.  :func:`analyze` is the same, returning the summary written.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detbal.analysis.counts import Kernel, N0Mode, estimate_kernel, load_counts
from detbal.analysis.result import ESTIMATORS  # noqa: F401 - re-exported
from detbal.errors import DetbalError
from detbal.io import json_safe  # noqa: F401 - re-exported
from detbal.progress import ProgressUI

if TYPE_CHECKING:
    from detbal.analysis.result import AnalysisResult


def load_kernel(
    input_path: str | Path,
    *,
    n0: N0Mode = "empirical",
    min_source_count: float | None = None,
    attempts: float | None = None,
    states: str = "text",
) -> Kernel:
    """Read a store or importable file and estimate the kernel (``states``: see
    :func:`~detbal.analysis.counts.load_counts`)."""
    counts = load_counts(input_path, states=states)
    if counts.count.size == 0:
        raise DetbalError(f"{input_path}: no transitions between distinct states")
    return estimate_kernel(counts, n0, min_source_count=min_source_count, total_attempts=attempts)


def run_analysis(input_path: str | Path, out_dir: str | Path, **options: Any) -> AnalysisResult:
    """Analyse a store or importable file and write summary.json, potential.csv and (with
    ``figures``) report.md and the figures into ``out_dir``; returns the
    :class:`~detbal.analysis.result.AnalysisResult` (its ``timings`` include ``load``).

    Options (keywords; defaults as in :func:`_run`, the one signature): ``states`` goes to :func:`~detbal.analysis.counts.load_counts` (``"canonical"``: one
    state per canonical form); ``n0``, ``min_source_count`` and ``attempts`` (``total_attempts``) go to
    :func:`~detbal.analysis.counts.estimate_kernel`; ``penalty`` (the action's K), ``ui`` (as
    its ``progress``) and ``options``
    (``seed``, ``bootstrap``, ``test_simulations``, ``estimator``, ``n_jobs``, ...) go to
    :func:`detbal.analysis.result.analyze` with its defaults.  ``figure_process``: draw
    the figures in a child process while the rest is computed (for ``__main__``-guarded
    programs such as the ``detbal`` command; see :class:`report.FigureMaker`).
    """
    return _run(input_path, out_dir, **options)[0]


def analyze(
    input_path: str | Path,
    out_dir: str | Path,
    **options: Any,
) -> dict[str, Any]:
    """:func:`run_analysis`, returning the summary written (summary.json's content, with the
    figure list when figures were drawn) instead of the result."""
    return _run(input_path, out_dir, **options)[1]


def _run(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    n0: N0Mode = "empirical",
    min_source_count: float | None = None,
    attempts: float | None = None,
    states: str = "text",
    penalty: str = "exp",
    figures: bool = True,
    ui: ProgressUI | None = None,
    figure_process: bool = False,
    **options: Any,
) -> tuple[AnalysisResult, dict[str, Any]]:
    from detbal.analysis import report
    from detbal.analysis.result import analyze as analyze_kernel

    out = Path(out_dir)
    start = time.perf_counter()
    k = load_kernel(input_path, n0=n0, min_source_count=min_source_count, attempts=attempts, states=states)
    load_time = round(time.perf_counter() - start, 4)
    painter = None
    if figures:
        out.mkdir(parents=True, exist_ok=True)
        painter = report.FigureMaker(background=figure_process)
    try:
        res = analyze_kernel(
            k, penalty=penalty, progress=ui, input=str(input_path),
            on_ready=None if painter is None else (lambda parts: report.draw_ready(painter, parts, out)),
            **options,
        )
        res = dataclasses.replace(res, timings={"load": load_time, **res.timings}, state_identity=states)
        return res, report.save_result(res, out, figures=figures, painter=painter)
    finally:
        if painter is not None:
            painter.close()
