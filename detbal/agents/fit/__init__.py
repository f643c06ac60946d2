"""The symbolic-fitting agent (METHOD.md section 1): an LLM-driven island search over ansatz strings.

From Python, through the one agent driver (:func:`detbal.run_agent`)::

    import detbal
    task = detbal.FitTask(dataset="nikuradse_2", islands=4, cycles=5, mode="one-call", seed=1)
    with detbal.RunStore("fit.sqlite") as store:
        res = detbal.run_agent(store, task, [backend_a, backend_b])   # the planned search
    res.summary["best_ansatz"], res.summary["best_score"]

:class:`FitTask` takes the fields of :class:`FitConfig` as keywords; one unit of the
driver is a round (one model call's 1..n attempts, committed together).  On a run
already in the store (no run lookup), ``await run_fit(store, run_id, backends, config,
attempts=..., concurrency=..., progress=..., call=..., budget=..., stop=...,
handle_signals=False)`` drives the same task and returns the same
:class:`~detbal.agents.session.AgentRunResult`; ``call`` replaces the runner's
``call_model`` (``await call(backend, messages, params, *, key=None)``).

A call that raises ``runner.BudgetExhausted`` or ``BackendStop``/``BackendExhausted``
stops the run cleanly (that round stores nothing); any other :class:`BackendError`
(e.g. ``runner.CallFailed``) is stored as the escape ``api_error``.

Command line: :func:`add_fit_arguments` adds the options, :func:`config_from_args`
turns them into a :class:`FitConfig` (``FitConfig.as_dict()`` is the run config's
``"fit"`` entry, ``FitConfig.from_mapping`` rebuilds it).

Modules: :mod:`.data` (data sets), :mod:`.ansatz` (validation, canonical form,
compilation), :mod:`.fitting` (multi-start L-BFGS-B, score), :mod:`.prompts`
(templates and answer parsing), :mod:`.loop` (the search).  This package's
``__init__`` imports nothing heavy; numpy/scipy/sympy load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detbal.agents.fit.config import FitConfig, add_fit_arguments, config_from_args

if TYPE_CHECKING:
    from detbal.agents.fit.loop import FitTask, run_fit

__all__ = ["FitConfig", "FitTask", "add_fit_arguments", "config_from_args", "grammar_sha256", "run_fit"]


def grammar_sha256(config: FitConfig) -> str | None:
    """SHA-256 of the grammar a run with ``config`` decodes under (None: unconstrained)."""
    from detbal.agents.fit.grammar import config_grammar

    grammar = config_grammar(config)
    return grammar.sha256 if grammar is not None else None


def __getattr__(name: str) -> Any:
    if name in ("FitTask", "run_fit"):
        from detbal.agents.fit import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'detbal.agents.fit' has no attribute {name!r}")
