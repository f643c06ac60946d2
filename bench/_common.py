"""Timing helpers shared by the bench/ scripts (medians of repeats; the machines are noisy)."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of ``repeats`` calls (after ``warmup`` untimed ones)."""

    times: tuple[float, ...]
    result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    def fmt(self, unit: str = "ms") -> str:
        scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
        return f"{self.median * scale:.3g} {unit} (min {self.best * scale:.3g}, n={len(self.times)})"


def timeit(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> Timing:
    """Median-friendly timing: ``warmup`` untimed calls, then ``repeats`` timed ones."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return Timing(tuple(times), result)


def copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second moved by ``np.copyto`` on a ``megabytes`` array, read + write counted."""
    import numpy as np

    n = megabytes * 2**20 // 8
    a = np.ones(n)
    b = np.zeros(n)
    t = timeit(lambda: np.copyto(b, a), repeats=repeats, warmup=1)
    return 2.0 * a.nbytes / t.median


def machine_line() -> str:
    """One line: CPU, cores visible, thread settings."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = " load(1m)=%.2f" % os.getloadavg()[0]
    return (f"{cpu}; {os.cpu_count()} cores; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
            f" NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS')};{load}")


def _child(queue: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        queue.put(("ok", fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def run_with_timeout(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> tuple[str, Any]:
    """Run ``fn(*args)`` in a forked process: ``("ok", result)``, ``("error", msg)`` or ``("timeout", None)``."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, args), daemon=True)
    proc.start()
    deadline = time.monotonic() + timeout
    outcome: tuple[str, Any] = ("timeout", None)
    while time.monotonic() < deadline:
        try:
            outcome = queue.get(timeout=0.5)
            break
        except Exception:  # queue.Empty
            if not proc.is_alive() and queue.empty():
                outcome = ("error", f"worker exited with code {proc.exitcode}")
                break
    if proc.is_alive():
        proc.terminate()
    proc.join(5)
    return outcome
