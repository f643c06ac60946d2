"""Shared test set-up: keep the two cores from being oversubscribed."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from support import DATA, SHARED  # noqa: E402


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the checkout (datasets the project may read)."""
    if not SHARED.exists():
        pytest.skip("../shared is not beside this checkout")
    return SHARED


# -- shared data: the paper's Claude-4 counts, a reversible and a driven chain ----------------


@pytest.fixture(scope="session")
def claude_counts():
    """The paper's Claude-4 word counts (5 states; 20,000 attempts, uniform N0 = 4,000)."""
    import detbal

    return detbal.load_counts(DATA / "claude4.csv")


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
