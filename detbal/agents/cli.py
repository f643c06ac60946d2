"""Subcommands of the agents stage: ``run words|fit``, ``runs``, ``demo``.

``run words|fit`` only parse: the task (:class:`~detbal.agents.words.WordTask`,
:class:`~detbal.agents.fit.loop.FitTask`), the backends, budget and retry policy go to
:func:`detbal.run_agent`, which opens or continues the run and drives it.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from detbal.errors import DetbalError

BACKENDS = ("local", "openai", "replay")


def register(sub: Any) -> None:
    run = sub.add_parser(
        "run", help="run an LLM-driven agent, storing every attempt",
        description="Run an agent against a language model.  Every attempt (a new state or a"
        " categorised escape) is committed to the run store as it finishes; the same command"
        " again continues the run up to --attempts.",
    )
    tasks = run.add_subparsers(dest="task", metavar="TASK")
    run.set_defaults(handler=lambda args, ui: _help(run))

    words = tasks.add_parser(
        "words", help="conditioned word generation (letter sums)",
        description="States are words whose letter values (A=1..Z=26) sum to --target.",
    )
    _add_common(words)
    g = words.add_argument_group("word task")
    g.add_argument("--target", type=int, default=100, help="letter sum of a valid word (default 100)")
    g.add_argument("--seed-word", default="BUZZY", help="first prompt word (default BUZZY)")
    g.add_argument("--relaxed", action="store_true",
                   help="any alphabetic word is a state (its letter sum is stored as a feature);"
                   " the prompt still asks for the target sum")
    g.add_argument("--prompt", metavar="FILE", help="prompt template (default: the packaged words.txt)")
    g.add_argument("--vote", metavar="M:n",
                   help="draw M answers per attempt; accept only an answer at least n agree on")
    g.add_argument("--word-list", metavar="FILE",
                   help="dictionary of the constrained decoding: its lower-case words of value"
                   " --target (default /usr/share/dict/american-english, Debian's wamerican)")
    words.set_defaults(handler=_run_words, max_tokens_default=16)

    fit = tasks.add_parser(
        "fit", help="symbolic-fitting agent on Nikuradse data (island search)",
        description="States are ansatz strings; each round asks the model for new ansatzes.",
    )
    _add_common(fit, attempts_required=False)
    from detbal.agents.fit.config import add_fit_arguments

    add_fit_arguments(fit.add_argument_group("fit task"))
    fit.set_defaults(handler=_run_fit, max_tokens_default=400)

    runs = sub.add_parser("runs", help="list the runs in a store with their totals")
    runs.add_argument("store", help="run store (.sqlite)")
    runs.add_argument("--json", action="store_true", help="machine-readable output")
    runs.set_defaults(handler=_runs)

    demo = sub.add_parser(
        "demo", help="the whole mission on the embedded model: two studies, analysed, one README",
        description="Runs a strict word study and a symbolic-fitting study (Nikuradse) on the"
        " embedded SmolLM2-135M model through `detbal run words|fit --backend local`, analyses"
        " both, fits the 49-parameter family and DEAP GP to the fitting study, and writes"
        " OUT/README.md.  Running it again continues the same stores.",
    )
    from detbal.demo import DemoConfig

    d = DemoConfig()
    demo.add_argument("--out", default=d.out, help=f"output directory (default {d.out})")
    demo.add_argument("--words-attempts", type=int, default=d.words_attempts,
                      help=f"attempts of the word study (default {d.words_attempts})")
    demo.add_argument("--fit-attempts", type=int, default=d.fit_attempts,
                      help=f"attempts of the fitting study (default {d.fit_attempts})")
    demo.add_argument("--threads", type=int, default=d.threads,
                      help=f"threads per model instance (default {d.threads})")
    demo.add_argument("--instances", type=int, default=d.instances,
                      help=f"model instances (default {d.instances})")
    demo.add_argument("--concurrency", type=int, default=d.concurrency,
                      help=f"attempts in flight (default {d.concurrency})")
    demo.add_argument("--seed", type=int, default=d.seed, help=f"seed of both studies (default {d.seed})")
    demo.add_argument("--words-temperature", type=float, default=d.words_temperature,
                      help=f"sampling temperature of the word study (default {d.words_temperature})")
    demo.add_argument("--fit-temperature", type=float, default=d.fit_temperature,
                      help=f"sampling temperature of the fitting study (default {d.fit_temperature})")
    demo.add_argument("--gp-population", type=int, default=d.gp_population,
                      help=f"GP population (default {d.gp_population})")
    demo.add_argument("--gp-generations", type=int, default=d.gp_generations,
                      help=f"GP generations (default {d.gp_generations})")
    demo.add_argument("--family49-evals", type=int, default=d.family49_evals,
                      help=f"action evaluations of the 49-parameter fit (default {d.family49_evals})")
    demo.add_argument("--bootstrap", type=int, default=d.bootstrap,
                      help=f"bootstrap replicates of V in the analyses (default {d.bootstrap})")
    demo.add_argument("--test-simulations", type=int, default=d.test_simulations,
                      help=f"simulations of the cycle tests (default {d.test_simulations})")
    demo.set_defaults(handler=_demo)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_common(p: argparse.ArgumentParser, attempts_required: bool = True) -> None:
    p.add_argument("--store", required=True, help="run store (SQLite, created if missing)")
    p.add_argument("--attempts", type=int, required=attempts_required,
                   help="run until this many attempts are stored"
                   + ("" if attempts_required else " (default: the planned search)"))
    g = p.add_argument_group("backend")
    g.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local (embedded SmolLM2, default), openai (any OpenAI-compatible server),"
                   " replay (answers already in a store)")
    g.add_argument("--model", help="model name (openai); default from --config or OPENAI_MODEL;"
                   " the fit task takes several, comma-separated")
    g.add_argument("--base-url", help="endpoint, e.g. http://127.0.0.1:8000/v1 (default OPENAI_BASE_URL)")
    g.add_argument("--config", metavar="FILE", help="TOML/JSON with model, base_url, api_key_env, api_key")
    g.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the key"
                   " (default OPENAI_API_KEY)")
    g.add_argument("--api-key", help=argparse.SUPPRESS)  # visible in `ps`; prefer the environment
    g.add_argument("--model-path", metavar="GGUF", help="local: model file (default: packaged SmolLM2-135M)")
    g.add_argument("--threads", type=int, default=1, help="local: threads per model instance (default 1)")
    g.add_argument("--instances", type=int, default=1, help="local: model instances (default 1)")
    g.add_argument("--replay-from", metavar="STORE", help="replay: store with the answers (default --store)")
    g.add_argument("--replay-run", type=int, action="append", metavar="ID",
                   help="replay: only these runs (repeatable; default every non-replay run of the task)")
    g = p.add_argument_group("sampling (recorded with every attempt)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-tokens", type=int, default=None, help="per call (default 16 words, 512 fit)")
    g.add_argument("--seed", type=int, default=None,
                   help="seed of the run's random choices (default: random, stored with the run)")
    g.add_argument("--constrain", action=argparse.BooleanOptionalAction, default=None,
                   help="decode under the task's grammar (words: dictionary words of the target"
                   " value other than the prompt word; fit: valid ansatzes in the answer format)."
                   " Default: on for --backend local (strict words, fit), as stored for replay,"
                   " off for openai (llama.cpp servers honour it)")
    g = p.add_argument_group("selection of the prompt state (stored with the run and every attempt)")
    from detbal.agents.select import ESTIMATORS, RULES, Selection

    d = Selection()
    g.add_argument("--select", choices=tuple(RULES), default="uniform",
                   help="how the prompt state (word; fit: example) is drawn: uniform (default),"
                   " potential, p ~ exp(-V/tau) from the potential fitted on the run so far, or walk:"
                   " the state the previous attempt (fit: the island's previous round) wrote")
    g.add_argument("--select-tau", type=float, default=d.tau, metavar="TAU",
                   help=f"potential: temperature of the draw, in units of beta V (default {d.tau:g})")
    g.add_argument("--select-floor", type=float, default=d.floor, metavar="EPS",
                   help=f"potential: share of uniform draws mixed in so no state starves (default {d.floor:g})")
    g.add_argument("--select-every", type=int, default=d.every, metavar="K",
                   help=f"potential: refit the potential every K attempts (default {d.every})")
    g.add_argument("--select-estimator", choices=ESTIMATORS, default=d.estimator,
                   help=f"potential: estimator refitted on the run (default {d.estimator}; visits:"
                   " V = -log(1 + times the state was written), for models that rarely return)")
    g = p.add_argument_group("execution")
    g.add_argument("--concurrency", type=int, default=4, help="attempts in flight (default 4)")
    g.add_argument("--retries", type=int, default=5, help="retries per call (default 5)")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per call (default 120)")
    g.add_argument("--backoff", type=float, default=0.5, help="first retry delay in s (default 0.5)")
    g.add_argument("--new-run", action="store_true", help="start a new run even if one matches")
    g.add_argument("--run", type=int, metavar="ID", help="continue this run")
    g = p.add_argument_group("budget (per run, over all sessions)")
    g.add_argument("--budget-calls", type=int, help="stop after this many model calls")
    g.add_argument("--budget-tokens", type=int, help="stop after this many tokens (prompt + completion)")
    g.add_argument("--budget-cost", type=float, help="stop after this much money (needs prices)")
    g.add_argument("--price-input", type=float, help="price per 1M prompt tokens (stored with the run)")
    g.add_argument("--price-output", type=float, help="price per 1M completion tokens (stored with the run)")


# -- building blocks --------------------------------------------------------------


def make_backends(args: argparse.Namespace, task: str, *, several: bool = False) -> list[Any]:
    """The backends the flags ask for (several only for ``--model a,b`` with ``several``)."""
    if args.backend == "openai":
        from detbal.agents.backends.openai_compat import OpenAIBackend, OpenAISettings

        names = [m.strip() for m in (args.model or "").split(",") if m.strip()] if several else []
        if len(names) > 1:
            return [OpenAIBackend(OpenAISettings.resolve(
                model=name, base_url=args.base_url, api_key=args.api_key,
                api_key_env=args.api_key_env, config=args.config), timeout_s=args.timeout)
                for name in names]
    return [make_backend(args, task)]


def make_backend(args: argparse.Namespace, task: str) -> Any:
    """The backend the flags ask for."""
    if args.backend == "local":
        from detbal.agents.backends.local import LocalBackend

        return LocalBackend(args.model_path, n_threads=args.threads, n_instances=args.instances)
    if args.backend == "openai":
        from detbal.agents.backends.openai_compat import OpenAIBackend, OpenAISettings

        settings = OpenAISettings.resolve(model=args.model, base_url=args.base_url,
                                          api_key=args.api_key, api_key_env=args.api_key_env,
                                          config=args.config)
        return OpenAIBackend(settings, timeout_s=args.timeout)
    from detbal.agents.backends.replay import ReplayBackend

    source = Path(args.replay_from or args.store)
    exclude: list[int] = []
    if source.resolve() == Path(args.store).resolve() and source.exists():
        from detbal.store import RunStore

        with RunStore(source, create=False) as s:
            exclude = [r.id for r in s.runs() if r.backend == "replay"]
    backend = ReplayBackend(source, run_ids=args.replay_run, task=task, exclude_run_ids=exclude)
    if backend.n_answers == 0:
        raise DetbalError(f"{source}: no stored answers of task {task!r} to replay")
    return backend


def _check_common(args: argparse.Namespace) -> None:
    if args.attempts is not None and args.attempts < 0:
        raise DetbalError("--attempts must be >= 0")
    if args.concurrency < 1:
        raise DetbalError("--concurrency must be >= 1")
    if args.retries < 0 or args.timeout <= 0 or args.backoff < 0:
        raise DetbalError("--retries, --timeout and --backoff must be positive")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise DetbalError("--max-tokens must be >= 1")
    if args.budget_cost is not None and not (args.price_input or args.price_output):
        raise DetbalError("--budget-cost needs --price-input/--price-output (per 1M tokens)")


def _resume_hint() -> str:
    """The command line that continues this run (a key given with --api-key is left out)."""
    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--api-key":
            skip = True
            continue
        if a.startswith("--api-key="):
            continue
        argv.append(a)
    return shlex.join(["detbal", *argv])


# -- run words ---------------------------------------------------------------------

def selection(args: argparse.Namespace) -> Any:
    """The :class:`~detbal.agents.select.Selection` the flags ask for."""
    from detbal.agents.select import Selection

    return Selection(rule=args.select, tau=args.select_tau, floor=args.select_floor,
                     every=args.select_every, estimator=args.select_estimator)


def resolve_constrain(args: argparse.Namespace, task: str, *, relaxed: bool = False) -> bool:
    """Whether the run decodes under the task's grammar: ``--constrain/--no-constrain``,
    else on for the embedded model, as the replayed runs were for replay, off for openai."""
    flag = getattr(args, "constrain", None)
    if flag is not None:
        if flag and relaxed:
            raise DetbalError("--constrain needs the strict word task (drop --relaxed)")
        return bool(flag)
    if relaxed:
        return False
    if args.backend == "local":
        return True
    if args.backend == "replay":
        from detbal.store import RunStore

        source = Path(args.replay_from or args.store)
        if not source.exists():
            return False
        with RunStore(source, create=False) as store:
            runs = [r for r in store.runs() if r.task == task and r.backend != "replay"
                    and (not args.replay_run or r.id in args.replay_run)]
        return bool(runs) and all(r.config.get("constrain") for r in runs)
    return False


def _run_words(args: argparse.Namespace, ui: Any) -> int:
    from detbal.agents.words import WordTask

    _check_common(args)
    task = WordTask(target=args.target, seed_word=args.seed_word, relaxed=args.relaxed, vote=args.vote,
                    seed=args.seed, temperature=args.temperature, top_p=args.top_p,
                    max_tokens=args.max_tokens or args.max_tokens_default,
                    constrain=resolve_constrain(args, "words", relaxed=args.relaxed),
                    word_list=getattr(args, "word_list", None), select=selection(args), prompt=args.prompt)
    return _run(args, ui, task)


def _run_fit(args: argparse.Namespace, ui: Any) -> int:
    from detbal.agents.fit import FitConfig, FitTask, config_from_args

    _check_common(args)
    constrain = resolve_constrain(args, "fit")
    # under a grammar one call per round is the default (no translator needed)
    base = FitConfig(mode="one-call", constrain=True) if constrain else None
    return _run(args, ui, FitTask(config_from_args(args, base)), several=True)


def _run(args: argparse.Namespace, ui: Any, task: Any, *, several: bool = False) -> int:
    """``run words|fit``: :func:`detbal.run_agent` with the flags' backends, budget and policy;
    prints the summary and returns the exit status (0 done, 130 interrupted, 3 budget spent,
    1 otherwise stopped, e.g. replay ran dry)."""
    from detbal.agents.runner import Budget, CallPolicy
    from detbal.agents.session import run_agent
    from detbal.store import RunStore

    backends = make_backends(args, task.name, several=several)
    budget = Budget(args.budget_calls, args.budget_tokens, args.budget_cost,
                    price_input=args.price_input or 0.0, price_output=args.price_output or 0.0)
    policy = CallPolicy(retries=args.retries, backoff_s=args.backoff, timeout_s=args.timeout)

    def on_open(run: Any) -> None:
        ui.note(f"{'new' if run.created else 'continuing'} run {run.run_id} ({run.task}, {run.backend}"
                f" {run.model}, seed {run.config.get('seed')}): {run.stored} of {run.target}"
                " attempts stored")

    with RunStore(args.store) as store:
        try:
            result = run_agent(store, task, backends, attempts=args.attempts, concurrency=args.concurrency,
                               budget=budget, policy=policy, progress=ui, run_id=args.run,
                               new_run=args.new_run, close_backends=True, on_open=on_open)
        except KeyboardInterrupt:  # no signal handler (not the main thread)
            ui.echo(f"interrupted; to continue: {_resume_hint()}")
            return 130
        summary = next(s for s in store.run_summaries() if s.run.id == result.run_id)
    cost = f", cost {result.cost:.4f}" if (budget.price_input or budget.price_output) else ""
    escapes = ", ".join(f"{k} {v}" for k, v in summary.escape_counts.items()) or "none"
    extra = (f"best score {result.summary['best_score']:.1f}, best ansatz {result.summary['best_ansatz']}"
             if task.name == "fit" else f"valid states {result.summary['valid_states']}")
    ui.echo(f"run {result.run_id}: {result.stored}/{result.target} attempts stored ({result.committed}"
            f" this time, {result.elapsed_s:.1f} s); {summary.transitions} transitions, {extra};"
            f" escapes: {escapes}; tokens {summary.prompt_tokens}+{summary.completion_tokens}{cost}")
    if summary.attempts and summary.escape_counts.get("api_error", 0) == summary.attempts:
        ui.note("warning: no attempt of this run reached the model (all api_error, stored as"
                " escapes); check --base-url, --model and the API key, then run the same command"
                " with --new-run")
    if result.interrupted:
        ui.echo(f"stopped by request; to continue: {_resume_hint()}")
        return 130
    if result.stopped:
        ui.echo(f"stopped: {result.stopped}; to continue: {_resume_hint()}")
        return 3 if result.stopped_by == "budget" else 1
    return 0


# -- runs -----------------------------------------------------------------------------


def _runs(args: argparse.Namespace, ui: Any) -> int:
    from detbal.errors import InputError
    from detbal.store import RunStore

    if not Path(args.store).exists():
        raise InputError(args.store, "no such run store")
    with RunStore(args.store, create=False) as store:
        summaries = store.run_summaries()
    rows = []
    for s in summaries:
        cfg = s.run.config
        pin, pout = float(cfg.get("price_input") or 0), float(cfg.get("price_output") or 0)
        cost = (s.prompt_tokens * pin + s.completion_tokens * pout) / 1e6 if (pin or pout) else None
        rows.append({
            "run": s.run.id, "task": s.run.task, "backend": s.run.backend, "model": s.run.model,
            "attempts": s.attempts, "transitions": s.transitions, "valid_states": s.valid_states,
            "escapes": s.escapes, "escape_counts": s.escape_counts,
            "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
            "cost": cost, "created": s.run.created,
        })
    if args.json:
        ui.echo(json.dumps(rows, indent=2))
        return 0
    if not rows:
        ui.echo(f"{args.store}: no runs")
        return 0
    head = ("run", "task", "backend", "model", "attempts", "valid", "escapes", "tokens", "cost")
    table = [head]
    for r in rows:
        esc = f"{r['escapes']}"
        if r["escape_counts"]:
            esc += " (" + ", ".join(f"{k} {v}" for k, v in r["escape_counts"].items()) + ")"
        table.append((str(r["run"]), r["task"], r["backend"], _short(r["model"], 28),
                      str(r["attempts"]), str(r["valid_states"]), esc,
                      f"{r['prompt_tokens']}+{r['completion_tokens']}",
                      "-" if r["cost"] is None else f"{r['cost']:.4f}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        ui.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "~"


# -- demo ----------------------------------------------------------------------------


def _demo(args: argparse.Namespace, ui: Any) -> int:
    from detbal.demo import DemoConfig, run_demo

    config = DemoConfig(out=args.out, seed=args.seed, words_attempts=args.words_attempts,
                        fit_attempts=args.fit_attempts, instances=args.instances, threads=args.threads,
                        words_temperature=args.words_temperature, fit_temperature=args.fit_temperature,
                        concurrency=args.concurrency, bootstrap=args.bootstrap,
                        test_simulations=args.test_simulations, gp_population=args.gp_population,
                        gp_generations=args.gp_generations, family49_evals=args.family49_evals)

    def run_command(argv: Any) -> int:
        from detbal.cli import build_parser

        sub = build_parser().parse_args(list(argv))
        return int(sub.handler(sub, ui) or 0)

    result = run_demo(config, run_command, ui=ui)
    def num(x: float) -> str:
        return f"{x:.3f}" if math.isfinite(x) else "n/a"

    for name, study in result.studies.items():
        res = study.analysis_result
        ui.echo(f"{name}: " + (res.verdict if res is not None
                               else f"no analysis ({study.analysis_error or 'stopped'})"))
        for engine, disc in study.discoveries.items():
            c = disc.compare()
            ui.echo(f"  {engine}: Pearson r {num(c.pearson)}, Spearman rho {num(c.spearman)}")
    ui.echo(f"report: {result.readme} ({result.seconds:.0f} s)")
    if result.stopped:
        ui.echo(f"{result.stopped}; to continue: {_resume_hint()}")
    return result.status
