"""Decoding grammars: every string they admit is a valid state; one table feeds grammar and validator."""

from __future__ import annotations

import ast
import random
import re

import pytest

from detbal.agents.fit import FitConfig, grammar_sha256
from detbal.agents.fit import ansatz as A
from detbal.agents.fit import language as L
from detbal.agents.fit.grammar import MAX_DEPTH, ansatz_grammar, config_grammar
from detbal.agents.fit.prompts import split_ideas
from detbal.agents.grammar import Alt, Grammar, Lit, Ref, Rep, Seq, literals, sample, seq
from detbal.agents.words import DEFAULT_WORD_LIST, GRAMMAR_RULE, WordGrammar, WordsConfig, letter_sum
from detbal.errors import DetbalError, InputError


def _depth(node: ast.AST) -> int:
    """Nesting of calls and parenthesised sub-expressions is bounded; count calls."""
    if isinstance(node, ast.Call):
        return 1 + max(_depth(a) for a in node.args)
    kids = list(ast.iter_child_nodes(node))
    return max((_depth(k) for k in kids), default=0)


@pytest.mark.parametrize("dataset", ["nikuradse_2", "nikuradse_1"])
def test_every_ansatz_the_grammar_admits_is_a_valid_state(dataset: str) -> None:
    variables = L.VARIABLES[dataset]
    g = ansatz_grammar(variables, 3)
    rng = random.Random(7)
    seen_functions: set[str] = set()
    for _ in range(600):
        answer = sample(g, rng)
        ideas = split_ideas(answer, 3)
        assert len(ideas) == 3 and all(i.reasoning for i in ideas), answer
        for idea in ideas:
            text = A.renumber_params(idea.formula)
            a = A.validate_ansatz(text, variables)  # raises if not an ansatz
            assert a.n_params >= 1, text  # at least one fit parameter
            assert any(re.search(rf"\b{v}\b", text) for v in variables), text  # and a variable
            assert _depth(a.tree) <= 2 * (MAX_DEPTH + 1)  # a guard adds one call per level
            seen_functions |= {n.func.id for n in ast.walk(a.tree) if isinstance(n, ast.Call)}
    assert seen_functions == set(L.FUNCTIONS)  # every function of the language is reachable


def _summands(text: str) -> list[str]:
    """Top-level summands: split at `` + `` / `` - `` outside parentheses (the grammar's
    spelling; a unary minus has no blanks)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        depth += (c == "(") - (c == ")")
        if depth == 0 and text[i:i + 3] in (" + ", " - "):
            parts.append(text[start:i])
            start = i = i + 3
            continue
        i += 1
    return parts + [text[start:]]


def test_every_summand_the_grammar_admits_holds_a_fit_parameter() -> None:
    """No constant padding (``1 + 2 + f(x)``): each top-level summand has a parameter to fit."""
    g = ansatz_grammar(("log_v_k_nu",), None)
    rng = random.Random(11)
    for _ in range(400):
        text = A.renumber_params(sample(g, rng))
        A.validate_ansatz(text)
        parts = _summands(text)
        assert 1 <= len(parts) <= 3, text
        assert all("param" in part for part in parts), text
    assert _summands("1 + 2 + log10(abs(param1 - log_v_k_nu))") == ["1", "2", "log10(abs(param1 - log_v_k_nu))"]


def test_the_compact_grammar_writes_param_times_a_function_of_the_variable() -> None:
    """Depth 1, 1 term: every summand is ``param*f(v)``, ``param/f(v)``, ``param*v`` (with an
    optional minus and power) or a bare ``param``: a small space, and still valid states."""
    g = ansatz_grammar(("log_v_k_nu",), 3, 1, 1)
    assert g.gbnf != ansatz_grammar(("log_v_k_nu",), 3).gbnf
    v = r"-?log_v_k_nu(?:\*\*-?\d)?"  # the variable, with its own minus and power
    summand = re.compile(rf"^param\d[*/]-?(?:{v}|\w+\({v}\)|\w+\(\w+\({v}\)\)|\({v}\))(?:\*\*-?\d)?$"
                         r"|^param\d$")
    rng = random.Random(5)
    forms: set[str] = set()
    sizes: set[int] = set()
    for _ in range(400):
        for idea in split_ideas(sample(g, rng), 3):
            text = A.renumber_params(idea.formula)
            a = A.validate_ansatz(text)
            assert a.n_params >= 1 and "log_v_k_nu" in text, text
            parts = _summands(text)
            sizes.add(len(parts))
            unmatched = [p for p in parts if not summand.match(p)]
            assert unmatched == [], text
            assert _depth(a.tree) <= 2  # a guard (log(abs(v))) is the only call in a call
            forms.add(text)
    assert len(forms) > 300  # small, not trivial
    assert sizes == {1, 2, 3}  # up to MAX_SUMMANDS summands, each count reached
    # the shape is a setting of the run: in its config, its identity and its grammar hash
    small = FitConfig(constrain=True, mode="one-call", grammar_depth=1, grammar_terms=1)
    assert grammar_sha256(small) != grammar_sha256(FitConfig(constrain=True, mode="one-call"))
    assert config_grammar(small).gbnf == g.gbnf
    with pytest.raises(DetbalError):
        FitConfig(grammar_depth=0)


def test_translator_grammar_is_a_bare_ansatz() -> None:
    g = ansatz_grammar(("log_v_k_nu",), None)
    rng = random.Random(3)
    for _ in range(300):
        text = A.renumber_params(sample(g, rng))
        assert A.validate_ansatz(text).n_params >= 1 and "log_v_k_nu" in text


def test_grammar_is_generated_from_the_language_tables() -> None:
    g = ansatz_grammar(("log_v_k_nu",), 3)
    called = {lit for name in g.rules if name.startswith("fn")
              for lit in re.findall(r'"([a-z0-9]+)"', Grammar({"root": g.rules[name]}).gbnf)}
    assert called == set(L.FUNCTIONS)
    quoted = set(re.findall(r'"([^"]*)"', g.gbnf))
    for bad in ("sinh", "exp2", "e", "x", "0", "3", "10", "0.5"):
        assert bad not in quoted
    # the validator, the evo tokenizer and the data sets read the same tables
    from detbal.agents.fit import data
    from detbal.evo import tokenize

    assert tokenize.FUNCTIONS is L.FUNCTIONS and A.FUNCTIONS is L.FUNCTIONS
    assert tokenize.VARIABLE == L.VARIABLES["nikuradse_2"][0] and data.FEATURES is L.VARIABLES
    assert set(A._BINOPS.values()) == set(L.BINARY_OPERATORS)
    assert set(L.DOMAIN_GUARDS) <= set(L.FUNCTIONS) and set(L.DOMAIN_GUARDS.values()) <= set(L.FUNCTIONS)
    # a string outside the grammar but inside the language is still validated as before
    assert A.invalid_reason("param1*log_v_k_nu**param2") is None


def test_renumber_params_in_order_of_first_use() -> None:
    assert A.renumber_params("param3*log_v_k_nu + param7 + param3") == "param1*log_v_k_nu + param2 + param1"
    assert A.renumber_params("param2 + param10*param1") == "param1 + param2*param3"
    assert A.renumber_params("log_v_k_nu + 2") == "log_v_k_nu + 2"


def test_grammar_hash_identifies_the_grammar() -> None:
    one = FitConfig(mode="one-call", constrain=True)
    assert grammar_sha256(FitConfig()) is None  # unconstrained
    assert grammar_sha256(one) == ansatz_grammar(("log_v_k_nu",), 3).sha256
    assert grammar_sha256(FitConfig(mode="two-call", constrain=True)) == ansatz_grammar(("log_v_k_nu",), None).sha256
    assert grammar_sha256(FitConfig(mode="one-call", constrain=True, per_round=2)) != grammar_sha256(one)
    assert config_grammar(one) is ansatz_grammar(("log_v_k_nu",), 3)  # built once


def test_generic_grammar_rendering_and_checks() -> None:
    g = Grammar({"root": seq("a", Ref("x"), Rep(Lit("b"), 0, 1), Rep(Lit("c"), 2, 2)),
                 "x": Alt((Lit('"'), Lit("\n"), Seq((Lit("y"), Rep(Lit("z"), 1, 3))))),
                 })
    assert g.gbnf == ('root ::= "a" x "b"? "c"{2}\n'
                      'x ::= "\\"" | "\\n" | "y" "z"{1,3}\n')
    assert len(g.sha256) == 64
    with pytest.raises(ValueError, match="undefined rule"):
        Grammar({"root": Ref("missing")})
    with pytest.raises(ValueError, match="root"):
        Grammar({"start": Lit("a")})
    words = ["CAT", "CATS", "COW", "DOG"]
    rng = random.Random(0)
    drawn = {sample(Grammar({"root": literals(words)}), rng) for _ in range(200)}
    assert drawn == set(words)


# -- the word task's dictionary grammar -----------------------------------------------

def _word_grammar() -> WordGrammar:
    try:
        return WordGrammar.load(100)
    except InputError:
        pytest.skip(f"{DEFAULT_WORD_LIST} missing (Debian: apt-get install wamerican)")


def test_word_grammar_admits_exactly_the_dictionary_words_of_value_100_but_the_prompt_word() -> None:
    wg = _word_grammar()
    assert 500 < len(wg.words) < 1500  # wamerican: 757 lower-case words of value 100
    assert all(letter_sum(w) == 100 and w.isalpha() and w.isupper() for w in wg.words)
    assert {"ATTITUDE", "EXCELLENT", "TURKEY"} <= set(wg.words)
    rng = random.Random(1)
    text = wg.for_source("ATTITUDE")
    g = Grammar({"root": literals([w for w in wg.words if w != "ATTITUDE"])})
    assert text == g.gbnf
    drawn = {sample(g, rng) for _ in range(3000)}
    assert "ATTITUDE" not in drawn and drawn <= set(wg.words) and len(drawn) > 400
    assert wg.for_source("BUZZY") == wg.base.gbnf  # not a dictionary word: nothing to leave out


def test_word_config_records_the_grammar(tmp_path) -> None:
    _word_grammar()
    cfg = WordsConfig(constrain=True)
    rec = cfg.as_config()
    assert rec["constrain"] is True and rec["grammar"] == cfg.grammar.sha256
    assert rec["grammar_rule"] == GRAMMAR_RULE and rec["word_list"] == DEFAULT_WORD_LIST
    assert WordsConfig().as_config()["grammar"] is None
    with pytest.raises(DetbalError, match="strict"):
        WordsConfig(constrain=True, relaxed=True)
    # another dictionary: another grammar hash
    own = tmp_path / "words.txt"
    own.write_text("attitude\nturkey\nExcellent\nbuzzy\nzzz\n")
    small = WordsConfig(constrain=True, word_list=str(own), seed_word="BUZZY")
    assert small.grammar.words == ("ATTITUDE", "BUZZY", "TURKEY")  # capitalised entries left out
    assert small.as_config()["grammar"] != rec["grammar"]
    with pytest.raises(InputError, match="no such word list"):
        WordGrammar.load(100, tmp_path / "missing.txt")
