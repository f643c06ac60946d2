"""Stand-ins for a model that test the fitting loop's bookkeeping (not its science)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence
from typing import Any

from detbal.agents.backends.base import Completion, Message, SamplingParams
from detbal.store import RunStore

SMALL_FIT: dict[str, Any] = {"islands": 3, "cycles": 2, "rounds": 2, "per_round": 3, "starts": 12,
                             "population": 4, "seed": 11}
"""A small fit run for bookkeeping tests: 3 islands x 2 cycles x 2 rounds x 3 = 36 attempts
(settings of ``FitConfig`` and ``detbal.FitTask`` alike)."""

FORMULAS = [
    "param1 + param2*tanh(param3*(log_v_k_nu - param4))",
    "param1*log_v_k_nu**2 + param2*log_v_k_nu + param3",
    "param1/(1 + exp(-param2*(log_v_k_nu - param3))) + param4",
    "3.5*param1*log_v_k_nu",  # invalid: literal
    "sqrt(param1*log_v_k_nu)",  # fit_failed: NaN for every start
    "param1*log(1 + exp(param2*log_v_k_nu)) + param3",
    "param1 + param2*arctan(param3*log_v_k_nu)",
    "y = a*x + b",  # invalid: not an expression
    "param1*log_v_k_nu + param2",
]


class ScriptedBackendForBookkeeping:
    """Deterministic stand-in for a model, for testing the loop's bookkeeping only.

    Generator prompts get 0-3 ideas picked by a CRC of the prompt and the sampling
    seed; translator prompts get their idea's FORMULA back as ``ANSATZ: ...``.
    """

    name = "scripted"

    def __init__(self, model: str = "scripted-list", delay: float = 0.0) -> None:
        self.model = model
        self.delay = delay
        self.calls = 0

    async def complete(self, messages: Sequence[Message], params: SamplingParams,
                       *, key: str | None = None) -> Completion:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        prompt = messages[-1]["content"]
        if prompt.startswith("Turn the formula"):
            idea = prompt.split("behind it:\n", 1)[1]
            formula = idea.split("FORMULA:", 1)[1].split("\n", 1)[0].strip() if "FORMULA:" in idea else ""
            text = f"ANSATZ: {formula}"
        else:
            h = zlib.crc32(f"{prompt}|{params.seed}|{self.model}".encode())
            n_ideas = 3 if h % 7 else h % 3  # mostly three ideas, sometimes fewer
            label = "ANSATZ" if "ANSATZ: <expression>" in prompt else "FORMULA"
            parts = []
            for k in range(n_ideas):
                f = FORMULAS[(h >> (3 * k)) % len(FORMULAS)]
                parts.append(f"IDEA {k + 1}\nREASONING: reason {h % 1000}-{k}\n{label}: {f}")
            text = "\n\n".join(parts) or "I am not sure."
        return Completion(text, len(prompt) // 4, len(text) // 4, 0.001, "stop", self.model)

    async def aclose(self) -> None:
        pass


async def bare_call(backend: Any, messages: Any, params: Any, *, key: str | None = None) -> Completion:
    """No retries: what the loop does with whatever a call raises."""
    return await backend.complete(messages, params, key=key)


def table(store: RunStore, run_id: int) -> list[tuple[Any, ...]]:
    return [(r["seq"], r["source"], r["target"], r["escape"], r["escape_detail"], r["raw_answer"])
            for r in sorted(store.iter_attempts([run_id]), key=lambda r: r["seq"])]
