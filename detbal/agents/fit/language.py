"""The ansatz language (METHOD.md section 1): the one table of its words.

The validator (:mod:`detbal.agents.fit.ansatz`), the decoding grammar
(:mod:`detbal.agents.fit.grammar`), the data sets' variables
(:mod:`detbal.agents.fit.data`) and the explicit-potential tokenizer
(:mod:`detbal.evo.tokenize`) all read these tables, so they cannot disagree.
Standard library only.
"""

from __future__ import annotations

import math

#: functions of one argument
FUNCTIONS: tuple[str, ...] = (
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "tanh",
    "log", "log10", "exp", "square", "sqrt", "abs",
)
#: circular trigonometric functions (``tanh`` is not one of them)
TRIG_FUNCTIONS: frozenset[str] = frozenset({"sin", "cos", "tan", "arcsin", "arccos", "arctan"})
#: binary operators (and unary minus, written ``-``)
BINARY_OPERATORS: tuple[str, ...] = ("+", "-", "*", "/", "**")
POWER = "**"
#: named constants and their values
NAMED_CONSTANTS: dict[str, float] = {"pi": math.pi}
#: the only numeric literals, as the grammar writes them
LITERALS: tuple[str, ...] = ("1", "2")
#: spellings of those literals the validator also accepts
LITERAL_SPELLINGS: frozenset[str] = frozenset({"1", "2", "1.0", "2.0"})
#: fit parameters are PARAM_PREFIX + 1, 2, ... (consecutive from 1)
PARAM_PREFIX = "param"
#: the variables of each data set
VARIABLES: dict[str, tuple[str, ...]] = {
    "nikuradse_1": ("r_k", "log_Re"),
    "nikuradse_2": ("log_v_k_nu",),
}

# -- what the decoding grammar admits of the language (a subset) ---------------------
#: functions defined only on part of the real line, and the function the grammar wraps
#: their argument in so that they are defined everywhere: log(abs(u)), arcsin(tanh(u))
DOMAIN_GUARDS: dict[str, str] = {
    "log": "abs", "log10": "abs", "sqrt": "abs", "arcsin": "tanh", "arccos": "tanh",
}
#: constants the grammar writes as atoms: none.  Every number in a constrained answer is
#: a fit parameter (or an exponent below); with 1, 2 and pi as atoms SmolLM2-135M pads its
#: answers with them (``1 + 2 + ...``, ``1/(pi*pi)*...``), runs into its token limit and
#: never returns to an earlier ansatz.  The validator still accepts them in free text.
GRAMMAR_CONSTANTS: tuple[str, ...] = ()
#: exponents the grammar admits after ``**`` (a negative base to a fitted power is NaN)
POWER_EXPONENTS: tuple[str, ...] = ("2", "-1", "-2")
#: the operators that join the top-level summands of an ansatz, and those that join the
#: factors of a summand (the grammar makes every summand hold a fit parameter)
SUMMAND_OPERATORS: tuple[str, ...] = ("+", "-")
FACTOR_OPERATORS: tuple[str, ...] = ("*", "/")
#: the one spelling of each operator in the grammar, as in the baseline
#: ``param1*log_v_k_nu + param2`` (one spelling per ansatz: spacing variants would be
#: distinct states)
OPERATOR_SPELLING: dict[str, str] = {"+": " + ", "-": " - ", "*": "*", "/": "/", "**": "**"}
