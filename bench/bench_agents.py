"""Throughput of the agent runner and what constrained decoding buys, each beside a baseline.

1. Word task on the embedded model (SmolLM2-135M via llama.cpp), the run as a whole
   (prompt choice, call, classification, one committed transaction per attempt),
   against a plain sequential loop calling llama.cpp directly with the same prompts.
   Target: >= 4 attempts/s on 2 cores.
2. Per-call overhead of the runner against a loopback OpenAI-compatible server that
   answers instantly (tests/servers/fake_openai.py in its own process), at
   concurrency 1 and 64, against the bare ``openai`` client (a sequential loop, and
   ``asyncio.gather`` under a semaphore of 64).  Target: < 2 ms per call.
3. Grammar-constrained decoding on the embedded model (issue 7), constrained beside
   unconstrained in the same run:
   * words, strict, the paper's prompt: fraction of attempts that are new dictionary
     words of value exactly 100 (target >= 90%), attempts/s (>= 2), distinct words in
     200 attempts (>= 20);
   * fit (Nikuradse, the paper's island search): fraction of attempts that are valid
     ansatz states (>= 90%), wall time of a 150-attempt run, model load included
     (<= 300 s), and the cycle structure of a longer run (``--fit-long``, the issue
     asks for 2,000 attempts): states sourced more than once, pairs seen both ways,
     triplets (all six edges seen; the paper's fit cut: every count > 1).

Usage: python bench/bench_agents.py [--model-attempts 200] [--calls 1000]
       [--words-attempts 200] [--fit-attempts 150] [--fit-baseline-attempts 30]
       [--fit-long 0] [--skip-model] [--skip-overhead] [--skip-constrained]
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
from typing import Any

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


def bench_words_constrained(n: int, instances: int, constrain: bool) -> dict:
    """Strict words with the paper's prompt: rate, share of new dictionary words of value 100, distinct."""
    from detbal.agents.backends.base import SamplingParams
    from detbal.agents.backends.local import LocalBackend
    from detbal.agents.words import PromptTemplate, WordGrammar, WordsConfig, run_words
    from detbal.store import RunStore

    dictionary = set(WordGrammar.load(100).words)
    config = WordsConfig(seed=1, constrain=constrain,
                         sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=16))

    async def go() -> dict:
        backend = LocalBackend(n_threads=1, n_instances=instances)
        await backend._ensure_pool()
        with tempfile.TemporaryDirectory() as d, RunStore(Path(d) / "w.sqlite") as store:
            rid = store.create_run("words", backend.model, "local", config.as_config())
            t = time.perf_counter()
            await run_words(store, rid, backend, config, attempts=n, template=PromptTemplate.load(),
                            concurrency=2 * instances, handle_signals=False)
            dt = time.perf_counter() - t
            rows = list(store.iter_attempts([rid]))
        await backend.aclose()
        good = [r for r in rows if r["target"] in dictionary and r["target"] != r["source"]]
        escapes: dict[str, int] = {}
        for r in rows:
            if r["escape"]:
                escapes[r["escape"]] = escapes.get(r["escape"], 0) + 1
        return {"rate": n / dt, "good": len(good) / n, "distinct": len({r["target"] for r in good}),
                "escapes": escapes}

    return asyncio.run(go())


def cycle_structure(store: Any, run_id: int, first: int | None = None, states: str = "text") -> dict:
    """States sourced more than once, pairs seen both ways, triplets (paper's cuts 0 and 1),
    over the run's attempts with seq < ``first`` (all by default); ``states="canonical"``:
    one state per functional form (``detbal analyze --states canonical``)."""
    from detbal.analysis.balance import triplet_test
    from detbal.analysis.counts import CountRows, TransitionCounts, estimate_kernel, merge_states, reverse_pairs

    rows = CountRows(tuple((r["source"], r["target"], r["escape"], r["count"]) for r in store.iter_attempts([run_id])
                           if first is None or r["seq"] < first))
    if states == "canonical":
        rows = merge_states(rows, store.state_canonical())
    counts = TransitionCounts.from_rows(rows.rows)
    pairs, _ = reverse_pairs(counts.src, counts.dst, counts.n_states)
    kernel = estimate_kernel(counts, "empirical", min_source_count=0)
    return {"states": counts.n_states, "sourced_twice": int((counts.attempts > 1).sum()),
            "pairs": len(pairs), "triplets": triplet_test(kernel, min_count=0).n_triplets,
            "triplets_cut1": triplet_test(kernel, min_count=1).n_triplets}


def bench_fit(n: int, instances: int, constrain: bool, mode: str) -> dict:
    """A fit study from scratch (model and data loaded inside the timing)."""
    from detbal.agents.backends.local import LocalBackend
    from detbal.agents.fit import FitConfig, run_fit
    from detbal.store import RunStore

    config = FitConfig(mode=mode, constrain=constrain, seed=1)

    async def go() -> dict:
        t = time.perf_counter()
        backend = LocalBackend(n_threads=1, n_instances=instances)
        with tempfile.TemporaryDirectory() as d, RunStore(Path(d) / "f.sqlite") as store:
            rid = store.create_run("fit", backend.model, "local", {"fit": config.as_dict()})
            await run_fit(store, rid, [backend], config, attempts=n, concurrency=2 * instances)
            dt = time.perf_counter() - t
            rows = list(store.iter_attempts([rid]))
            cycles = cycle_structure(store, rid)
            growth = [(k, cycle_structure(store, rid, k)) for k in (n // 4, n // 2)] if n >= 400 else []
            forms = cycle_structure(store, rid, states="canonical")
        await backend.aclose()
        escapes: dict[str, int] = {}
        for r in rows:
            if r["escape"]:
                escapes[r["escape"]] = escapes.get(r["escape"], 0) + 1
        valid = sum(1 for r in rows if r["target"] is not None)
        return {"wall": dt, "valid": valid / len(rows), "escapes": escapes, "per_attempt": dt / n,
                "growth": growth, "forms": forms, **cycles}

    return asyncio.run(go())


def constrained(args: argparse.Namespace) -> None:
    inst = args.instances
    n = args.words_attempts
    print(f"constrained decoding, embedded SmolLM2-135M ({inst} instances x 1 thread, T=1.0,"
          " top_p 1, top_k 40, min_p 0.05):")
    print(f"  words, strict, paper's prompt, {n} attempts each:")
    for c in (True, False):
        r = bench_words_constrained(n, inst, c)
        label = "constrained  " if c else "unconstrained"
        print(f"    {label}: new dictionary words of value 100 {r['good']:6.1%} (target >= 90%),"
              f" {r['rate']:5.2f} attempts/s (>= 2), distinct {r['distinct']:3d} (>= 20);"
              f" escapes {r['escapes'] or 'none'}")
    print("  fit, Nikuradse, paper's island search (8 islands), model and data load included:")
    rc = bench_fit(args.fit_attempts, inst, True, "one-call")
    print(f"    constrained one-call, {args.fit_attempts} attempts: valid states {rc['valid']:6.1%}"
          f" (target >= 90%), wall {rc['wall']:6.1f} s (<= 300), {rc['per_attempt']:.2f} s/attempt;"
          f" escapes {rc['escapes'] or 'none'}")
    nb = args.fit_baseline_attempts
    if nb:
        for mode in ("two-call", "one-call"):
            rb = bench_fit(nb, inst, False, mode)
            print(f"    unconstrained {mode}, {nb} attempts: valid states {rb['valid']:6.1%},"
                  f" {rb['per_attempt']:.2f} s/attempt (150 attempts: ~{150 * rb['per_attempt']:.0f} s);"
                  f" escapes {rb['escapes'] or 'none'}")
    runs = [(args.fit_attempts, rc)]
    if args.fit_long:
        runs.append((args.fit_long, bench_fit(args.fit_long, inst, True, "one-call")))
    for k, r in runs:
        print(f"    cycle structure, constrained, {k} attempts ({r['wall']:.0f} s):")
        for kk, c in [*r["growth"], (k, r)]:
            print(f"      first {kk:5d} attempts: {c['states']} states, {c['sourced_twice']} sourced more"
                  f" than once, {c['pairs']} pairs seen both ways, {c['triplets']} triplets"
                  f" ({c['triplets_cut1']} with every count > 1)")
        c = r["forms"]
        print(f"      one state per functional form (--states canonical): {c['states']} states,"
              f" {c['sourced_twice']} sourced more than once, {c['pairs']} pairs seen both ways,"
              f" {c['triplets']} triplets ({c['triplets_cut1']} with every count > 1)")


def report_stores(paths: list[str], every: int) -> None:
    """The cycle structure of stored fit runs (the long studies) every ``every`` attempts."""
    from detbal.store import RunStore

    for path in paths:
        with RunStore(path, create=False) as store:
            for run in store.runs():
                n = sum(1 for _ in store.iter_attempts([run.id]))
                sel = run.config.get("fit", {})
                print(f"  {path} run {run.id}: {n} attempts, select {sel.get('select', 'uniform')}"
                      f" ({sel.get('select_estimator')}, tau {sel.get('select_tau')}), population"
                      f" {sel.get('population')}, temperature {sel.get('temperature')}")
                for k in [*range(every, n, every), n]:
                    t, c = cycle_structure(store, run.id, k), cycle_structure(store, run.id, k, "canonical")
                    print(f"    first {k:5d}: states {t['states']} ({c['states']}), sourced more than once"
                          f" {t['sourced_twice']} ({c['sourced_twice']}), pairs seen both ways {t['pairs']}"
                          f" ({c['pairs']}), triplets {t['triplets']} ({c['triplets']}), every count > 1"
                          f" {t['triplets_cut1']} ({c['triplets_cut1']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-attempts", type=int, default=200)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-constrained", action="store_true")
    ap.add_argument("--words-attempts", type=int, default=200)
    ap.add_argument("--fit-attempts", type=int, default=150)
    ap.add_argument("--fit-baseline-attempts", type=int, default=30)
    ap.add_argument("--fit-long", type=int, default=0, metavar="N",
                    help="also a constrained fit run of N attempts for its cycle structure (2000 in the issue)")
    ap.add_argument("--cycles-of", nargs="+", metavar="STORE", default=None,
                    help="only print the cycle structure of stored fit runs (in brackets: one state per"
                    " functional form), every --cycles-every attempts")
    ap.add_argument("--cycles-every", type=int, default=500)
    args = ap.parse_args()
    if args.cycles_of:
        report_stores(args.cycles_of, args.cycles_every)
        return
    print(f"# bench_agents on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    if not args.skip_constrained:
        os.environ.setdefault("DETBAL_DATA_DIR", str(REPO.parent / "shared" / "datasets" / "nikuradse"))
        constrained(args)
    if not args.skip_model:
        ours, base = bench_model(args.model_attempts, args.instances, 2 * args.instances)
        print(f"word task, embedded SmolLM2-135M, {args.model_attempts} attempts:")
        print(f"  runner ({args.instances} instances x 1 thread, concurrency {2 * args.instances},"
              f" committed to a store): {ours:6.2f} attempts/s   (target >= 4)")
        print(f"  baseline (1 instance, sequential loop, no store):       {base:6.2f} attempts/s")
        print(f"  ratio runner/baseline: {ours / base:.2f}")
    if args.skip_overhead:
        return
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
