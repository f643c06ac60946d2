"""Agent runs in child processes: start, wait until some attempts are stored, kill, check."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from detbal.store import RunStore
from support import child_env


def count(store: Path) -> int:
    """Attempts stored so far (0 while the store is still being created)."""
    if not store.exists():
        return 0
    try:
        with RunStore(store, create=False) as s:
            return len(list(s.iter_attempts()))
    except Exception:  # the store is being created
        return 0


def start_and_wait(cmd: list[str], store: Path, at_least: int, *, env: dict[str, str] | None = None,
                   timeout: float = 60.0) -> subprocess.Popen:
    """Start ``cmd`` and return once ``at_least`` attempts are stored (the caller kills it)."""
    proc = subprocess.Popen(cmd, env=env or child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while count(store) < at_least:
        assert proc.poll() is None, proc.communicate()
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the run did not start")
        time.sleep(0.05)
    return proc


def run_child(cmd: list[str], *, returncode: int = 0, env: dict[str, str] | None = None,
              timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``cmd`` to its end in a child process; it must exit with ``returncode``."""
    done = subprocess.run(cmd, check=False, env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == returncode, done.stderr
    return done


def kill_9_after(cmd: list[str], store: Path, at_least: int, *, env: dict[str, str] | None = None,
                 timeout: float = 60.0) -> int:
    """Run ``cmd`` until ``at_least`` attempts are stored, kill -9 it; the attempts stored then."""
    proc = start_and_wait(cmd, store, at_least, env=env, timeout=timeout)
    proc.kill()
    proc.wait(30)
    return count(store)


def script(test_file: str, *args: str) -> list[str]:
    """A test file run as a script (its ``__main__`` block) in a child process."""
    return [sys.executable, test_file, *args]


def check_complete(store: Path, n: int) -> list[dict]:
    """One run with exactly ``n`` attempts, seqs ``0 .. n-1``, none twice; its rows by seq."""
    with RunStore(store, create=False) as s:
        rows = sorted(s.iter_attempts(), key=lambda r: r["seq"])
        assert len(s.runs()) == 1
    assert [r["seq"] for r in rows] == list(range(n))
    return rows


def outcomes(store: Path) -> list[tuple]:
    """``(seq, source, raw_answer, target, escape)`` of every stored attempt, by seq: what a
    replay must reproduce."""
    with RunStore(store, create=False) as s:
        rows = sorted(s.iter_attempts(), key=lambda r: r["seq"])
    return [(r["seq"], r["source"], r["raw_answer"], r["target"], r["escape"]) for r in rows]


def detbal_command(*args: str) -> list[str]:
    """``detbal -q ARGS`` as a child process of this interpreter (run with :func:`run_child`)."""
    return [sys.executable, "-m", "detbal.cli", "-q", *args]


def words_command(server_url: str, store: Path, attempts: int, *extra: str) -> list[str]:
    """``detbal run words`` against the fake OpenAI server, four calls at a time."""
    return [*detbal_command("run", "words"), "--store", str(store), "--backend", "openai",
            "--base-url", server_url, "--model", "plan:delay0.02",
            "--attempts", str(attempts), "--concurrency", "4", "--seed", "11", *extra]
