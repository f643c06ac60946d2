"""The main job (``detbal demo``): the whole mission on the embedded model, one output folder.

Two studies run on the embedded SmolLM2-135M model (llama.cpp, no network, no key):

1. **words**: conditioned word generation, strict (a state is a word whose letter
   values A=1..Z=26 sum to 100), exactly as ``detbal run words --backend local``
   runs it;
2. **fit**: the symbolic-fitting agent on Nikuradse's data, exactly as
   ``detbal run fit --backend local`` runs it.

Each study's store is analysed (:func:`detbal.analysis.pipeline.run_analysis`: kernel,
detailed-balance tests, least-action potential); for the fitting study the
49-parameter family and DEAP genetic programming are fitted to its transitions and
compared with the numeric potential (:func:`detbal.evo.discover.discover_run`).  A
``README.md`` in the output folder tells a newcomer what each study found (written from
the typed results, :class:`~detbal.analysis.result.AnalysisResult` and
:class:`~detbal.evo.discover.DiscoveryResult`), and ``demo-config.json`` holds the
resolved settings.

The agents are run through the command line's own ``run words|fit`` path (so every
default of the local backend, e.g. constrained decoding, applies unchanged):
:func:`run_demo` takes ``run_command(argv) -> exit status``, which executes
``detbal <argv>`` in this process.  Running the demo again with the same settings
continues the stores (the run's identity matches, stored attempts count), so
nothing is lost or duplicated; the analyses are recomputed from the stores.

Layout of the output folder::

    README.md  demo-config.json  demo-summary.json (headline numbers, seconds per stage)
    words.sqlite  words-analysis/
    fit.sqlite    fit-analysis/  fit-gp/  fit-family49/
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detbal.errors import DetbalError

if TYPE_CHECKING:
    from detbal.analysis.result import AnalysisResult
    from detbal.evo.discover import DiscoveryResult

RunCommand = Callable[[Sequence[str]], int]
"""``run_command(argv)`` runs ``detbal <argv>`` and returns its exit status."""

README = "README.md"
#: the paper's count cut of its 3-cycle test: 0 for words, 1 for the fitting agent (METHOD.md section 3)
TRIPLET_CUT = {"words": 0.0, "fit": 1.0}
CONFIG_FILE = "demo-config.json"
SUMMARY_FILE = "demo-summary.json"


@dataclass(frozen=True)
class DemoConfig:
    """Budgets of the demo.  The defaults fit in 15 minutes on two cores (see README.md)."""

    out: str = "detbal-demo"
    seed: int = 0
    words_attempts: int = 1000
    fit_attempts: int = 600
    #: model instances and threads per instance of the local backend; attempts in flight
    instances: int = 2
    threads: int = 1
    concurrency: int = 4
    #: sampling temperatures.  Words: low, so that the 135M model's answers repeat and pairs
    #: are seen both ways within the budget (at 1.0 it rarely returns to a word: 144 words
    #: and no testable cycle in 400 attempts; at 0.25, 58 words and df 3 in 600).  Fit: the
    #: default 1.0 (at 0.4 two thirds of the answers copied the example ansatz)
    words_temperature: float = 0.25
    fit_temperature: float = 1.0
    #: fit agent: two islands, each a walk (the example is an ansatz the island's previous
    #: round wrote, so states are sources as often as the model returns to them), under
    #: the compact grammar (every summand param*f(variable)).  Drawn uniformly from the
    #: states found, under the full grammar, SmolLM2-135M saw 1 pair both ways in 500
    #: attempts and 13 in 2,000, no closed triplet; walking the compact grammar, 4 pairs in
    #: 300 (untestable) and 9 pairs with a closed triplet in 600 (df 1), so the demo asks for
    #: 600.  Two islands walk side by side on the two instances (0.9 s an attempt).
    fit_islands: int = 2
    fit_population: int = 4  # under the walk: only the first round of an island draws from it
    fit_select: str = "walk"
    fit_grammar_depth: int = 1
    fit_grammar_terms: int = 1
    #: analysis: bootstrap replicates of V and simulations of the cycle tests
    bootstrap: int = 30
    test_simulations: int = 100
    #: explicit potentials: GP population and generations, family49 action evaluations
    #: (``detbal discover``'s defaults: seconds on a study of this size)
    gp_population: int = 200
    gp_generations: int = 30
    family49_evals: int = 3000

    def __post_init__(self) -> None:
        for name in ("words_attempts", "fit_attempts", "instances", "threads", "concurrency",
                     "fit_islands", "fit_population", "family49_evals"):
            if int(getattr(self, name)) < 1:
                raise DetbalError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("bootstrap", "test_simulations", "gp_generations"):
            if int(getattr(self, name)) < 0:
                raise DetbalError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("words_temperature", "fit_temperature"):
            if not 0.0 <= float(getattr(self, name)) <= 2.0:
                raise DetbalError(f"{name} must be in [0, 2], got {getattr(self, name)}")
        from detbal.agents.select import RULES

        if self.fit_select not in RULES:
            raise DetbalError(f"fit_select must be one of {', '.join(RULES)}, not {self.fit_select!r}")
        for name in ("fit_grammar_depth", "fit_grammar_terms"):
            if not 1 <= int(getattr(self, name)) <= 3:
                raise DetbalError(f"{name} must be 1, 2 or 3, got {getattr(self, name)}")
        if self.gp_population < 4:
            raise DetbalError(f"gp_population must be at least 4, got {self.gp_population}")

    @property
    def folder(self) -> Path:
        return Path(self.out)

    def store(self, study: str) -> Path:
        return self.folder / f"{study}.sqlite"

    def _backend_args(self) -> list[str]:
        return ["--backend", "local", "--instances", str(self.instances), "--threads", str(self.threads),
                "--concurrency", str(self.concurrency), "--seed", str(self.seed)]

    def words_argv(self) -> list[str]:
        """``detbal run words ...`` of the word study (strict letter sums, the paper's prompt)."""
        argv = ["run", "words", "--store", str(self.store("words")), "--attempts",
                str(self.words_attempts), *self._backend_args()]
        return argv + ["--temperature", f"{self.words_temperature:g}"]

    def fit_argv(self) -> list[str]:
        """``detbal run fit ...`` of the fitting study (Nikuradse's data, PMLB nikuradse_2)."""
        per_cycle = self.fit_islands * 10 * 3  # rounds 10, 3 ansatzes per round (the defaults)
        cycles = max(1, math.ceil(self.fit_attempts / per_cycle))
        return ["run", "fit", "--store", str(self.store("fit")), "--attempts", str(self.fit_attempts),
                "--islands", str(self.fit_islands), "--population", str(self.fit_population),
                "--cycles", str(cycles), *self._backend_args(),
                "--temperature", f"{self.fit_temperature:g}", "--select", self.fit_select,
                "--grammar-depth", str(self.fit_grammar_depth), "--grammar-terms", str(self.fit_grammar_terms)]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"words_command": ["detbal", *self.words_argv()],
                                           "fit_command": ["detbal", *self.fit_argv()]}


@dataclass
class StudyResult:
    """What one study produced: store totals, the analysis, explicit potentials (by engine).

    ``analysis_result`` and ``discoveries`` are the typed results the README is written
    from; ``analysis`` and ``explicit`` give their summaries as dicts (what the command
    prints from, until it reads the typed results).
    """

    name: str
    store: Path
    command: list[str]
    status: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    analysis_result: AnalysisResult | None = None
    analysis_error: str | None = None
    discoveries: dict[str, DiscoveryResult] = field(default_factory=dict)
    explicit_errors: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoResult:
    config: DemoConfig
    studies: dict[str, StudyResult]
    readme: Path
    seconds: float
    stopped: str | None = None

    @property
    def status(self) -> int:
        return next((s.status for s in self.studies.values() if s.status), 0)


def run_demo(config: DemoConfig, run_command: RunCommand, *, ui: Any = None) -> DemoResult:
    """Run (or continue) both studies, analyse them and write the README; see the module doc.

    ``ui`` (optional) gets ``ui.note(line)`` for each stage and is passed to the
    analysis for its progress bars.  A study whose agent stops early (interrupt,
    budget) ends the demo with what is stored so far; the README says so.
    """
    t0 = time.perf_counter()
    out = config.folder
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(config.as_dict(), indent=2) + "\n", encoding="utf-8")
    note = ui.note if ui is not None else (lambda line: None)
    studies = {"words": StudyResult("words", config.store("words"), config.words_argv()),
               "fit": StudyResult("fit", config.store("fit"), config.fit_argv())}
    stopped = None
    for i, (name, study) in enumerate(studies.items(), 1):
        what = "strict word study" if name == "words" else "symbolic-fitting study (Nikuradse)"
        note(f"demo [{i}/2] {what}: detbal {' '.join(study.command)}")
        t = time.perf_counter()
        try:
            study.status = int(run_command(study.command) or 0)
        except DetbalError as exc:  # e.g. no model file, no data: the other study's results stay
            study.status, stopped = 2, f"the {name} study could not run: {exc}"
        study.timings["agent"] = time.perf_counter() - t
        if study.status:
            stopped = stopped or f"the {name} study stopped (exit status {study.status})"
            break
        study.runs = _runs(study.store)
        note(f"demo [{i}/2] analysing {study.store}")
        t1 = time.perf_counter()
        study.analysis_result, study.analysis_error = _analyze(study.store, out / f"{name}-analysis", config,
                                                        ui, triplet_min_count=TRIPLET_CUT[name])
        study.timings["analysis"] = time.perf_counter() - t1
        if name == "fit":
            for engine in ("family49", "gp"):
                note(f"demo [{i}/2] explicit potential: {engine}")
                t1 = time.perf_counter()
                try:
                    study.discoveries[engine] = _discover(study.store, out / f"fit-{engine}", engine, config, ui)
                except DetbalError as exc:
                    study.explicit_errors[engine] = str(exc)
                study.timings[engine] = time.perf_counter() - t1
        study.seconds = time.perf_counter() - t
    for study in studies.values():
        if not study.runs and study.store.exists():
            study.runs = _runs(study.store)
    seconds = time.perf_counter() - t0
    readme = write_demo_readme(out, config, studies, seconds=seconds, stopped=stopped)
    (out / SUMMARY_FILE).write_text(json.dumps(_demo_summary(studies, seconds, stopped), indent=2) + "\n",
                                    encoding="utf-8")
    return DemoResult(config, studies, readme, seconds, stopped)


def _demo_summary(studies: dict[str, StudyResult], seconds: float, stopped: str | None) -> dict[str, Any]:
    """The headline numbers of both studies (``demo-summary.json``)."""
    from detbal.io import json_safe

    out: dict[str, Any] = {"seconds": seconds, "stopped": stopped, "studies": {}}
    for name, st in studies.items():
        a = st.analysis_result.to_dict() if st.analysis_result is not None else {}
        entry: dict[str, Any] = {
            "command": ["detbal", *st.command], "status": st.status, "timings": st.timings,
            "runs": [{k: v for k, v in r.items() if k != "config"} for r in st.runs],
            "verdict": a.get("verdict"), "analysis_error": st.analysis_error,
            "data": a.get("data"), "potential": a.get("potential"),
        }
        for engine, e in st.discoveries.items():
            c = e.compare()
            entry[engine] = {"best": e.best.sympy, "action": c.metrics.get("action"),
                             "pearson": c.pearson, "spearman": c.spearman,
                             "compared": c.compared, "direction": c.metrics.get("direction")}
        entry["explicit_errors"] = st.explicit_errors
        out["studies"][name] = entry
    return json_safe(out)


def _runs(store: Path) -> list[dict[str, Any]]:
    from detbal.store import RunStore

    if not store.exists():
        return []
    try:
        s = RunStore(store, create=False)
    except DetbalError:  # not a run store: reported by the study's own error
        return []
    with s:
        return [{"run": r.run.id, "task": r.run.task, "model": r.run.model, "attempts": r.attempts,
                 "transitions": r.transitions, "valid_states": r.valid_states, "escapes": r.escapes,
                 "escape_counts": r.escape_counts, "config": r.run.config}
                for r in s.run_summaries()]


def _analyze(store: Path, out: Path, config: DemoConfig, ui: Any, *,
             triplet_min_count: float) -> tuple[AnalysisResult | None, str | None]:
    from detbal.analysis.pipeline import run_analysis

    try:
        return run_analysis(store, out, bootstrap=config.bootstrap, test_simulations=config.test_simulations,
                            triplet_min_count=triplet_min_count, seed=config.seed, ui=ui), None
    except DetbalError as exc:
        return None, str(exc)


def _discover(store: Path, out: Path, engine: str, config: DemoConfig, ui: Any) -> DiscoveryResult:
    from detbal.evo.discover import discover_run

    settings = ({"population": config.gp_population, "generations": config.gp_generations}
                if engine == "gp" else {"max_evals": config.family49_evals})
    return discover_run(store, out, engine=engine, kind="ansatz", seed=config.seed, targets="all",
                        stored_features=False, require_identifiable=False, ui=ui, **settings)


# -- the README ---------------------------------------------------------------------------


def _f(x: Any, fmt: str = ".3g") -> str:
    """A number for the README (numpy scalars as Python ones); None, NaN and inf read n/a."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return format(int(x), fmt)
    if isinstance(x, numbers.Real):
        return format(float(x), fmt) if math.isfinite(x) else "n/a"
    return "n/a" if x is None else str(x)


def _extremes(res: AnalysisResult, n: int = 5) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The n lowest and n highest states with a measured V (flagged states left out)."""
    fit = res.potential
    rows = [(state, float(v)) for state, v, flag in zip(res.states, fit.V, fit.flags)
            if not flag and math.isfinite(v)]
    rows.sort(key=lambda r: r[1])
    return rows[:n], rows[::-1][:n]


def _figure_links(root: Path, folder: str, files: Sequence[tuple[str, str]]) -> list[str]:
    """Links to those of ``files`` (name, label) that exist in ``root / folder``."""
    return [f"![{label}]({folder}/{name})" for name, label in files if (root / folder / name).is_file()]


def _totals(study: StudyResult) -> list[str]:
    if not study.runs:
        return ["- nothing stored yet"]
    lines = []
    for r in study.runs:
        esc = ", ".join(f"{k} {v}" for k, v in sorted(r["escape_counts"].items())) or "none"
        lines.append(f"- run {r['run']} ({r['model']}): {r['attempts']} attempts, {r['transitions']}"
                     f" transitions to a new valid state, {r['valid_states']} distinct valid states;"
                     f" escapes {r['escapes']} ({esc})")
        grammar = {k: v for k, v in r["config"].items() if "grammar" in k or "constrain" in k}
        if grammar:
            lines.append("  - decoding: " + ", ".join(f"{k} = {_short(v)}" for k, v in sorted(grammar.items())))
    return lines


def _stage_times(study: StudyResult) -> str:
    if not study.timings:
        return "not run this time"
    return "this time: " + ", ".join(f"{k} {v:.0f} s" for k, v in study.timings.items())


def _short(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 40 else s[:37] + "..."


def _analysis_lines(study: StudyResult, folder: str) -> list[str]:
    res = study.analysis_result
    if res is None:
        return [f"No analysis yet: {study.analysis_error or 'no data'}.  More attempts give the"
                " kernel states that are used as a source more than once (run the demo again with"
                " a larger attempt count: it continues the store)."]
    k, c = res.kernel, res.kernel.counts
    g, t, pair, pot = res.global_test, res.triplet_test, res.pair_test, res.potential_summary
    low, high = _extremes(res)
    lines = [
        f"**Verdict: {res.verdict}.**",
        "",
        f"- kernel: {c.n_states} states, {len(c.src)} observed transitions"
        f" ({len(k.src)} kept), {k.n_sources} states used as a source more than once,"
        f" escape or self-loop fraction {_f(res.escape_fraction, '.0%')}",
        f"- global cycle test: {g.n_pairs} pairs seen both ways, df {g.df},"
        f" chi2/df {_f(g.chi2_per_df)}, p = {_f(g.p_value)}",
        f"- the paper's 3-cycle test: {t.n_triplets} triplets,"
        f" chi2/ndf {_f(t.chi2_per_ndf)}",
        f"- pair test: {pair.n_pairs} pairs, log-ratio vs potential difference"
        f" Pearson r = {_f(pair.pearson_r)}",
        f"- potential: least action S = {_f(pot.action, '.4g')} (K(0) = {_f(pot.k0)}),"
        f" width sigma(beta V) = {_f(pot.sigma_beta_v)} over {pot.n_identifiable}"
        f" identifiable states; {_f(pot.downhill_fraction, '.0%')} of the frequent transitions"
        " go downhill",
    ]
    if low:
        lines.append("- lowest beta V (where the agent settles): "
                     + ", ".join(f"`{st}` ({v:+.2f})" for st, v in low))
        lines.append("- highest beta V (where it leaves quickly): "
                     + ", ".join(f"`{st}` ({v:+.2f})" for st, v in high))
    figs = _figure_links(Path(study.store).parent, folder,
                         (("pairs.png", "log-ratio vs potential difference"),
                          ("potential_histogram.png", "histogram of beta V"),
                          ("diagram.png", "transition diagram")))
    if figs:
        lines += ["", *figs]
    lines += ["", f"Full report: [{folder}/report.md]({folder}/report.md); V per state:"
              f" `{folder}/potential.csv`."]
    return lines


def _explicit_lines(study: StudyResult) -> list[str]:
    lines: list[str] = []
    root = Path(study.store).parent
    for engine, title in (("gp", "DEAP genetic programming"), ("family49", "the paper's 49-parameter family")):
        res = study.discoveries.get(engine)
        folder = f"fit-{engine}"
        if res is None:
            err = study.explicit_errors.get(engine)
            if err:
                lines += [f"- {title}: not fitted ({err})."]
            continue
        c = res.compare()
        numeric = (f" against the numeric minimum {_f(res.numeric_action, '.4g')}" if c.compared else "")
        details = res.details
        if engine == "gp":
            best = res.best
            lines += [f"- {title} ({details.get('evaluations')} formulas evaluated in"
                      f" {_f(details.get('seconds'), '.0f')} s):"
                      f" best formula `V = {best.sympy}` (complexity {best.complexity}),"
                      f" action S = {_f(best.action, '.4g')}{numeric}"]
        else:
            lines += [f"- {title} ({details.get('n_evals')} action evaluations, {details.get('method')}):"
                      f" S = {_f(details.get('action'), '.4g')} tuned, {_f(details.get('action_default'), '.4g')}"
                      f" with the published parameters{numeric}"]
        expl = (c.metrics.get("direction") or {}).get("explicit") or {}
        if c.compared:
            lines += [f"  - against the numeric potential over {c.compared} states: Pearson r ="
                      f" {_f(c.pearson)}, Spearman rho = {_f(c.spearman)}, same direction on"
                      f" {_f(c.direction_agreement, '.0%')} of the frequent transitions"]
        else:
            lines += ["  - no state has an identifiable numeric potential yet (no cycle among the"
                      " transitions), so there is nothing to correlate with"]
        lines += [f"  - of the {expl.get('n', 'n/a')} frequent transitions (T > {expl.get('threshold', 0.05)}),"
                  f" {_f(expl.get('frac_down'), '.0%')} go downhill and {_f(expl.get('frac_up'), '.0%')}"
                  " uphill on this potential (the paper: 70% down, 26% up)"]
        figs = _figure_links(root, folder,
                             (("compare.png", "explicit vs numeric V"), ("pareto.png", "Pareto front"),
                              ("subgraph.png", "frequent states on the explicit potential")))
        if figs:
            lines += ["", *(f"  {x}" for x in figs), ""]
        lines += [f"  - table of formulas: `{folder}/formulas.csv`; details: `{folder}/summary.json`"]
    best = _best_engine(study)
    if best:
        lines[:0] = [f"Best explicit potential: **{best}**.", ""]
    return lines


def _best_engine(study: StudyResult) -> str | None:
    """The explicit potential that tracks the numeric one best (Spearman rho)."""
    scored = []
    for engine, res in study.discoveries.items():
        rho = res.compare().spearman
        if math.isfinite(rho):
            label = f"`V = {res.best.sympy}` (GP)" if engine == "gp" else "the tuned 49-parameter family"
            scored.append((rho, label + f", Spearman rho = {rho:.3f}"))
    return max(scored)[1] if scored else None


def write_demo_readme(out: Path, config: DemoConfig, studies: dict[str, StudyResult], *,
                      seconds: float, stopped: str | None = None) -> Path:
    """``out/README.md``: what ran, what each study found, how to continue with a real model."""
    words, fit = studies["words"], studies["fit"]
    model = next((r["model"] for s in studies.values() for r in s.runs), "SmolLM2-135M")
    lines = [
        "# detbal demo: two agents on an embedded model, measured",
        "",
        f"Model: `{model}` (llama.cpp on this machine, no network).  Wall time of this invocation:"
        f" {seconds / 60:.1f} min.  Settings: [`{CONFIG_FILE}`]({CONFIG_FILE}).",
        "",
        "Each study records every attempt of an LLM-driven agent (a new state, or an escape) in a"
        " SQLite store, estimates the transition kernel T(g<-f) from the counts, tests detailed"
        " balance (is there a potential V with log T(g<-f)/T(f<-g) = V(f) - V(g)?) and fits V by"
        " least action (arXiv:2512.10047).",
        "",
    ]
    if stopped:
        lines += [f"**Incomplete: {stopped}.**  Run the same command again to continue.", ""]
    lines += [
        "## 1. Conditioned word generation (strict)",
        "",
        "A state is an English word whose letter values (A=1 ... Z=26) sum to exactly 100; from a"
        " word drawn among those found so far the model is asked for another one (start: BUZZY).",
        f"Command: `detbal {' '.join(words.command)}` ({_stage_times(words)}).",
        "",
        *_totals(words),
        "",
        *_analysis_lines(words, "words-analysis"),
        "",
        "## 2. Symbolic fitting of Nikuradse's data",
        "",
        "A state is an ansatz for PMLB's nikuradse_2 (an expression in `log_v_k_nu` with fit"
        " parameters); each round shows the model one ansatz with its score and asks"
        " for new ones, which are fitted (multi-start L-BFGS-B) and scored."
        + (" The ansatz shown is one its island's previous round wrote (a walk: the model visits"
           " states as often as it returns to them, so transitions are seen both ways)."
           if config.fit_select == "walk" else ""),
        f"Command: `detbal {' '.join(fit.command)}` ({_stage_times(fit)}).",
        "",
        *_totals(fit),
        "",
        *_analysis_lines(fit, "fit-analysis"),
        "",
        "### Explicit potentials",
        "",
        "Which formula of the ansatz string's features (length, operators, functions,"
        " parameters) reproduces the numeric potential?  Both engines minimise the"
        " same action on the study's transitions (every transition out of a state used as a"
        " source more than once, the paper's objective for explicit potentials).",
        "",
        *(_explicit_lines(fit) or ["Not fitted yet (no analysis)."]),
        "",
        "## How to continue",
        "",
        f"- More attempts on the same stores: `python3 -m detbal demo --out {config.out}"
        f" --words-attempts {2 * config.words_attempts} --fit-attempts {2 * config.fit_attempts}`"
        " (stored attempts count; nothing is repeated).",
        "- A real model behind any OpenAI-compatible server (key from OPENAI_API_KEY):",
        "",
        "```bash",
        "detbal run words --store words.sqlite --backend openai --model gpt-4o-mini \\",
        "    --base-url https://api.openai.com/v1 --attempts 20000 --concurrency 16",
        "detbal run fit --store fit.sqlite --backend openai --model gpt-4o-mini,gpt-4.1-nano \\",
        "    --base-url https://api.openai.com/v1 --concurrency 16",
        "detbal analyze words.sqlite --out words-analysis/",
        "detbal analyze fit.sqlite --out fit-analysis/ --triplet-min-count 1",
        "detbal discover fit.sqlite --engine gp --out fit-gp/",
        "detbal discover fit.sqlite --engine family49 --out fit-family49/",
        "```",
        "",
        "- `detbal runs words.sqlite` lists the runs of a store with their tokens; `--budget-cost`"
        " with `--price-input/--price-output` caps the money spent.",
        "",
    ]
    path = out / README
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
