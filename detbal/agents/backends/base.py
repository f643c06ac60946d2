"""The seam between agents and language models.

A backend turns chat messages into a :class:`Completion`; everything else
(retries, budgets, storage) lives in the runner, so a new backend is one class.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": ...}


@dataclass(frozen=True)
class SamplingParams:
    """Passed through to the model and recorded with every attempt.

    ``grammar``: GBNF text that constrains the answer (None: free text).  Backends
    that cannot honour it must refuse the call; :meth:`as_dict` records its
    SHA-256 (``grammar``, None when unconstrained), never the text.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 32
    seed: int | None = None
    grammar: str | None = field(default=None, repr=False)

    @property
    def grammar_sha256(self) -> str | None:
        return None if self.grammar is None else hashlib.sha256(self.grammar.encode("utf-8")).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "seed": self.seed, "grammar": self.grammar_sha256}


@dataclass(frozen=True)
class Completion:
    """One model answer with its accounting."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    finish_reason: str | None
    model: str


class BackendError(Exception):
    """A failed call; ``retryable`` for rate limits, server errors and time-outs."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class BackendStop(BackendError):
    """The run must stop cleanly and store nothing for this call.

    Raised when calling again cannot help: the replay backend has no answer left,
    the server refused the credentials or does not know the model.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, retryable=False, status=status)


class BackendExhausted(BackendStop):
    """The replay backend has no stored answer left for a state."""


@runtime_checkable
class Backend(Protocol):
    """Messages in; text, token usage, latency and finish reason out."""

    name: str
    model: str

    async def complete(
        self, messages: Sequence[Message], params: SamplingParams, *, key: str | None = None
    ) -> Completion:
        """One call; raise :class:`BackendError` on failure.

        ``key`` names the agent state the prompt was built from (the source
        state).  Live backends ignore it; the replay backend answers from the
        stored answers for that key.  Callers pass it only when it is not None,
        so a backend without the keyword still works.
        """
        ...

    async def aclose(self) -> None:
        """Release connections, threads or model memory."""
        ...
