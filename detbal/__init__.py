"""detbal: detailed balance and least-action potentials for LLM-driven agents.

Data flows one way: agents -> store -> analysis -> evo -> report.  Importing the
package is cheap: the names below are imported on first use, and numba, matplotlib
and the language-model clients only where they are used.

>>> import detbal
>>> counts = detbal.load_counts("study.sqlite")        # a store or any importable file
>>> kernel = detbal.estimate_kernel(counts, n0="uniform", total_attempts=20000)
>>> res = detbal.analyze(kernel, seed=0)               # a frozen detbal.AnalysisResult
>>> res.potential.value("PERSONAL"), res.global_test.p_value, res.verdict
>>> res.save("out/")                                   # summary.json, potential.csv, report.md, figures
>>> detbal.plot.pairs(res, ax=ax)                      # draws on your Axes, returns it
>>> disc = detbal.discover(kernel, engine="gp", seed=0)  # gp | family49 | operon | pysr
>>> disc.best.sympy, disc.front, disc.compare(res.potential), disc.save("disc/")
>>> with detbal.RunStore("study.sqlite") as store:       # an agent run, resumable
...     detbal.run_agent(store, detbal.WordTask(target=100), backend, attempts=20000)
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

#: public name -> module that defines it (imported on first access)
_EXPORTS: dict[str, str] = {
    "load_counts": "detbal.analysis.counts",
    "TransitionCounts": "detbal.analysis.counts",
    "Kernel": "detbal.analysis.counts",
    "estimate_kernel": "detbal.analysis.counts",
    "analyze": "detbal.analysis.result",
    "AnalysisResult": "detbal.analysis.result",
    "PotentialFit": "detbal.analysis.potential",
    "RunStore": "detbal.store",
    "DetbalError": "detbal.errors",
    "discover": "detbal.evo.discover",
    "DiscoveryResult": "detbal.evo.discover",
    "run_agent": "detbal.agents.session",
    "AgentRunResult": "detbal.agents.session",
    "WordTask": "detbal.agents.words",
    "FitTask": "detbal.agents.fit.loop",
}
#: public submodules (imported on first access)
_MODULES: tuple[str, ...] = ("plot", "systems")

__all__ = [
    "AgentRunResult", "AnalysisResult", "DetbalError", "DiscoveryResult", "FitTask", "Kernel",
    "PotentialFit", "RunStore", "TransitionCounts", "WordTask", "__version__", "analyze", "discover",
    "estimate_kernel", "load_counts", "plot", "run_agent", "systems",
]

if TYPE_CHECKING:
    from detbal import plot as plot
    from detbal import systems as systems
    from detbal.agents.fit.loop import FitTask as FitTask
    from detbal.agents.session import AgentRunResult as AgentRunResult
    from detbal.agents.session import run_agent as run_agent
    from detbal.agents.words import WordTask as WordTask
    from detbal.analysis.counts import Kernel as Kernel
    from detbal.analysis.counts import TransitionCounts as TransitionCounts
    from detbal.analysis.counts import estimate_kernel as estimate_kernel
    from detbal.analysis.counts import load_counts as load_counts
    from detbal.analysis.potential import PotentialFit as PotentialFit
    from detbal.analysis.result import AnalysisResult as AnalysisResult
    from detbal.analysis.result import analyze as analyze
    from detbal.errors import DetbalError as DetbalError
    from detbal.evo.discover import DiscoveryResult as DiscoveryResult
    from detbal.evo.discover import discover as discover
    from detbal.store import RunStore as RunStore


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"detbal.{name}")
    else:
        raise AttributeError(f"module 'detbal' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
