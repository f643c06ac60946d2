"""Runs that lose nothing: kill -9 and Ctrl-C mid-run, then the same command again; replay."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from servers.fake_openai import FakeServer

from support import child_env
from support.runs import check_complete, count, start_and_wait, words_command

from detbal.cli import main
from detbal.store import RunStore

@pytest.fixture(scope="module")
def server():
    with FakeServer() as srv:
        yield srv


def command(server: FakeServer, store: Path, attempts: int, *extra: str) -> list[str]:
    return words_command(server.url, store, attempts, *extra)


def test_kill_9_then_the_same_command_continues(server, tmp_path) -> None:
    store = tmp_path / "k.sqlite"
    n = 120
    cmd = command(server, store, n)
    proc = start_and_wait(cmd, store, 25)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed_at = count(store)
    assert 25 <= killed_at < n
    done = subprocess.run(cmd, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = check_complete(store, n)
    # prompt words of the resumed part come from valid states found before or after the kill
    valid = {r["target"] for r in rows if r["target"]} | {"BUZZY"}
    assert {r["source"] for r in rows} <= valid
    # running it once more changes nothing
    again = subprocess.run(cmd, env=child_env(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and count(store) == n


def test_ctrl_c_stops_cleanly_and_prints_how_to_resume(server, tmp_path) -> None:
    store = tmp_path / "c.sqlite"
    n = 150
    cmd = command(server, store, n)
    proc = start_and_wait(cmd, store, 10)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "to continue: detbal" in out and "--attempts 150" in out
    stopped_at = count(store)
    assert stopped_at < n
    done = subprocess.run(cmd, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    check_complete(store, n)


def outcomes(store: Path) -> list[tuple]:
    with RunStore(store, create=False) as s:
        rows = sorted(s.iter_attempts(), key=lambda r: r["seq"])
    return [(r["seq"], r["source"], r["raw_answer"], r["target"], r["escape"]) for r in rows]


def test_replay_reproduces_a_run_offline_and_never_invents(server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    live = tmp_path / "live.sqlite"
    base = ["-q", "run", "words", "--concurrency", "1", "--seed", "5"]
    assert main([*base, "--store", str(live), "--backend", "openai", "--base-url", server.url,
                 "--model", "ok", "--attempts", "40"]) == 0
    replayed = tmp_path / "replay.sqlite"
    assert main([*base, "--store", str(replayed), "--backend", "replay", "--replay-from", str(live),
                 "--attempts", "20"]) == 0
    # resumed replay continues with the answers not used yet
    assert main([*base, "--store", str(replayed), "--backend", "replay", "--replay-from", str(live),
                 "--attempts", "40"]) == 0
    assert outcomes(replayed) == outcomes(live)
    # asking for more than was recorded stops cleanly instead of inventing answers
    rc = main([*base, "--store", str(replayed), "--backend", "replay", "--replay-from", str(live),
               "--attempts", "60"])
    assert rc == 1
    assert outcomes(replayed) == outcomes(live)
    # a different seed draws other prompt words but only ever serves recorded answers
    other = tmp_path / "other.sqlite"
    main([*base[:-1], "6", "--store", str(other), "--backend", "replay", "--replay-from", str(live),
          "--attempts", "40"])
    recorded = {(o[1], o[2]) for o in outcomes(live)}
    assert all((o[1], o[2]) in recorded for o in outcomes(other))


def test_replay_into_the_same_store(server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    store = tmp_path / "same.sqlite"
    base = ["-q", "run", "words", "--concurrency", "1", "--seed", "2", "--store", str(store)]
    assert main([*base, "--backend", "openai", "--base-url", server.url, "--model", "ok",
                 "--attempts", "15"]) == 0
    assert main([*base, "--backend", "replay", "--attempts", "15"]) == 0
    with RunStore(store, create=False) as s:
        runs = s.runs()
        by_run = {r.id: [] for r in runs}
        for row in s.iter_attempts():
            by_run[row["run_id"]].append((row["seq"], row["source"], row["raw_answer"]))
    assert [r.backend for r in runs] == ["openai", "replay"]
    assert sorted(by_run[1]) == sorted(by_run[2])
