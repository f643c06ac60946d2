"""Grammars for constrained decoding (llama.cpp GBNF), built from small rule tables.

A grammar is a mapping ``rule name -> expression``; expressions are built from
:class:`Lit` (a literal string), :class:`Ref` (another rule), :class:`Seq`,
:class:`Alt`, :class:`Rep` (``item{min,max}``) and :class:`Chars` (a character
class).  :meth:`Grammar.gbnf` renders the text llama.cpp parses (the embedded
model through ``llama_cpp.LlamaGrammar``; llama.cpp-compatible servers through
the request's ``grammar`` field), :attr:`Grammar.sha256` is the hash of that text
(recorded with every constrained attempt), and :func:`sample` draws random strings
from the same rules, so a test can check that every string the grammar admits
is a valid state.

The root rule is called ``root``.  Rule names are lower-case letters, digits and
``-``.  Task grammars: :func:`detbal.agents.fit.grammar.ansatz_grammar` and
:func:`detbal.agents.words.word_grammar`.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Lit:
    """A literal string."""

    text: str


@dataclass(frozen=True)
class Ref:
    """A reference to another rule."""

    name: str


@dataclass(frozen=True)
class Seq:
    """Items one after another."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Alt:
    """One of the options."""

    options: tuple[Expr, ...]


@dataclass(frozen=True)
class Rep:
    """``item`` repeated ``lo`` to ``hi`` times (``hi`` None: unbounded)."""

    item: Expr
    lo: int = 0
    hi: int | None = None


@dataclass(frozen=True)
class Chars:
    """A character class: ``alphabet`` lists the characters it admits (used by
    :func:`sample`); ``gbnf`` is its GBNF spelling (e.g. ``[^\\n]``), which may
    admit more (the alphabet is then a representative subset)."""

    gbnf: str
    alphabet: str


Expr = Lit | Ref | Seq | Alt | Rep | Chars


def seq(*items: Expr | str) -> Seq:
    return Seq(tuple(Lit(i) if isinstance(i, str) else i for i in items))


def alt(*options: Expr | str) -> Alt:
    return Alt(tuple(Lit(o) if isinstance(o, str) else o for o in options))


def literals(words: Iterable[str]) -> Expr:
    """One of ``words``, as a prefix tree (so the decoder keeps few parse stacks)."""
    tree: dict[str, dict] = {}
    for w in sorted(set(words)):
        node = tree
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}
    if not tree:
        raise ValueError("literals() needs at least one word")

    def build(node: dict[str, dict]) -> Expr:
        options: list[Expr] = []
        for ch, child in sorted(node.items()):
            if ch == "":
                options.append(Lit(""))
                continue
            # follow a chain of single children into one literal
            text, cur = ch, child
            while len(cur) == 1 and "" not in cur:
                (nxt, cur), = cur.items()
                text += nxt
            if cur == {"": {}}:
                options.append(Lit(text))
            else:
                options.append(Seq((Lit(text), build(cur))))
        return options[0] if len(options) == 1 else Alt(tuple(options))

    return build(tree)


def _quote(text: str) -> str:
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _render(e: Expr, top: bool = False) -> str:
    if isinstance(e, Lit):
        return _quote(e.text)
    if isinstance(e, Ref):
        return e.name
    if isinstance(e, Chars):
        return e.gbnf
    if isinstance(e, Seq):
        if not e.items:
            return '""'
        body = " ".join(_render(i) for i in e.items)
        return body if top or len(e.items) == 1 else f"({body})"
    if isinstance(e, Alt):
        body = " | ".join(_render(o, top=True) for o in e.options)
        return body if top else f"({body})"
    if isinstance(e, Rep):
        inner = _render(e.item)
        if isinstance(e.item, Seq) and len(e.item.items) > 1 and not inner.startswith("("):
            inner = f"({inner})"
        if (e.lo, e.hi) == (0, None):
            return inner + "*"
        if (e.lo, e.hi) == (1, None):
            return inner + "+"
        if (e.lo, e.hi) == (0, 1):
            return inner + "?"
        if e.lo == e.hi:
            return f"{inner}{{{e.lo}}}"
        hi = "" if e.hi is None else str(e.hi)
        return f"{inner}{{{e.lo},{hi}}}"
    raise TypeError(f"not a grammar expression: {e!r}")


@dataclass(frozen=True)
class Grammar:
    """Named rules (``root`` first when rendered) and a one-line description."""

    rules: Mapping[str, Expr]
    description: str = ""

    def __post_init__(self) -> None:
        if "root" not in self.rules:
            raise ValueError("a grammar needs a rule named 'root'")
        for name in self.rules:
            if not _NAME.match(name):
                raise ValueError(f"bad rule name {name!r}")
        for name in self.rules:
            for ref in _refs(self.rules[name]):
                if ref not in self.rules:
                    raise ValueError(f"rule {name!r} refers to the undefined rule {ref!r}")

    @cached_property
    def gbnf(self) -> str:
        """The GBNF text (``root`` first, then the other rules in insertion order)."""
        names = ["root"] + [n for n in self.rules if n != "root"]
        return "".join(f"{n} ::= {_render(self.rules[n], top=True)}\n" for n in names)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.gbnf.encode("utf-8")).hexdigest()

    def with_rule(self, name: str, expr: Expr) -> Grammar:
        """A copy with rule ``name`` replaced (or added)."""
        rules = dict(self.rules)
        rules[name] = expr
        return Grammar(rules, self.description)


def _refs(e: Expr) -> Iterable[str]:
    if isinstance(e, Ref):
        yield e.name
    elif isinstance(e, Seq):
        for i in e.items:
            yield from _refs(i)
    elif isinstance(e, Alt):
        for o in e.options:
            yield from _refs(o)
    elif isinstance(e, Rep):
        yield from _refs(e.item)


def sample(grammar: Grammar, rng: random.Random, *, max_repeat: int = 4) -> str:
    """A random string admitted by ``grammar`` (options uniform; unbounded repeats cut at ``max_repeat``).

    Grammars here are finite-depth by construction (depth-indexed rules), so the
    recursion ends; a recursive grammar would raise ``RecursionError``.
    """
    out: list[str] = []

    def walk(e: Expr) -> None:
        if isinstance(e, Lit):
            out.append(e.text)
        elif isinstance(e, Ref):
            walk(grammar.rules[e.name])
        elif isinstance(e, Chars):
            out.append(rng.choice(e.alphabet))
        elif isinstance(e, Seq):
            for i in e.items:
                walk(i)
        elif isinstance(e, Alt):
            walk(e.options[rng.randrange(len(e.options))])
        elif isinstance(e, Rep):
            hi = e.hi if e.hi is not None else e.lo + max_repeat
            for _ in range(rng.randint(e.lo, hi)):
                walk(e.item)
        else:  # pragma: no cover
            raise TypeError(f"not a grammar expression: {e!r}")

    walk(Ref("root"))
    return "".join(out)
