"""Runs that lose nothing: kill -9 and Ctrl-C mid-run, then the same command again; replay."""

from __future__ import annotations

import signal

from support.runs import check_complete, count, kill_9_after, outcomes, run_child, start_and_wait, words_command

from detbal.cli import main
from detbal.store import RunStore


def test_kill_9_then_the_same_command_continues(fake_openai, tmp_path) -> None:
    store = tmp_path / "k.sqlite"
    n = 120
    cmd = words_command(fake_openai.url, store, n)
    assert 25 <= kill_9_after(cmd, store, 25) < n
    run_child(cmd)
    rows = check_complete(store, n)
    # prompt words of the resumed part come from valid states found before or after the kill
    valid = {r["target"] for r in rows if r["target"]} | {"BUZZY"}
    assert {r["source"] for r in rows} <= valid
    # running it once more changes nothing
    run_child(cmd)
    assert count(store) == n


def test_ctrl_c_stops_cleanly_and_prints_how_to_resume(fake_openai, tmp_path) -> None:
    store = tmp_path / "c.sqlite"
    n = 150
    cmd = words_command(fake_openai.url, store, n)
    proc = start_and_wait(cmd, store, 10)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "to continue: detbal" in out and "--attempts 150" in out
    assert count(store) < n
    run_child(cmd)
    check_complete(store, n)


def test_replay_reproduces_a_run_offline_and_never_invents(fake_openai, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    live = tmp_path / "live.sqlite"
    base = ["-q", "run", "words", "--concurrency", "1", "--seed", "5"]
    assert main([*base, "--store", str(live), "--backend", "openai", "--base-url", fake_openai.url,
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


def test_replay_into_the_same_store(fake_openai, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    store = tmp_path / "same.sqlite"
    base = ["-q", "run", "words", "--concurrency", "1", "--seed", "2", "--store", str(store)]
    assert main([*base, "--backend", "openai", "--base-url", fake_openai.url, "--model", "ok",
                 "--attempts", "15"]) == 0
    assert main([*base, "--backend", "replay", "--attempts", "15"]) == 0
    with RunStore(store, create=False) as s:
        runs = s.runs()
        by_run = {r.id: [] for r in runs}
        for row in s.iter_attempts():
            by_run[row["run_id"]].append((row["seq"], row["source"], row["raw_answer"]))
    assert [r.backend for r in runs] == ["openai", "replay"]
    assert sorted(by_run[1]) == sorted(by_run[2])
