"""A small fault-injecting OpenAI-compatible server on loopback (stdlib asyncio only).

``POST .../chat/completions`` answers according to the request's ``model``:

* ``ok`` (or any name without ``plan:``): a normal completion.
* ``plan:A,B,C`` : the n-th request with this model name gets action
  ``plan[n % len(plan)]``.  Actions: ``ok``, ``429`` (with ``Retry-After``),
  ``500``, ``503``, ``401``, ``garbage`` (200 with a body that is not JSON),
  ``truncated`` (Content-Length larger than the body, then the connection closes),
  ``hang`` (never answers), ``delayX`` (ok after X seconds, e.g. ``delay0.02``).

The answer text of ``ok`` cycles through :attr:`FakeServer.answers` (one shared
counter), so the agent sees valid words, wrong sums, non-words, the seed word and
empty answers.  Every request is logged in :attr:`FakeServer.log` as
``(monotonic time, model, action)``.

Run in a thread (``with FakeServer() as srv: srv.url``) or as a process
(``python tests/servers/fake_openai.py --port 0`` prints ``PORT <n>``).  The tests share one
server for the session (``fake_openai`` in ``tests/conftest.py``), which calls :meth:`FakeServer.reset`
before each test: the log, the plan counters and the answer counter start again from nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import defaultdict
from typing import Any

DEFAULT_ANSWERS = (
    "ATTITUDE", "EXCELLENT", "cat", "TURKEY", "hello world", "PERSONAL",
    "BUZZY", "", "PROBLEMS", "42",
)


class FakeServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, retry_after: float = 0.05,
                 answers: tuple[str, ...] = DEFAULT_ANSWERS) -> None:
        self.host = host
        self.port = port
        self.retry_after = retry_after
        self.answers = answers
        self._defaults = (retry_after, answers)
        self.log: list[tuple[float, str, str]] = []
        self._counters: dict[str, int] = defaultdict(int)
        self._answer_i = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- lifecycle -------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start_async(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> FakeServer:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start_async())
            self._ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self, *, retry_after: float | None = None,
              answers: tuple[str, ...] | None = None) -> FakeServer:
        """Forget every request (log, plan counters, answer counter) and serve ``answers`` with
        ``Retry-After: retry_after`` from now on (``None``: the values the server was made with).
        Done on the server's own thread, between two requests."""
        def clear() -> None:
            self.log.clear()
            self._counters.clear()
            self._answer_i = 0
            self.retry_after = self._defaults[0] if retry_after is None else retry_after
            self.answers = self._defaults[1] if answers is None else answers

        if self._loop is None:
            clear()
        else:
            async def on_loop() -> None:
                clear()

            asyncio.run_coroutine_threadsafe(on_loop(), self._loop).result(5)
        return self

    def actions(self, model: str) -> list[str]:
        return [a for _, m, a in self.log if m == model]

    # -- HTTP ------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep = await self._respond(method, path, body, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            return
        finally:
            try:
                writer.close()
            except Exception:
                pass

    def _send(self, writer: asyncio.StreamWriter, status: int, payload: bytes,
              extra: dict[str, str] | None = None, length: int | None = None) -> None:
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "X")
        head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json",
                f"Content-Length: {len(payload) if length is None else length}"]
        for k, v in (extra or {}).items():
            head.append(f"{k}: {v}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

    async def _respond(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if method == "GET" and path.rstrip("/").endswith("/models"):
            self._send(writer, 200, json.dumps({"object": "list", "data": [
                {"id": "ok", "object": "model", "created": 0, "owned_by": "fake"}]}).encode())
            await writer.drain()
            return True
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            self._send(writer, 404, b'{"error": {"message": "not found"}}')
            await writer.drain()
            return True
        req: dict[str, Any] = json.loads(body or b"{}")
        model = str(req.get("model", "ok"))
        if model.startswith("plan:"):
            plan = model[5:].split(",")
            n = self._counters[model]
            self._counters[model] += 1
            action = plan[n % len(plan)]
        else:
            action = "ok"
        self.log.append((time.monotonic(), model, action))
        if action.startswith("delay"):
            await asyncio.sleep(float(action[5:]))
            action = "ok"
        if action == "ok":
            text = self.answers[self._answer_i % len(self.answers)]
            self._answer_i += 1
            n_prompt = sum(len(str(m.get("content", "")).split()) for m in req.get("messages", []))
            payload = {
                "id": f"cmpl-{self._answer_i}", "object": "chat.completion", "created": 0,
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": 1,
                          "total_tokens": n_prompt + 1},
            }
            self._send(writer, 200, json.dumps(payload).encode())
        elif action in ("429", "500", "503", "401"):
            status = int(action)
            extra = {"Retry-After": f"{self.retry_after:g}"} if status == 429 else None
            self._send(writer, status,
                       json.dumps({"error": {"message": f"fake {status}", "type": "fake"}}).encode(),
                       extra)
        elif action == "garbage":
            self._send(writer, 200, b"<html>this is {not json")
        elif action == "truncated":
            self._send(writer, 200, b'{"id": "cmpl-x", "choices": [{"ind', length=400)
            await writer.drain()
            return False
        elif action == "hang":
            await asyncio.sleep(3600)
            return False
        else:
            self._send(writer, 500, json.dumps({"error": {"message": f"bad action {action}"}}).encode())
        await writer.drain()
        return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--retry-after", type=float, default=0.05)
    args = ap.parse_args()

    async def serve() -> None:
        srv = FakeServer(port=args.port, retry_after=args.retry_after)
        await srv.start_async()
        print(f"PORT {srv.port}", flush=True)
        assert srv._server is not None
        async with srv._server:
            await srv._server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
