"""Prompt templates (``detbal/agents/prompts/fit_*.txt``) and parsing of the model's answers.

Templates use :class:`string.Template` placeholders (``$name``), so formulas with
braces need no escaping.  ``prompt_hash`` = SHA-256 (hex) of the template texts a
mode uses, joined by a NUL byte (generator then translator in two-call mode).

Answers are free text; they are cut into ideas at lines ``IDEA <n>`` (or, without
such lines, after each ``FORMULA:``/``ANSATZ:`` line).  The ansatz itself is taken
from the last ``ANSATZ:`` (one-call: also ``FORMULA:``) label; only wrapping
backticks/quotes, a trailing ``;`` and a full stop
(not after a number) are removed.  Everything else is left to
the strict validator, whose rejections are recorded as escapes.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from string import Template

TEMPLATES = {
    "generate": "fit_generate.txt",
    "translate": "fit_translate.txt",
    "one-call": "fit_one_call.txt",
}

DATA_DESCRIPTIONS = {
    "nikuradse_2": (
        "Nikuradse's friction measurements in rough pipes (362 points), in Prandtl's collapse: "
        "the target is 1/sqrt(lambda) - 2*log10(r/k) as a function of log_v_k_nu = log10(v* k / nu) "
        "(friction velocity v*, roughness height k, viscosity nu), which runs from about -0.1 to 3.5."
    ),
    "nikuradse_1": (
        "Nikuradse's friction measurements in rough pipes (362 points): the target is "
        "log10(100*lambda) for the friction factor lambda, as a function of r_k (relative roughness "
        "r/k, from 15 to 507) and log_Re (log10 of the Reynolds number, from 3.6 to 6)."
    ),
}


@lru_cache(maxsize=None)
def template_text(key: str) -> str:
    """The text of template ``key`` (``generate``, ``translate`` or ``one-call``)."""
    return (resources.files("detbal.agents") / "prompts" / TEMPLATES[key]).read_text(encoding="utf-8")


def prompt_hash(mode: str) -> str:
    """SHA-256 of the template(s) used by ``mode`` (``two-call`` or ``one-call``)."""
    keys = ("generate", "translate") if mode == "two-call" else ("one-call",)
    joined = "\0".join(template_text(k) for k in keys)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def format_params(params: Sequence[float]) -> str:
    if not params:
        return "(none)"
    return ", ".join(f"param{j} = {v:.6g}" for j, v in enumerate(params, 1))


def format_score(score: float) -> str:
    return "n/a" if not math.isfinite(score) else f"{score:.2f}"


def render(key: str, **fields: object) -> str:
    """Fill template ``key``; every placeholder must be given."""
    return Template(template_text(key)).substitute({k: str(v) for k, v in fields.items()})


@dataclass(frozen=True)
class Idea:
    """One proposal cut from an answer: its full text, reasoning and formula (may be empty)."""

    text: str
    reasoning: str
    formula: str


_IDEA = re.compile(r"^[\s>*#_-]*(?:idea|formula\s+idea)\s*#?\s*\d+\b.*$", re.IGNORECASE | re.MULTILINE)
_LABEL = r"^[\s>*#_-]*(?:\d+[.)]\s*)?\**{label}\**\s*[:=]\**\s*(.*)$"


def _label_re(*labels: str) -> re.Pattern[str]:
    alt = "|".join(labels)
    return re.compile(_LABEL.format(label=f"(?:{alt})"), re.IGNORECASE | re.MULTILINE)


_REASONING = _label_re("reasoning")
_FORMULA = _label_re("formula", "ansatz")
_ANSATZ = _label_re("ansatz")


_LAST_WORD = re.compile(r"[A-Za-z_0-9]+$")


def _ends_with_number(s: str) -> bool:
    m = _LAST_WORD.search(s.rstrip())
    return bool(m and m.group().isdigit())


def clean_expression(s: str) -> str:
    """Strip whitespace, wrapping backticks/quotes/``$``, a trailing ``;`` and a full stop not after a number."""
    s = s.strip()
    for _ in range(3):
        old = s
        s = s.strip().strip("`").strip()
        if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'$":
            s = s[1:-1].strip()
        if s.endswith(";") or (s.endswith(".") and not _ends_with_number(s[:-1])):
            s = s[:-1].rstrip()  # a sentence's full stop; "1." (a list number) is left alone
        if s == old:
            break
    return s


def _reasoning_of(block: str) -> str:
    m = _REASONING.search(block)
    if not m:
        return ""
    start = m.start(1)
    f = _FORMULA.search(block, start)
    end = f.start() if f else len(block)
    return " ".join(block[start:end].split())


def _formula_of(block: str, labels: re.Pattern[str] = _FORMULA) -> str:
    found = labels.findall(block)
    return clean_expression(found[-1]) if found else ""


def split_ideas(answer: str, n: int) -> list[Idea]:
    """At most ``n`` ideas from a generator (or one-call) answer, in order."""
    text = answer.replace("\r\n", "\n").strip()
    if not text:
        return []
    marks = [m.start() for m in _IDEA.finditer(text)]
    blocks: list[str]
    if marks:
        bounds = marks + [len(text)]
        blocks = [text[bounds[i]:bounds[i + 1]].strip() for i in range(len(marks))]
    else:
        blocks = []
        pos = 0
        for m in _FORMULA.finditer(text):
            end = text.find("\n", m.end())
            end = len(text) if end < 0 else end
            blocks.append(text[pos:end].strip())
            pos = end
        if not blocks:
            blocks = [text]
    ideas = []
    for b in blocks:
        if not b:
            continue
        ideas.append(Idea(text=b, reasoning=_reasoning_of(b), formula=_formula_of(b)))
    return ideas[:n]


def translated_ansatz(answer: str) -> str:
    """The ansatz in a translator answer: after the last ``ANSATZ:``, else its first non-empty line."""
    found = _ANSATZ.findall(answer)
    if found:
        return clean_expression(found[-1])
    for line in answer.splitlines():
        if line.strip():
            return clean_expression(line)
    return ""


TRANSLATION_MARK = "\n--- translation ---\n"
#: prefix of the key of a translator call (the replay backend serves translations by idea)
TRANSLATION_KEY = "translate:"


def translation_key(idea: str) -> str:
    """The ``key`` of the translator call for ``idea`` (live backends ignore keys)."""
    return TRANSLATION_KEY + idea


def reasoning_from_raw(raw_answer: str | None) -> str:
    """The reasoning stored with an attempt (the idea part of its ``raw_answer``)."""
    if not raw_answer:
        return ""
    idea = raw_answer.split(TRANSLATION_MARK, 1)[0]
    return _reasoning_of(idea) or " ".join(idea.split())[:500]
