"""Throughput of the agent runner, each figure beside a baseline without the runner.

1. Word task on the embedded model (SmolLM2-135M via llama.cpp), the run as a whole
   (prompt choice, call, classification, one committed transaction per attempt),
   against a plain sequential loop calling llama.cpp directly with the same prompts.
   Target: >= 4 attempts/s on 2 cores.
2. Per-call overhead of the runner against a loopback OpenAI-compatible server that
   answers instantly (tests/servers/fake_openai.py in its own process), at
   concurrency 1 and 64, against the bare ``openai`` client (a sequential loop, and
   ``asyncio.gather`` under a semaphore of 64).  Target: < 2 ms per call.

Usage: python bench/bench_agents.py [--model-attempts 200] [--calls 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent


def bench_model(n: int, instances: int, concurrency: int) -> tuple[float, float]:
    import llama_cpp

    from detbal.agents.backends.base import SamplingParams
    from detbal.agents.backends.local import LocalBackend, packaged_model_path
    from detbal.agents.words import PromptTemplate, WordsConfig, classify, run_words
    from detbal.store import RunStore

    template = PromptTemplate.packaged("words_small.txt")
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=8)

    # baseline: one instance, a sequential loop, no store, no runner
    llm = llama_cpp.Llama(model_path=str(packaged_model_path()), n_ctx=1024, n_threads=1,
                          n_threads_batch=1, verbose=False)
    words = ["BUZZY"]
    t0 = time.perf_counter()
    for i in range(n):
        w = words[i % len(words)]
        r = llm.create_chat_completion(messages=template.render(w, 100), temperature=1.0,
                                       top_p=1.0, max_tokens=8, seed=i)
        out = classify(r["choices"][0]["message"]["content"] or "", w, 100, relaxed=True)
        if out.target and out.target not in words:
            words.append(out.target)
    base = n / (time.perf_counter() - t0)
    llm.close()

    async def runner() -> float:
        backend = LocalBackend(n_threads=1, n_instances=instances)
        await backend._ensure_pool()  # load outside the timing, as the baseline does
        with tempfile.TemporaryDirectory() as d, RunStore(Path(d) / "b.sqlite") as store:
            rid = store.create_run("words", backend.model, "local", {})
            t = time.perf_counter()
            await run_words(store, rid, backend, WordsConfig(relaxed=True, seed=1, sampling=sampling),
                            attempts=n, template=template, concurrency=concurrency,
                            handle_signals=False)
            rate = n / (time.perf_counter() - t)
        await backend.aclose()
        return rate

    return asyncio.run(runner()), base


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests/servers/fake_openai.py"), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    port = int(line.split()[1])
    return proc, f"http://127.0.0.1:{port}/v1"


def bench_overhead(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """(runner ms/call, bare client ms/call)."""
    from openai import AsyncOpenAI

    from detbal.agents.backends.base import SamplingParams
    from detbal.agents.backends.openai_compat import OpenAIBackend, OpenAISettings
    from detbal.agents.words import PromptTemplate, WordsConfig, run_words
    from detbal.store import RunStore

    template = PromptTemplate.load()
    msgs = template.render("BUZZY", 100)

    async def bare() -> float:
        client = AsyncOpenAI(api_key="sk-x", base_url=url, max_retries=0)
        await client.chat.completions.create(model="ok", messages=msgs, max_tokens=16)  # warm-up
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await client.chat.completions.create(model="ok", messages=msgs, temperature=1.0,
                                                     top_p=1.0, max_tokens=16, seed=i)

        t = time.perf_counter()
        if concurrency == 1:
            for i in range(n):
                await one(i)
        else:
            await asyncio.gather(*(one(i) for i in range(n)))
        dt = time.perf_counter() - t
        await client.close()
        return dt / n * 1e3

    async def ours() -> float:
        backend = OpenAIBackend(OpenAISettings(url, "ok", "sk-x"))
        await backend.complete(msgs, SamplingParams(max_tokens=16))  # warm-up
        with tempfile.TemporaryDirectory() as d, RunStore(Path(d) / "o.sqlite") as store:
            rid = store.create_run("words", "ok", "openai", {})
            t = time.perf_counter()
            res, _ = await run_words(store, rid, backend, WordsConfig(seed=1), attempts=n,
                                     template=template, concurrency=concurrency,
                                     handle_signals=False)
            dt = time.perf_counter() - t
            assert res.committed == n
        await backend.aclose()
        return dt / n * 1e3

    b = asyncio.run(bare())
    o = asyncio.run(ours())
    return o, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-attempts", type=int, default=200)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--skip-model", action="store_true")
    args = ap.parse_args()
    print(f"# bench_agents on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    if not args.skip_model:
        ours, base = bench_model(args.model_attempts, args.instances, 2 * args.instances)
        print(f"word task, embedded SmolLM2-135M, {args.model_attempts} attempts:")
        print(f"  runner ({args.instances} instances x 1 thread, concurrency {2 * args.instances},"
              f" committed to a store): {ours:6.2f} attempts/s   (target >= 4)")
        print(f"  baseline (1 instance, sequential loop, no store):       {base:6.2f} attempts/s")
        print(f"  ratio runner/baseline: {ours / base:.2f}")
    proc, url = start_server()
    try:
        print(f"runner overhead against an instant loopback server, {args.calls} calls:")
        for c in (1, 64):
            o, b = bench_overhead(url, args.calls, c)
            print(f"  concurrency {c:2d}: runner {o:.3f} ms/call, bare openai client {b:.3f} ms/call,"
                  f" overhead {o - b:+.3f} ms/call (target < 2), ratio {o / b:.2f}")
    finally:
        proc.terminate()
        proc.wait(5)


if __name__ == "__main__":
    main()
