"""The decoding grammar of the fit agent, generated from the ansatz language's tables.

Every string the grammar admits is, after :func:`~detbal.agents.fit.ansatz.renumber_params`,
a valid ansatz (:func:`~detbal.agents.fit.ansatz.validate_ansatz`) that uses at
least one data variable and at least one fit parameter; its atoms are the variables
and the parameters (:data:`~detbal.agents.fit.language.GRAMMAR_CONSTANTS`: no
constants), so every number in it is fitted.

Summands.  An ansatz is at most :data:`MAX_SUMMANDS` summands joined by ``+``/``-``
(:data:`~detbal.agents.fit.language.SUMMAND_OPERATORS`), each led by its own fit
parameter: ``param*f`` or ``param/f`` (:data:`~detbal.agents.fit.language.FACTOR_OPERATORS`)
with ``f`` a term holding the variable, and after the first one also a bare ``param``.
So the baseline ``param1*log_v_k_nu + param2`` and the usual forms
(``param1*tanh(param2*log_v_k_nu + param3) + param4``) are written one way, and
SmolLM2-135M cannot pad its answers with constant summands or constant factors
(``1 + 2 + log10(...)``, ``1/(pi*pi)*...``), which made its states differ by padding,
ran into its token limit and never returned to an earlier ansatz.  Every function
argument on the path to the variable holds the variable (a function of parameters
alone is a constant a parameter already provides).

Shape.  An expression at nesting depth ``d`` is a chain of terms ``t (op t)*``
(at most :data:`MAX_TERMS` terms, or ``FitConfig.grammar_terms``); a term is an optional unary minus, a unit and an
optional power ``** e`` (``e`` in :data:`~detbal.agents.fit.language.POWER_EXPONENTS`);
a unit is an atom
(a variable or ``param`` + digit), a function call or a parenthesised
expression at depth ``d + 1``; depth :data:`MAX_DEPTH` (or ``FitConfig.grammar_depth``)
has atoms only.  Depth 1 with 1 term makes every summand ``param*f(variable)`` (with
an optional minus and power): a state space small enough for SmolLM2-135M to return
to the states it has written, so pairs and cycles can be seen both ways.  Functions
defined on part of the real line get their argument wrapped in a guard
(:data:`~detbal.agents.fit.language.DOMAIN_GUARDS`: ``log(abs(u))``,
``arcsin(tanh(u))``), and powers are integers, so that nearly every answer can be
fitted (an ansatz that is NaN at some data point for every parameter value is the
escape ``fit_failed``).  The
requirements ("contains a variable", "contains a parameter") are threaded
through the rules so that the first term holding a required kind of atom is the
one the grammar tracks; the parse is unambiguous, which keeps llama.cpp's
grammar sampler fast.

The one-call answer format is written into the grammar (``IDEA i`` /
``REASONING:`` one line of words / ``ANSATZ:`` expression, ``per_round`` times),
so the parser in :mod:`detbal.agents.fit.prompts` reads every constrained answer.
The bounds keep answers short: unbounded, SmolLM2-135M fills its token limit
with ever longer sums of constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from detbal.agents.fit.config import FitConfig
from detbal.agents.fit.language import (
    BINARY_OPERATORS,
    DOMAIN_GUARDS,
    FUNCTIONS,
    GRAMMAR_CONSTANTS,
    OPERATOR_SPELLING,
    PARAM_PREFIX,
    POWER,
    POWER_EXPONENTS,
    SUMMAND_OPERATORS,
    FACTOR_OPERATORS,
    VARIABLES,
)
from detbal.agents.grammar import Alt, Chars, Expr, Grammar, Lit, Ref, Rep, Seq, alt, seq

#: deepest nesting of function calls and parentheses (the default; ``FitConfig.grammar_depth``)
MAX_DEPTH: int = FitConfig.grammar_depth
#: most terms ``t op t op ...`` in one (sub)expression (the default; ``FitConfig.grammar_terms``)
MAX_TERMS: int = FitConfig.grammar_terms
#: most summands of an ansatz (each holds a fit parameter)
MAX_SUMMANDS = 3
#: characters of one reasoning line (words only: letters, blanks, commas, full stops)
REASONING_CHARS = 60

_V, _P = "v", "p"
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_REASONING = Chars("[a-zA-Z ,.]", _LETTERS + " ,.")


class _Builder:
    def __init__(self, variables: Sequence[str], depth: int = MAX_DEPTH, terms: int = MAX_TERMS) -> None:
        self.variables = tuple(variables)
        self.depth, self.terms = int(depth), int(terms)
        self.rules: dict[str, Expr] = {}
        digits = Chars("[1-9]", "123456789")
        self.rules["op"] = alt(*(OPERATOR_SPELLING[o] for o in BINARY_OPERATORS if o != POWER))
        self.rules["op-add"] = alt(*(OPERATOR_SPELLING[o] for o in SUMMAND_OPERATORS))
        self.rules["op-mul"] = alt(*(OPERATOR_SPELLING[o] for o in FACTOR_OPERATORS))
        self.rules["pow"] = Seq((Lit(OPERATOR_SPELLING[POWER]), alt(*POWER_EXPONENTS)))
        self.rules["fn"] = alt(*(f for f in FUNCTIONS if f not in DOMAIN_GUARDS))
        self.guards = sorted(set(DOMAIN_GUARDS.values()))
        for g in self.guards:
            self.rules[f"fn-{g}"] = alt(*(f for f in FUNCTIONS if DOMAIN_GUARDS.get(f) == g))
        self.rules["var"] = alt(*self.variables)
        self.rules["param"] = Seq((Lit(PARAM_PREFIX), digits))
        if GRAMMAR_CONSTANTS:
            self.rules["const"] = alt(*GRAMMAR_CONSTANTS)

    @staticmethod
    def _key(must: frozenset[str], allow: frozenset[str]) -> str:
        m = "".join(sorted(must)) or "0"
        a = "".join(sorted(allow)) or "0"
        return f"{m}-{a}"

    def _possible(self, d: int, must: frozenset[str]) -> bool:
        """Can a unit at depth ``d`` hold every kind in ``must``?  (An atom holds one.)"""
        return len(must) <= 1 or d < self.depth

    def unit(self, d: int, must: frozenset[str], allow: frozenset[str]) -> str:
        name = f"u{d}-{self._key(must, allow)}"
        if name in self.rules:
            return name
        self.rules[name] = Lit("")  # placeholder against re-entry
        options: list[Expr] = []
        if not must:
            if GRAMMAR_CONSTANTS:
                options.append(Ref("const"))
            if _V in allow:
                options.append(Ref("var"))
            if _P in allow:
                options.append(Ref("param"))
        elif must == {_V}:
            options.append(Ref("var"))
        elif must == {_P}:
            options.append(Ref("param"))
        if d < self.depth:
            inner = self.expr(d + 1, must, allow)
            options.append(seq(Ref("fn"), "(", Ref(inner), ")"))
            for g in self.guards:
                options.append(seq(Ref(f"fn-{g}"), f"({g}(", Ref(inner), "))"))
            options.append(seq("(", Ref(inner), ")"))
        self.rules[name] = options[0] if len(options) == 1 else Alt(tuple(options))
        return name

    def term(self, d: int, must: frozenset[str], allow: frozenset[str]) -> str:
        name = f"t{d}-{self._key(must, allow)}"
        if name not in self.rules:
            self.rules[name] = Seq((Rep(Lit("-"), 0, 1), Ref(self.unit(d, must, allow)),
                                    Rep(Ref("pow"), 0, 1)))
        return name

    def summands(self, k: int) -> str:
        """At most ``k`` summands, each led by its own fit parameter: ``param*f`` or
        ``param/f`` with ``f`` a factor holding the variable (the first summand), or also
        a bare ``param`` (the others)."""
        name = f"s{k}"
        v, both = frozenset({_V}), frozenset({_V, _P})
        factor = Seq((Ref("param"), Ref("op-mul"), Ref(self.term(0, v, both))))
        self.rules["summand"] = Alt((factor, Ref("param")))
        self.rules[name] = Seq((factor, Rep(Seq((Ref("op-add"), Ref("summand"))), 0, k - 1)))
        return name

    def expr(self, d: int, must: frozenset[str], allow: frozenset[str], k: int = 0,
             op: str = "op") -> str:
        """Expression at depth ``d`` of at most ``k`` terms (default :data:`MAX_TERMS`) joined
        by the operators of rule ``op``, holding every kind in ``must``, with atoms only of
        kinds in ``allow``."""
        k = k or self.terms
        name = f"e{d}-{self._key(must, allow)}-{k}" + ("" if op == "op" else f"-{op}")
        if name in self.rules:
            return name
        self.rules[name] = Lit("")  # placeholder against re-entry
        empty: frozenset[str] = frozenset()
        free = Ref(self.term(d, empty, allow))

        def tail(n: int) -> Expr:
            return Rep(Seq((Ref(op), free)), 0, n)

        if not must:
            self.rules[name] = Seq((free, tail(k - 1))) if k > 1 else free
            return name
        # the i terms before the first one holding a required kind hold none of them (with
        # no constant atoms there are none such when every allowed kind is required)
        plain = Ref(self.term(d, empty, allow - must)) if (allow - must or GRAMMAR_CONSTANTS) else None
        options: list[Expr] = []
        for i in range(k if plain is not None else 1):
            before: list[Expr] = [Rep(Seq((plain, Ref(op))), i, i)] if i else []
            left = k - 1 - i  # terms still allowed after the tracked one
            for got in _nonempty_subsets(must):
                rest = must - got
                if not self._possible(d, got) or (rest and left < 1):
                    continue
                # the tracked term holds exactly the kinds `got` of `must`
                first = Ref(self.term(d, got, allow - rest))
                if rest:
                    after: list[Expr] = [Ref(op), Ref(self.expr(d, rest, allow, left, op))]
                else:
                    after = [tail(left)] if left else []
                options.append(Seq((*before, first, *after)))
        self.rules[name] = options[0] if len(options) == 1 else Alt(tuple(options))
        return name


def _nonempty_subsets(s: frozenset[str]) -> list[frozenset[str]]:
    items = sorted(s)
    out = []
    for mask in range(1, 1 << len(items)):
        out.append(frozenset(x for i, x in enumerate(items) if mask >> i & 1))
    return sorted(out, key=lambda x: (-len(x), sorted(x)))


def ansatz_grammar(variables: tuple[str, ...] = ("log_v_k_nu",), per_round: int | None = 3,
                   depth: int = MAX_DEPTH, terms: int = MAX_TERMS) -> Grammar:
    """The grammar of one answer: ``per_round`` ideas in the one-call format, or
    (``per_round`` None) a bare ansatz expression (the translator call of two-call mode).
    ``depth`` and ``terms``: the shape (module docstring; the defaults are the
    :class:`FitConfig` defaults).  Built once per distinct grammar, however it is asked for."""
    return _ansatz_grammar(tuple(variables), per_round, int(depth), int(terms))


@lru_cache(maxsize=16)
def _ansatz_grammar(variables: tuple[str, ...], per_round: int | None, depth: int, terms: int) -> Grammar:
    if not variables:
        raise ValueError("ansatz_grammar needs at least one variable")
    if per_round is not None and per_round < 1:
        raise ValueError("per_round must be at least 1")
    if depth < 1 or terms < 1:
        raise ValueError("depth and terms must be at least 1")
    b = _Builder(variables, depth, terms)
    b.rules["ansatz"] = Ref(b.summands(MAX_SUMMANDS))
    if per_round is None:
        b.rules["root"] = Ref("ansatz")
        what = "one ansatz"
    else:
        # a reasoning line starts with a letter (blanks and commas alone parse as none)
        b.rules["reasoning"] = Seq((Chars("[a-zA-Z]", _LETTERS), Rep(_REASONING, 0, REASONING_CHARS - 1)))
        b.rules["root"] = Seq(tuple(
            seq(f"IDEA {i}\nREASONING: ", Ref("reasoning"), "\nANSATZ: ", Ref("ansatz"), "\n")
            for i in range(1, per_round + 1)))
        what = f"{per_round} ideas (IDEA/REASONING/ANSATZ)"
    rules = {"root": b.rules.pop("root"), **b.rules}
    return Grammar(rules, f"{what} over {', '.join(variables)}; <= {MAX_SUMMANDS} summands, each"
                          f" with a parameter, >= 1 variable, depth <= {depth}"
                          + ("" if terms == MAX_TERMS else f", <= {terms} terms"))


def config_grammar(config: FitConfig) -> Grammar | None:
    """The grammar a fit run decodes under (None when ``config.constrain`` is off):
    the whole answer in one-call mode, each translation in two-call mode."""
    if not config.constrain:
        return None
    per_round = config.per_round if config.mode == "one-call" else None
    return ansatz_grammar(VARIABLES[config.dataset], per_round, config.grammar_depth, config.grammar_terms)
