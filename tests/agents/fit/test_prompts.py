"""Prompt templates and the parsing of model answers into ideas and ansatz strings."""

from __future__ import annotations

import pytest

from detbal.agents.fit import prompts as P


def _fields() -> dict[str, object]:
    return dict(data_description=P.DATA_DESCRIPTIONS["nikuradse_2"], variables="log_v_k_nu",
                example_ansatz="param1*log_v_k_nu + param2", example_score="20.00",
                example_params="param1 = 0.0266, param2 = 1.75", example_reasoning="a line",
                baseline_ansatz="param1*log_v_k_nu + param2", n_new=3)


@pytest.mark.parametrize("key", ["generate", "one-call"])
def test_round_prompts_show_one_example_with_score_parameters_and_reasoning(key: str) -> None:
    text = P.render(key, **_fields())
    for part in ("param1*log_v_k_nu + param2", "20.00", "param2 = 1.75", "a line", "log_v_k_nu", " 3 new"):
        assert part in text
    assert "$" not in text


def test_translate_prompt() -> None:
    text = P.render("translate", variables="log_v_k_nu", idea="IDEA 1\nFORMULA: a*tanh(b*x)")
    assert "a*tanh(b*x)" in text and "ANSATZ:" in text


def test_prompt_hash_is_the_templates_sha256() -> None:
    import hashlib

    one = hashlib.sha256(P.template_text("one-call").encode()).hexdigest()
    assert P.prompt_hash("one-call") == one
    assert P.prompt_hash("two-call") not in (one, P.prompt_hash("one-call"))


GENERATED = """Let me think.

**IDEA 1**
REASONING: The data saturate at large x,
so a tanh step fits.
FORMULA: `param1 + param2*tanh(param3*log_v_k_nu)`

IDEA 2:
Reasoning: a logistic step.
Formula: param1/(1+exp(-param2*(log_v_k_nu-param3))) + param4.

IDEA 3
REASONING: a power law
"""


def test_split_ideas_cuts_blocks_and_reads_labels() -> None:
    ideas = P.split_ideas(GENERATED, 3)
    assert len(ideas) == 3
    assert ideas[0].reasoning == "The data saturate at large x, so a tanh step fits."
    assert ideas[0].formula == "param1 + param2*tanh(param3*log_v_k_nu)"
    assert ideas[1].formula == "param1/(1+exp(-param2*(log_v_k_nu-param3))) + param4"
    assert ideas[2].formula == "" and ideas[2].reasoning == "a power law"
    assert P.split_ideas(GENERATED, 2) == ideas[:2]


def test_split_ideas_without_idea_lines() -> None:
    ideas = P.split_ideas("ANSATZ: param1*log_v_k_nu\nthen\nANSATZ: sin(param1)", 3)
    assert [i.formula for i in ideas] == ["param1*log_v_k_nu", "sin(param1)"]
    assert P.split_ideas("", 3) == []
    free = P.split_ideas("I do not know.", 3)
    assert len(free) == 1 and free[0].formula == ""


@pytest.mark.parametrize(
    ("answer", "ansatz"),
    [
        ("ANSATZ: param1*log_v_k_nu + param2", "param1*log_v_k_nu + param2"),
        ("Sure!\nANSATZ: `tanh(param1)`\n", "tanh(param1)"),
        ("ANSATZ: a\nANSATZ: param1", "param1"),  # the last label wins
        ("param1*exp(log_v_k_nu).\nbecause ...", "param1*exp(log_v_k_nu)"),
        ("1.\nThe formula is", "1."),  # a list number is not turned into the constant 1
        ("  \n", ""),
    ],
)
def test_translated_ansatz(answer: str, ansatz: str) -> None:
    assert P.translated_ansatz(answer) == ansatz


def test_reasoning_from_raw_answer() -> None:
    raw = "IDEA 1\nREASONING: steps\nFORMULA: x" + P.TRANSLATION_MARK + "ANSATZ: param1"
    assert P.reasoning_from_raw(raw) == "steps"
    assert P.reasoning_from_raw(None) == ""
