"""Settings of the symbolic-fitting agent and their command-line options (stdlib only)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detbal.errors import DetbalError

MODES = ("two-call", "one-call")
DATASET_NAMES = ("nikuradse_1", "nikuradse_2")
#: the linear baseline whose MSE defines score 20, per data set
BASELINES = {
    "nikuradse_2": "param1*log_v_k_nu + param2",
    "nikuradse_1": "param1*r_k + param2*log_Re + param3",
}
SEED_REASONING = "The simplest starting point: a straight line through the data."


@dataclass(frozen=True)
class FitConfig:
    """Everything that shapes a fit run; stored in the run's config as ``{"fit": as_dict()}``.

    Total planned attempts = ``cycles * islands * rounds * per_round`` unless the
    caller passes ``attempts``.  ``population``: states kept per island (best
    scores).  Every ``repopulate_every`` cycles the worst
    ``floor(repopulate_fraction * islands)`` islands (at least one when the
    fraction is positive and there are two or more islands) are reseeded with the
    best island's population.  ``constrain``: every answer is decoded under the
    ansatz grammar (one-call: the whole answer; two-call: each translation).
    """

    dataset: str = "nikuradse_2"
    data_dir: str | None = None
    download: bool = False
    islands: int = 8
    cycles: int = 30
    rounds: int = 10
    per_round: int = 3
    population: int = 10
    repopulate_every: int = 1
    repopulate_fraction: float = 0.25
    starts: int = 100
    fit_maxiter: int = 300
    mode: str = "two-call"
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 400
    translate_max_tokens: int = 96
    seed_ansatz: str | None = None
    constrain: bool = False  # grammar-constrained decoding (detbal.agents.fit.grammar)
    #: the grammar's shape: deepest nesting of calls and parentheses, most terms in one
    #: function argument or parenthesis (1 and 1: each summand is param*f(variable))
    grammar_depth: int = 2
    grammar_terms: int = 3
    #: how the example is drawn from the island (detbal.agents.select.Selection)
    select: str = "uniform"
    select_tau: float = 1.0
    select_floor: float = 0.1
    select_every: int = 10
    select_estimator: str = "likelihood"

    #: fields that must not change when a run is resumed
    STRUCTURAL = ("dataset", "islands", "rounds", "per_round", "population", "repopulate_every",
                  "repopulate_fraction", "starts", "fit_maxiter", "mode", "seed", "seed_ansatz", "constrain")
    #: the selection's fields (checked on resume like STRUCTURAL where the stored run has them)
    SELECTION = ("select", "select_tau", "select_floor", "select_every", "select_estimator")
    #: the grammar's shape (runs made before it was a setting used the defaults)
    GRAMMAR = ("grammar_depth", "grammar_terms")

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise DetbalError(f"unknown data set {self.dataset!r} (choose from {', '.join(DATASET_NAMES)})")
        if self.mode not in MODES:
            raise DetbalError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        for name in ("islands", "cycles", "rounds", "per_round", "population", "repopulate_every",
                     "starts", "fit_maxiter", "max_tokens", "translate_max_tokens"):
            if int(getattr(self, name)) < 1:
                raise DetbalError(f"{name} must be at least 1")
        for name in self.GRAMMAR:
            if not 1 <= int(getattr(self, name)) <= 3:
                raise DetbalError(f"{name} must be 1, 2 or 3, not {getattr(self, name)!r}")
        if not 0.0 <= self.repopulate_fraction < 1.0:
            raise DetbalError("repopulate_fraction must be in [0, 1)")
        _ = self.selection  # validates the selection fields

    @property
    def selection(self) -> Any:
        """The :class:`~detbal.agents.select.Selection` of the example."""
        from detbal.agents.select import Selection

        return Selection(rule=self.select, tau=self.select_tau, floor=self.select_floor,
                         every=self.select_every, estimator=self.select_estimator)

    @property
    def baseline(self) -> str:
        return BASELINES[self.dataset]

    @property
    def initial_ansatz(self) -> str:
        return self.seed_ansatz or self.baseline

    @property
    def planned_attempts(self) -> int:
        return self.cycles * self.islands * self.rounds * self.per_round

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> FitConfig:
        """From a dict (unknown keys ignored), e.g. a stored run config's ``"fit"`` entry."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in m.items() if k in names})


_OPTIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--dataset", "dataset", {"choices": DATASET_NAMES, "help": "PMLB data set (default nikuradse_2)"}),
    ("--data-dir", "data_dir", {"metavar": "DIR",
                                "help": "folder with nikuradse_raw.csv (default: $DETBAL_DATA_DIR, "
                                        "then ../shared/datasets/nikuradse beside the checkout)"}),
    ("--download", "download", {"action": "store_true", "default": None,
                                "help": "use PMLB's own .tsv.gz (downloaded once, SHA-256 checked)"}),
    ("--islands", "islands", {"type": int, "help": "islands (default 8)"}),
    ("--cycles", "cycles", {"type": int, "help": "cycles (default 30)"}),
    ("--rounds", "rounds", {"type": int, "help": "rounds per island per cycle (default 10)"}),
    ("--per-round", "per_round", {"type": int, "help": "new ansatzes asked for per round (default 3)"}),
    ("--population", "population", {"type": int, "help": "states kept per island (default 10)"}),
    ("--repopulate-every", "repopulate_every", {"type": int, "metavar": "CYCLES",
                                                "help": "reseed the worst islands every so many cycles (default 1)"}),
    ("--repopulate-fraction", "repopulate_fraction", {"type": float,
                                                      "help": "fraction of islands reseeded (default 0.25)"}),
    ("--starts", "starts", {"type": int, "help": "random L-BFGS-B starts per fit (default 100)"}),
    ("--fit-mode", "mode", {"choices": MODES,
                            "help": "two-call: generator then translator at T=0; one-call: one call (default two-call)"}),
    ("--seed-ansatz", "seed_ansatz", {"metavar": "ANSATZ", "help": "first example state (default: the linear baseline)"}),
    ("--grammar-depth", "grammar_depth", {"type": int, "metavar": "D",
                                          "help": "constrained: deepest nesting of calls and parentheses"
                                          " (1-3, default 2)"}),
    ("--grammar-terms", "grammar_terms", {"type": int, "metavar": "K",
                                          "help": "constrained: most terms in one function argument or"
                                          " parenthesis (1-3, default 3); --grammar-depth 1 --grammar-terms 1:"
                                          " every summand is param*f(variable), a small state space"
                                          " a small model returns in"}),
    ("--translate-max-tokens", "translate_max_tokens", {"type": int,
                                                        "help": "token limit of translator calls (default 96)"}),
)


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the fit agent's options; an option the parser already has (e.g. ``--seed``) is left alone.

    Shared names read by :func:`config_from_args` when present: ``seed``,
    ``temperature``, ``top_p``, ``max_tokens`` and the selection's ``select``,
    ``select_tau``, ``select_floor``, ``select_every``, ``select_estimator``.
    """
    for flag, dest, kw in _OPTIONS:
        kw = {"default": None, **kw}
        try:
            parser.add_argument(flag, dest="fit_mode" if dest == "mode" else dest, **kw)
        except argparse.ArgumentError:
            continue


def config_from_args(args: argparse.Namespace, base: FitConfig | None = None) -> FitConfig:
    """A :class:`FitConfig` from parsed options (``None`` = keep ``base``'s value)."""
    base = base or FitConfig()
    values = base.as_dict()
    for _flag, dest, _kw in _OPTIONS:
        attr = "fit_mode" if dest == "mode" else dest
        v = getattr(args, attr, None)
        if v is not None:
            values[dest] = v
    for shared in ("seed", "temperature", "top_p", "max_tokens", *FitConfig.SELECTION):
        v = getattr(args, shared, None)
        if v is not None:
            values[shared] = v
    return FitConfig(**values)
