"""Real language models: llama.cpp's OpenAI-compatible server and the embedded model (SmolLM2-135M).

The server is started once for this module on a free loopback port and killed at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from detbal.agents.backends.base import SamplingParams  # noqa: E402
from detbal.agents.backends.local import LocalBackend  # noqa: E402
from detbal.agents.backends.openai_compat import OpenAIBackend, OpenAISettings  # noqa: E402
from detbal.agents.words import PromptTemplate  # noqa: E402
from detbal.cli import main  # noqa: E402
from detbal.store import ESCAPE_CATEGORIES, RunStore  # noqa: E402
from support.runs import check_complete, count, detbal_command, kill_9_after, outcomes, run_child  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(smollm2: Path):
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2), "--host", "127.0.0.1",
           "--port", str(port), "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "1024",
           "--model_alias", "smollm2", "--verbose", "False"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(url + "/models", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("llama_cpp.server did not start within 90 s")
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def test_openai_backend_against_llama_cpp_server(llama_server) -> None:
    async def go():
        b = OpenAIBackend(OpenAISettings(llama_server, "smollm2", None), timeout_s=60)
        msgs = PromptTemplate.load().render("BUZZY", 100)
        c = await b.complete(msgs, SamplingParams(temperature=0.0, max_tokens=8, seed=1))
        c2 = await b.complete(msgs, SamplingParams(temperature=0.0, max_tokens=8, seed=1))
        await b.aclose()
        return c, c2

    c, c2 = asyncio.run(go())
    assert c.text.strip() and c.text == c2.text  # greedy decoding is repeatable
    assert c.prompt_tokens and c.prompt_tokens > 20 and 1 <= c.completion_tokens <= 8
    assert c.finish_reason in ("stop", "length")


def test_word_run_against_llama_cpp_server(llama_server, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    store = tmp_path / "w.sqlite"
    args = ["-q", "run", "words", "--store", str(store), "--backend", "openai",
            "--base-url", llama_server, "--model", "smollm2", "--attempts", "16",
            "--concurrency", "4", "--max-tokens", "8", "--seed", "3", "--relaxed"]
    assert main(args) == 0
    with RunStore(store, create=False) as s:
        rows = list(s.iter_attempts())
        feats = s.state_features()
    assert sorted(r["seq"] for r in rows) == list(range(16))
    for r in rows:
        assert r["escape"] is None or r["escape"] in ESCAPE_CATEGORIES
        assert r["escape"] != "api_error"
        assert r["prompt_tokens"] > 0 and r["latency_s"] > 0
        params = json.loads(r["params"])
        assert params["max_tokens"] == 8 and params["temperature"] == 1.0
    for r in rows:
        if r["target"]:
            assert "letter_sum" in feats[r["target"]]


def test_embedded_backend_is_seeded_and_pooled(smollm2: Path) -> None:
    async def go():
        b = LocalBackend(n_threads=1, n_instances=2)
        msgs = PromptTemplate.load().render("TURKEY", 100)
        outs = await asyncio.gather(*[b.complete(msgs, SamplingParams(max_tokens=6, seed=s))
                                      for s in (1, 2, 1, 2)])
        await b.aclose()
        return outs

    outs = asyncio.run(go())
    assert outs[0].text == outs[2].text and outs[1].text == outs[3].text
    assert all(o.completion_tokens and o.completion_tokens <= 6 for o in outs)


def test_local_backend_through_the_cli_and_kill_free_rerun(smollm2: Path, tmp_path: Path) -> None:
    store = tmp_path / "l.sqlite"
    cmd = [*detbal_command("run", "words"), "--store", str(store), "--backend", "local",
           "--attempts", "12", "--concurrency", "2", "--instances", "1",
           "--relaxed", "--max-tokens", "6", "--seed", "4"]
    assert "12/12 attempts stored" in run_child(cmd, timeout=180).stdout


# -- constrained decoding (grammar) ---------------------------------------------------

def _word_grammar():
    from detbal.agents.words import WordGrammar
    from detbal.errors import InputError

    try:
        return WordGrammar.load(100)
    except InputError:
        pytest.skip("no word list (Debian: apt-get install wamerican)")


def _check_constrained_words(store: Path, n: int) -> list[dict]:
    wg = _word_grammar()
    with RunStore(store, create=False) as s:
        rows = sorted(s.iter_attempts(), key=lambda r: r["seq"])
        (run,) = s.runs()
    assert [r["seq"] for r in rows] == list(range(n))
    assert run.config["constrain"] is True and run.config["grammar"] == wg.sha256
    for r in rows:
        # every answer is a new dictionary word of value 100: no escape at all
        assert r["escape"] is None and r["target"] in wg.words and r["target"] != r["source"], r
        assert json.loads(r["params"])["grammar"] == hashlib.sha256(
            wg.for_source(r["source"]).encode()).hexdigest()
    return rows


def test_constrained_words_on_the_llama_cpp_server(llama_server, tmp_path, monkeypatch) -> None:
    """--constrain sends the grammar in the request body; llama_cpp.server's chat endpoint honours it."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    store = tmp_path / "w.sqlite"
    common = ["-q", "run", "words", "--backend", "openai", "--base-url", llama_server,
              "--model", "smollm2", "--attempts", "12", "--concurrency", "2", "--seed", "3"]
    assert main([*common, "--store", str(store), "--constrain"]) == 0
    rows = _check_constrained_words(store, 12)
    assert len({r["target"] for r in rows}) >= 4
    # without --constrain the same server answers freely (the paper's escapes come back)
    free = tmp_path / "free.sqlite"
    assert main([*common, "--store", str(free), "--max-tokens", "8"]) == 0
    with RunStore(free, create=False) as s:
        (run,) = s.runs()
        assert run.config["constrain"] is False
        assert all(json.loads(r["params"])["grammar"] is None for r in s.iter_attempts())


def test_constrained_local_words_survive_kill_9_and_replay(smollm2: Path, tmp_path: Path) -> None:
    """The embedded model's default (constrained): kill -9, the same command resumes; replay reproduces."""
    _word_grammar()
    store = tmp_path / "k.sqlite"
    n = 30
    base = [*detbal_command("run", "words"), "--concurrency", "1",
            "--instances", "1", "--seed", "4"]
    cmd = [*base, "--store", str(store), "--backend", "local", "--attempts", str(n)]
    assert 5 <= kill_9_after(cmd, store, 5, timeout=120) < n
    run_child(cmd, timeout=180)
    _check_constrained_words(store, n)
    # offline replay of the constrained run: the same outcomes, recorded as constrained
    replayed = tmp_path / "r.sqlite"
    rep = [*base, "--store", str(replayed), "--backend", "replay", "--replay-from", str(store),
           "--attempts", str(n)]
    run_child(rep)
    with RunStore(replayed, create=False) as s:
        (run,) = s.runs()
    assert run.config["constrain"] is True
    assert outcomes(replayed) == outcomes(store)


def test_constrained_fit_on_the_embedded_model_budget_resume_and_replay(smollm2: Path, nikuradse: Path,
                                                                        tmp_path: Path) -> None:
    """Every constrained answer parses into three ansatzes; the call budget stops between rounds;
    the same command resumes; the whole answers stored once per call replay the study offline."""
    live = tmp_path / "fit.sqlite"
    base = ["-q", "run", "fit", "--islands", "1", "--cycles", "1", "--rounds", "2", "--starts", "10",
            "--seed", "3", "--concurrency", "1", "--attempts", "6"]
    assert main([*base, "--store", str(live), "--backend", "local", "--budget-calls", "1"]) == 3
    assert count(live) == 3  # one whole round, nothing of the next
    assert main([*base, "--store", str(live), "--backend", "local"]) == 0
    with RunStore(live, create=False) as s:
        (run,) = s.runs()
        rows = sorted(s.iter_attempts(), key=lambda r: r["seq"])
    assert run.config["constrain"] is True and run.config["fit"]["mode"] == "one-call"
    assert [r["seq"] for r in rows] == list(range(6))
    for r in rows:
        params = json.loads(r["params"])
        assert params["grammar"] == run.config["grammar"]
        assert r["escape"] not in ("empty", "invalid_ansatz"), r  # the grammar makes them impossible
        if r["seq"] % 3 == 0:  # the whole answer, once per call
            assert params["answer"].startswith("IDEA 1\nREASONING: ") and r["raw_answer"] in params["answer"]
        else:
            assert params["answer_in"] == r["seq"] - r["seq"] % 3
    replayed = tmp_path / "replay.sqlite"
    rep = [*base, "--store", str(replayed), "--backend", "replay", "--replay-from", str(live)]
    assert main(rep) == 0
    assert outcomes(replayed) == outcomes(live)
    # more than was recorded: a clean stop, nothing invented
    assert main([*rep, "--attempts", "9"]) == 1  # the last --attempts counts
    assert outcomes(replayed) == outcomes(live)


@pytest.mark.slow
def test_constrained_fit_on_the_embedded_model_survives_kill_9(smollm2: Path, nikuradse: Path,
                                                                tmp_path: Path) -> None:
    """kill -9 in the middle of a constrained fit study; the same command completes it, whole rounds
    only, every call's answer stored once."""
    store = tmp_path / "k.sqlite"
    n = 12
    cmd = [*detbal_command("run", "fit"), "--store", str(store), "--backend", "local",
           "--islands", "2", "--cycles", "1", "--rounds", "2", "--starts", "10",
           "--seed", "5", "--concurrency", "1", "--attempts", str(n)]
    assert 3 <= kill_9_after(cmd, store, 3, timeout=180) < n
    run_child(cmd, timeout=300)
    rows = check_complete(store, n)
    calls: dict[int, int] = {}
    for r in rows:
        p = json.loads(r["params"])
        assert r["escape"] not in ("empty", "invalid_ansatz")
        carrier = r["seq"] if "answer" in p else p["answer_in"]
        calls[carrier] = calls.get(carrier, 0) + ("answer" in p)
    assert all(v == 1 for v in calls.values())  # each call's answer exactly once
