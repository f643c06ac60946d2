"""``replay`` backend: answers from the responses already in a run store.

For every source state (the ``key`` the agent passes with each call) it serves
the stored answers of the attempts from that state, in the order they were
stored (:func:`stored_answers`: a majority-vote attempt contributes each of its
answers, a fit round the whole answer of its call).
Calls that never produced an answer (``api_error``) are not replayed.  When a
state has no answer left the backend raises
:class:`~detbal.agents.backends.base.BackendExhausted` and the run stops cleanly:
no answer is ever invented.  Re-running a study with the same seed and
concurrency 1 on its own answers reproduces it exactly, offline.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from detbal.agents.backends.base import (
    BackendError,
    BackendExhausted,
    Completion,
    Message,
    SamplingParams,
)
from detbal.store import RunStore

#: text, prompt tokens, completion tokens, finish reason
Answer = tuple[str, int | None, int | None, str | None]


def stored_answers(row: Mapping[str, Any]) -> list[tuple[str, Answer]]:
    """The model answers one stored attempt row holds, as ``(key, answer)`` in call order.

    * a fit attempt written with the whole answer of its call (``params.answer``,
      once per call; the round's other attempts carry ``params.answer_in``): that
      answer under the source state, and a two-call translation under
      ``translate:<idea>``;
    * a majority-vote attempt: each of its answers;
    * any other attempt: its ``raw_answer``, ``count`` times.
    ``api_error`` attempts (no answer) hold none.
    """
    from detbal.agents.fit.prompts import TRANSLATION_MARK, translation_key

    raw = row["raw_answer"]
    params = json.loads(row["params"]) if row["params"] else {}
    finish = row["finish_reason"]
    out: list[tuple[str, Answer]] = []
    if "answer" in params or "answer_in" in params:
        if "answer" in params:
            out.append((row["source"], (str(params["answer"]), row["prompt_tokens"],
                                        row["completion_tokens"], finish)))
        if raw and TRANSLATION_MARK in raw:
            idea, translation = raw.split(TRANSLATION_MARK, 1)
            out.append((translation_key(idea), (translation, None, None, finish)))
        return out
    if raw is None:
        return out
    if params.get("vote"):
        try:
            texts = json.loads(raw)
        except ValueError:
            texts = [raw]
        out.extend((row["source"], (str(t), None, None, finish)) for t in texts)
    else:
        out.extend((row["source"], (raw, row["prompt_tokens"], row["completion_tokens"], finish))
                   for _ in range(int(row["count"] or 1)))
    return out


class ReplayBackend:
    """Serve stored answers keyed by source state."""

    name = "replay"

    def __init__(self, path: str | Path, *, run_ids: Sequence[int] | None = None,
                 task: str | None = None, exclude_run_ids: Iterable[int] = ()) -> None:
        self.path = Path(path)
        self._answers: dict[str, deque[Answer]] = defaultdict(deque)
        excluded = set(exclude_run_ids)
        with RunStore(self.path, create=False) as store:
            runs = [r for r in store.runs()
                    if (run_ids is None or r.id in run_ids) and r.id not in excluded
                    and (task is None or r.task == task)]
            self.source_runs = tuple(r.id for r in runs)
            #: every source run was decoded under a grammar (its answers need the same decoding)
            self.constrained = bool(runs) and all(r.config.get("constrain") for r in runs)
            models = sorted({r.model for r in runs})
            for row in store.iter_attempts(list(self.source_runs) or [-1]):
                self._add(row)
        self.model = "replay:" + (",".join(models) if models else "empty")
        self.n_answers = sum(len(q) for q in self._answers.values())

    def _add(self, row: dict[str, Any]) -> None:
        for key, answer in stored_answers(row):
            self._answers[key].append(answer)

    def describe(self) -> dict[str, Any]:
        return {"replay_from": str(self.path), "source_runs": list(self.source_runs)}

    def remaining(self, key: str) -> int:
        return len(self._answers.get(key, ()))

    def skip(self, key: str, n: int) -> None:
        """Drop the next ``n`` answers for ``key`` (already used by a resumed run)."""
        queue = self._answers.get(key)
        for _ in range(min(n, len(queue) if queue else 0)):
            queue.popleft()  # type: ignore[union-attr]

    async def complete(
        self, messages: Sequence[Message], params: SamplingParams, *, key: str | None = None
    ) -> Completion:
        if key is None:
            raise BackendError("the replay backend needs the source state of each call", retryable=False)
        queue = self._answers.get(key)
        if not queue:
            raise BackendExhausted(f"no stored answer left for state {key!r}")
        t0 = time.perf_counter()
        text, n_prompt, n_completion, finish = queue.popleft()
        return Completion(text=text, prompt_tokens=n_prompt, completion_tokens=n_completion,
                          latency_s=time.perf_counter() - t0, finish_reason=finish, model=self.model)

    async def aclose(self) -> None:
        return None
