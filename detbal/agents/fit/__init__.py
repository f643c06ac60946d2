"""The symbolic-fitting agent (METHOD.md section 1): an LLM-driven island search over ansatz strings.

Entry points for the command line (exact signatures)::

    from detbal.agents.fit import add_fit_arguments, config_from_args, run_fit, FitConfig

    add_fit_arguments(parser: argparse.ArgumentParser) -> None
        # --dataset --data-dir --download --islands --cycles --rounds --per-round
        # --population --repopulate-every --repopulate-fraction --starts --fit-mode
        # --seed-ansatz --translate-max-tokens; options the parser already has are skipped.
    config_from_args(args: argparse.Namespace, base: FitConfig | None = None) -> FitConfig
        # also reads the shared names seed, temperature, top_p, max_tokens when present
    FitConfig.as_dict() -> dict            # store it as the run config's "fit" entry
    FitConfig.from_mapping(d) -> FitConfig # rebuild it on resume

    async def run_fit(
        store: RunStore, run_id: int, backends: Sequence[Backend],
        config: FitConfig | Mapping[str, Any], *,
        attempts: int | None = None,      # total attempts wanted for the run (stored ones count);
                                          # None = cycles * islands * rounds * per_round
        concurrency: int = 1,             # model calls in flight at once
        progress: Callable[..., Any] | None = None,   # progress(1, best=..., esc=...) per stored attempt
        call: Callable[..., Awaitable[Completion]] | None = None,
            # await call(backend, messages, params, *, key=None) -> Completion; default:
            # detbal.agents.runner.call_model (retries/time-out, no budget). Pass
            # functools.partial(call_model, policy=..., budget=...) for budgets.
        stop: asyncio.Event | None = None,  # set it to stop after the rounds in flight
        handle_signals: bool = False,       # SIGINT/SIGTERM: stop after the rounds in flight;
                                            # a second one abandons them (nothing half-done stored)
        dataset: Dataset | None = None,     # default: load_dataset(config.dataset, config.data_dir, ...)
    ) -> FitRunResult  # committed, stored, target, stopped (None = done), best_ansatz, best_score, elapsed_s

A call that raises ``runner.BudgetExhausted`` or ``BackendStop``/``BackendExhausted``
stops the run cleanly (that round stores nothing); any other :class:`BackendError`
(e.g. ``runner.CallFailed``) is stored as the escape ``api_error``.  Calling
``run_fit`` again on the same run continues it (resume after ``kill -9``).

Modules: :mod:`.data` (data sets), :mod:`.ansatz` (validation, canonical form,
compilation), :mod:`.fitting` (multi-start L-BFGS-B, score), :mod:`.prompts`
(templates and answer parsing), :mod:`.loop` (the search).  This package's
``__init__`` imports nothing heavy; numpy/scipy/sympy load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detbal.agents.fit.config import FitConfig, add_fit_arguments, config_from_args

if TYPE_CHECKING:
    from detbal.agents.fit.loop import FitRunResult

__all__ = ["FitConfig", "FitRunResult", "add_fit_arguments", "config_from_args", "grammar_sha256",
           "run_fit"]


def grammar_sha256(config: FitConfig) -> str | None:
    """SHA-256 of the grammar a run with ``config`` decodes under (None: unconstrained)."""
    from detbal.agents.fit.grammar import config_grammar

    grammar = config_grammar(config)
    return grammar.sha256 if grammar is not None else None


async def run_fit(*args: Any, **kwargs: Any) -> FitRunResult:
    """Run or resume a fit run; see the module docstring for the signature."""
    from detbal.agents.fit.loop import run_fit as _run_fit

    return await _run_fit(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "FitRunResult":
        from detbal.agents.fit.loop import FitRunResult

        return FitRunResult
    raise AttributeError(name)
