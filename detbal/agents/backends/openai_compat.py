"""``openai`` backend: chat completions against any OpenAI-compatible endpoint.

Works unchanged with OpenAI, vLLM, llama.cpp's server and Ollama.  A constrained
call (``SamplingParams.grammar``) sends the GBNF text in the request body's
``grammar`` field, which llama.cpp's server and ``llama_cpp.server`` honour;
other servers may ignore it or refuse the request.  Settings come
from (first wins) explicit arguments (CLI flags), a config file and the usual
environment variables ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``.  The key lives
only in this object: it is never part of :meth:`describe`, and it is removed
from every error message this backend raises.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detbal.agents.backends.base import (
    BackendError,
    BackendStop,
    Completion,
    Message,
    SamplingParams,
)
from detbal.errors import DetbalError, InputError

log = logging.getLogger(__name__)

#: placeholder sent to local servers that want no key (the client insists on one)
NO_KEY = "sk-no-key-required"


@dataclass(frozen=True)
class OpenAISettings:
    """Where to call; ``api_key`` is deliberately left out of ``repr``."""

    base_url: str | None
    model: str
    api_key: str | None = None

    def __repr__(self) -> str:
        return f"OpenAISettings(base_url={self.base_url!r}, model={self.model!r}, api_key=<hidden>)"

    @classmethod
    def resolve(
        cls,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        config: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> OpenAISettings:
        """Flags, then the config file (TOML or JSON; keys ``model``, ``base_url``,
        ``api_key``, ``api_key_env``; an ``[openai]`` table is also read), then the
        environment (``OPENAI_BASE_URL``, the key from ``api_key_env`` or
        ``OPENAI_API_KEY``, ``OPENAI_MODEL``)."""
        env = os.environ if environ is None else environ
        cfg: dict[str, Any] = load_config(config) if config else {}
        model = model or cfg.get("model") or env.get("OPENAI_MODEL")
        if not model:
            raise DetbalError("the openai backend needs a model: --model NAME (or `model` in --config)")
        base_url = base_url or cfg.get("base_url") or env.get("OPENAI_BASE_URL") or None
        key_env = api_key_env or cfg.get("api_key_env") or "OPENAI_API_KEY"
        key = api_key or cfg.get("api_key") or env.get(key_env) or None
        return cls(base_url=base_url, model=str(model), api_key=key)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON backend config; an ``[openai]`` table overrides top-level keys."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(p, f"cannot read config ({exc.strerror})") from None
    data: Any
    try:
        if p.suffix.lower() == ".json":
            import json

            data = json.loads(raw)
        else:
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
    except Exception as exc:
        raise InputError(p, f"not a valid config file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise InputError(p, "config must be a table of settings")
    out = {k: v for k, v in data.items() if not isinstance(v, dict)}
    section = data.get("openai")
    if isinstance(section, dict):
        out.update(section)
    return out


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
    except Exception:
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend:
    """Chat completions through the official ``openai`` client (its own retries off)."""

    name = "openai"

    def __init__(self, settings: OpenAISettings, *, timeout_s: float = 120.0) -> None:
        try:
            from openai import AsyncOpenAI
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DetbalError("the openai backend needs the `openai` package: pip install openai") from exc
        self.model = settings.model
        self.base_url = settings.base_url
        self._secret = settings.api_key
        # the client's own retries are off: the runner retries (and counts) every call
        self._client = AsyncOpenAI(api_key=settings.api_key or NO_KEY, base_url=settings.base_url,
                                   timeout=timeout_s, max_retries=0)
        self._token_field = "max_tokens"

    def describe(self) -> dict[str, Any]:
        """What may be stored in the run config (never the key)."""
        return {"base_url": self.base_url, "model": self.model}

    def _redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "<key>")
        return text

    async def complete(
        self, messages: Sequence[Message], params: SamplingParams, *, key: str | None = None
    ) -> Completion:
        import openai

        request: dict[str, Any] = dict(
            model=self.model, messages=list(messages), temperature=params.temperature,
            top_p=params.top_p,
        )
        if params.seed is not None:
            request["seed"] = params.seed
        if params.grammar is not None:
            # llama.cpp's server (and llama-cpp-python's) read a GBNF grammar from the body
            request["extra_body"] = {"grammar": params.grammar}
        t0 = time.perf_counter()
        for _ in range(2):  # a second go only to switch max_tokens -> max_completion_tokens
            request[self._token_field] = params.max_tokens
            try:
                resp = await self._client.chat.completions.create(**request)
                break
            except openai.BadRequestError as exc:
                msg = str(exc)
                if self._token_field == "max_tokens" and "max_completion_tokens" in msg:
                    del request["max_tokens"]
                    self._token_field = "max_completion_tokens"
                    continue
                raise BackendError(self._redact(f"bad request: {msg}"), retryable=False,
                                   status=400) from None
            except openai.APIStatusError as exc:
                raise self._status_error(exc) from None
            except openai.APITimeoutError:
                raise BackendError("request timed out", retryable=True) from None
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                raise BackendError(self._redact(f"connection error: {type(cause).__name__}: {cause}"),
                                   retryable=True) from None
            except openai.APIError as exc:  # e.g. a body that is not valid JSON
                raise BackendError(self._redact(f"bad response: {exc}"), retryable=True) from None
            except (ValueError, KeyError, TypeError) as exc:  # undecodable body
                raise BackendError(self._redact(f"bad response: {type(exc).__name__}: {exc}"),
                                   retryable=True) from None
        latency = time.perf_counter() - t0
        try:
            choice = resp.choices[0]
            text = choice.message.content or ""
            finish = choice.finish_reason
        except (AttributeError, IndexError, TypeError):
            raise BackendError("bad response: no choices", retryable=True) from None
        usage = getattr(resp, "usage", None)
        return Completion(
            text=text,
            prompt_tokens=getattr(usage, "prompt_tokens", None) if usage else None,
            completion_tokens=getattr(usage, "completion_tokens", None) if usage else None,
            latency_s=latency,
            finish_reason=finish,
            model=getattr(resp, "model", None) or self.model,
        )

    def _status_error(self, exc: Any) -> BackendError:
        status = int(getattr(exc, "status_code", 0) or 0)
        msg = self._redact(f"HTTP {status}: {getattr(exc, 'message', exc)}")
        if status in (401, 403):
            return BackendStop(f"credentials refused ({msg})", status=status)
        if status == 404:
            return BackendStop(f"model or endpoint not found ({msg})", status=status)
        retry_after = _retry_after(getattr(getattr(exc, "response", None), "headers", None))
        retryable = status in (408, 409, 425, 429) or status >= 500
        return BackendError(msg, retryable=retryable, status=status, retry_after=retry_after)

    async def aclose(self) -> None:
        await self._client.close()

