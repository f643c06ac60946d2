"""LLM-driven agents of arXiv:2512.10047 that record every attempt in a run store.

One driver runs every task (:mod:`detbal.agents.session`)::

    from detbal.agents import WordTask, run_agent
    from detbal.agents.backends.local import LocalBackend

    with RunStore("study.sqlite") as store:
        res = run_agent(store, WordTask(target=100, seed=3), LocalBackend(), attempts=2000)

Names here are imported on first use; heavy clients (openai, llama_cpp) only by the
backends that use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "run_agent": "detbal.agents.session",
    "arun_agent": "detbal.agents.session",
    "AgentRunResult": "detbal.agents.session",
    "AgentTask": "detbal.agents.session",
    "TaskRun": "detbal.agents.session",
    "OpenedRun": "detbal.agents.session",
    "WordTask": "detbal.agents.words",
    "WordsConfig": "detbal.agents.words",
    "FitTask": "detbal.agents.fit.loop",
    "FitConfig": "detbal.agents.fit.config",
    "Budget": "detbal.agents.runner",
    "CallPolicy": "detbal.agents.runner",
    "Selection": "detbal.agents.select",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from detbal.agents.fit.config import FitConfig as FitConfig
    from detbal.agents.fit.loop import FitTask as FitTask
    from detbal.agents.runner import Budget as Budget
    from detbal.agents.runner import CallPolicy as CallPolicy
    from detbal.agents.select import Selection as Selection
    from detbal.agents.session import AgentRunResult as AgentRunResult
    from detbal.agents.session import AgentTask as AgentTask
    from detbal.agents.session import OpenedRun as OpenedRun
    from detbal.agents.session import TaskRun as TaskRun
    from detbal.agents.session import arun_agent as arun_agent
    from detbal.agents.session import run_agent as run_agent
    from detbal.agents.words import WordsConfig as WordsConfig
    from detbal.agents.words import WordTask as WordTask


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'detbal.agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
