"""Transition data for explicit-potential objectives.

* :func:`load_run`: a run store (or an importable transitions file) -> the kernel
  (METHOD.md section 2) and the features of its states, rows aligned with
  ``kernel.states``.
* :func:`direction_stats` (re-exported from :mod:`detbal.analysis.summary`): of the
  edges with T(g<-f) > threshold, the fractions along which V goes down
  (V(f) > V(g)), up, or stays equal (METHOD.md section 5: 69.56 % down, 25.83 % up
  over 9,769 transitions for the published family).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np

from detbal.analysis.counts import Kernel, TransitionCounts, estimate_kernel, load_counts
from detbal.analysis.summary import direction_stats
from detbal.errors import DetbalError
from detbal.evo.features import FeatureMatrix, featurize
from detbal.evo.tokenize import TokenMode
from detbal.progress import Progress
from detbal.store import RunStore, is_run_store

log = logging.getLogger(__name__)



def source_cut_kernel(
    counts: TransitionCounts,
    n0: Literal["empirical", "uniform"] = "empirical",
    *,
    min_source_count: float | None = None,
    total_attempts: float | None = None,
) -> Kernel:
    """:func:`~detbal.analysis.counts.estimate_kernel`, but keeping every edge whose
    *source* passes the N0 cut, whatever its target.

    An explicit V(state) is defined on every state, so an edge into a state that
    was never (or once) used as a source still constrains it; the published
    random-descent objective kept these edges (it tested N(f) > 1 on the source
    only).  The normalisation (``n_sources``) and ``kept`` are unchanged.
    """
    k = estimate_kernel(counts, n0, min_source_count=min_source_count, total_attempts=total_attempts)
    keep = k.kept[counts.src]
    wider = dataclasses.replace(k, src=counts.src[keep], dst=counts.dst[keep], count=counts.count[keep])
    return dataclasses.replace(wider, T=wider.rates(wider.count))


def _stored_columns(path: Path, states: tuple[str, ...]) -> tuple[list[str], np.ndarray] | None:
    """Numeric per-state features recorded in a run store, as ``stored_<key>`` columns."""
    with RunStore(path, create=False) as store:
        stored = store.state_features()
    if not stored:
        return None
    keys: set[str] = set()
    for feats in stored.values():
        for k, v in feats.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                keys.add(k)
            elif isinstance(v, bool):
                keys.add(k)
    if not keys:
        return None
    names = sorted(keys)
    values = np.zeros((len(states), len(names)))
    for i, s in enumerate(states):
        feats = stored.get(s, {})
        for j, k in enumerate(names):
            v = feats.get(k)
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                values[i, j] = float(v)
    return [f"stored_{k}" for k in names], values


def load_run(
    path: str | Path,
    n0: Literal["empirical", "uniform"] = "empirical",
    *,
    min_source_count: float | None = None,
    total_attempts: float | None = None,
    kind: Literal["words", "ansatz", "auto"] = "auto",
    mode: TokenMode = "fixed",
    target_sum: int = 100,
    targets: Literal["kept", "all"] = "kept",
    stored_features: bool = True,
    progress: Progress | None = None,
) -> tuple[Kernel, FeatureMatrix]:
    """Kernel and features of the states of a run store or transitions file.

    ``targets="kept"`` (default) is :func:`estimate_kernel`: edges into states that
    fail the N0 cut are dropped too, as the least-action fit expects;
    ``targets="all"`` keeps every edge out of a source that passes the cut
    (:func:`source_cut_kernel`, the published explicit-potential objective).  The feature matrix has one row per
    ``kernel.states`` entry, in that order.
    With ``stored_features``, numeric features the store recorded per state
    (for instance a letter sum) are appended as ``stored_<key>`` columns (0 where
    a state has none).
    """
    path = Path(path)
    counts = load_counts(path)
    make = source_cut_kernel if targets == "all" else estimate_kernel
    if targets not in ("all", "kept"):
        raise DetbalError(f"unknown targets {targets!r}: use all or kept")
    kernel = make(counts, n0, min_source_count=min_source_count, total_attempts=total_attempts)
    if len(kernel.src) == 0:
        raise DetbalError(f"{path}: no transitions survive the N0 cut")
    F = featurize(kernel.states, kind, mode=mode, target_sum=target_sum, progress=progress)
    if stored_features and is_run_store(path):
        extra = _stored_columns(path, kernel.states)
        if extra is not None:
            names, values = extra
            names_new = [n for n in names if n not in F.names]
            keep = [names.index(n) for n in names_new]
            if names_new:
                F = F.with_columns(names_new, values[:, keep])
    log.info("loaded %d states, %d edges from %s", kernel.n_states, len(kernel.src), path)
    return kernel, F


__all__ = ["direction_stats", "load_run", "source_cut_kernel"]
