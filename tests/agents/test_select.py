"""Potential-guided selection of the prompt state (detbal.agents.select): the draw follows
exp(-V/tau) with its floor, refits are pure functions of the stored prefix, guided runs on
the embedded model record how each source was drawn, and kill -9 then the same command
continues the same selection with nothing lost or duplicated."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import NIKURADSE as DATA
from support.fit import ScriptedBackendForBookkeeping, bare_call, table
from support.runs import (
    check_complete,
    count,
    detbal_command,
    kill_9_after,
    run_child,
    script,
    words_command,
)

from detbal.agents.fit import FitConfig, run_fit
from detbal.agents.select import (
    Guide,
    Selection,
    draw_index,
    estimate,
    probabilities,
    refit_point,
)
from detbal.errors import DetbalError
from detbal.store import RunStore

def guided_command(server_url: str, store: Path, attempts: int, every: int) -> list[str]:
    """``detbal run words`` on the fake server, one call at a time, potential-guided draws."""
    cmd = words_command(server_url, store, attempts, "--select", "potential", "--select-every",
                        str(every), "--select-tau", "0.5")
    cmd[cmd.index("--concurrency") + 1] = "1"
    return cmd


# -- the draw --------------------------------------------------------------------

def test_draw_follows_exp_minus_v_over_tau_with_the_floor() -> None:
    cands = ["A", "B", "C", "D", "E"]
    V = {"A": 0.0, "B": 1.0, "C": 2.5, "D": -0.5}  # E: no estimate -> explored as min V = -0.5
    tau, floor = 0.7, 0.2
    p, own = probabilities(cands, V, tau, floor)
    w = np.exp(-np.array([0.0, 1.0, 2.5, -0.5, -0.5]) / tau)
    want = (1 - floor) * w / w.sum() + floor / 5
    assert np.allclose(p, want) and own == [0.0, 1.0, 2.5, -0.5, None]
    rng = np.random.default_rng(7)
    n = 40000
    freq = np.bincount([draw_index(p, u) for u in rng.random(n)], minlength=5) / n
    assert np.all(np.abs(freq - want) < 4 * np.sqrt(want * (1 - want) / n))
    # the floor: even a state far uphill keeps floor/n
    p_hi, _ = probabilities(["A", "B"], {"A": 0.0, "B": 50.0}, 1.0, 0.1)
    assert p_hi[1] == pytest.approx(0.05)
    # no estimate at all: uniform
    p_u, _ = probabilities(["A", "B", "C"], {}, 1.0, 0.1)
    assert np.allclose(p_u, 1 / 3)
    # tau -> large: uniform; floor 1: uniform whatever V
    assert np.allclose(probabilities(cands, V, 1e9, 0.0)[0], 0.2)
    assert np.allclose(probabilities(cands, V, 0.1, 1.0)[0], 0.2)


def test_selection_settings_are_checked_and_stored() -> None:
    s = Selection("potential", tau=0.5, floor=0.05, every=7, estimator="least-action")
    assert Selection.from_config(s.as_config()) == s
    assert Selection().as_config() == {"select": "uniform", "select_tau": None, "select_floor": None,
                                       "select_every": None, "select_estimator": None}
    assert Selection.from_config({}) == Selection()
    for bad in ({"rule": "best"}, {"tau": 0}, {"floor": 1.5}, {"every": 0}, {"estimator": "x"}):
        with pytest.raises(DetbalError):
            Selection(**bad)
    assert [refit_point(r, 10) for r in (0, 9, 10, 25)] == [0, 0, 10, 20]


def _chain_rows(n: int, seed: int = 3) -> list[tuple[str, str | None, str | None, int]]:
    """Attempts of a reversible chain on 6 states with V = 0, 0.5, ..., 2.5."""
    rng = np.random.default_rng(seed)
    V = np.arange(6) * 0.5
    rows = []
    for _ in range(n):
        f = int(rng.integers(6))
        g = int(rng.integers(5))
        g = g + (g >= f)
        accept = rng.random() < min(1.0, float(np.exp(V[f] - V[g])))
        rows.append((f"S{f}", f"S{g}" if accept else None, None if accept else "wrong_sum", 1))
    return rows


def test_refit_is_a_pure_function_of_the_stored_prefix() -> None:
    rows = _chain_rows(600)
    V = estimate(rows)
    assert len(V) == 6 and V["S0"] < V["S5"]  # downhill = low V: the states the chain flows into
    assert np.corrcoef([V[f"S{i}"] for i in range(6)], np.arange(6) * 0.5)[0, 1] > 0.9
    assert len(estimate(rows, "least-action")) == 6
    g = Guide(Selection("potential", every=100))
    for seq in (5, 0, 3, 2, 1, 4):  # any arrival order
        g.add(seq, rows[seq])
    with pytest.raises(DetbalError):
        g.potential(100)  # seqs 6..99 are not stored yet
    for seq in range(6, 600):
        g.add(seq, rows[seq])
    fit = g.potential(300)
    assert fit == estimate(rows[:300])  # later attempts never enter an earlier refit
    state, rec = g.choose([f"S{i}" for i in range(6)], 0.01, 300)
    assert rec["rule"] == "potential" and rec["refit_at"] == 300 and rec["estimated"] == 6
    assert state == "S0" or rec["V"] <= fit["S1"]  # u near 0 lands on a low-V state


def test_visits_draw_the_states_the_model_keeps_writing() -> None:
    # a model that rarely returns: A is written 5 times (twice as a copy), B once, the seed
    # S never, the escapes count for nothing
    rows = [("S", "A", None, 1), ("A", "A", None, 2), ("A", "B", None, 1), ("B", "A", None, 1),
            ("A", None, "invalid_ansatz", 3), ("B", "A", None, 1)]
    V = estimate(rows, "visits")
    assert V == pytest.approx({"S": 0.0, "A": -np.log(6), "B": -np.log(2)})
    # every state has a number from the first attempt on: nothing is drawn as "explored"
    assert estimate(rows[:1], "visits") == pytest.approx({"S": 0.0, "A": -np.log(2)})
    # p ~ (1 + visits)^(1/tau) beside the floor
    p, own = probabilities(["S", "A", "B"], V, 0.5, 0.0)
    assert np.allclose(p, np.array([1, 36, 4]) / 41) and None not in own
    g = Guide(Selection("potential", every=3, estimator="visits"))
    for seq, row in enumerate(rows):
        g.add(seq, row)
    assert g.potential(3) == estimate(rows[:3], "visits")  # a refit sees its prefix only
    assert g.choose(["S", "A", "B"], 0.5, 6)[0] == "A"


# -- the embedded model ----------------------------------------------------------

def test_guided_words_on_the_embedded_model(smollm2: Path, tmp_path: Path) -> None:
    store = tmp_path / "w.sqlite"
    cmd = [*detbal_command("run", "words"), "--store", str(store), "--backend", "local",
           "--attempts", "16", "--concurrency", "2", "--seed", "4",
           "--select", "potential", "--select-every", "4", "--select-tau", "0.5"]
    run_child(cmd, timeout=300)
    with RunStore(store, create=False) as s:
        (run,) = s.runs()
        rows = sorted(s.iter_attempts(), key=lambda r: r["seq"])
    assert run.config["constrain"] is True
    assert {k: run.config[k] for k in ("select", "select_tau", "select_every", "select_floor",
                                       "select_estimator")} == {
        "select": "potential", "select_tau": 0.5, "select_every": 4, "select_floor": 0.1,
        "select_estimator": "likelihood"}
    assert [r["seq"] for r in rows] == list(range(16))
    for r in rows:
        sel = json.loads(r["params"])["select"]
        assert sel["rule"] == "potential" and sel["refit_at"] == refit_point(r["seq"], 4)
        assert 0 < sel["p"] <= 1 and sel["candidates"] >= 1
    # a different selection is a different run
    run_child(cmd[:-6] + ["--select", "uniform"], timeout=300)
    with RunStore(store, create=False) as s:
        runs = s.runs()
        assert [r.config["select"] for r in runs] == ["potential", "uniform"]
        first = json.loads(next(iter(s.iter_attempts([runs[1].id])))["params"])["select"]
    assert first == {"rule": "uniform", "candidates": 1, "p": 1.0}


@pytest.mark.slow
def test_guided_fit_on_the_embedded_model(smollm2: Path, nikuradse: Path, tmp_path: Path) -> None:
    store = tmp_path / "f.sqlite"
    cmd = [*detbal_command("run", "fit"), "--store", str(store), "--backend", "local",
           "--attempts", "9", "--islands", "1", "--population", "4",
           "--starts", "10", "--max-tokens", "160", "--seed", "2", "--select", "potential",
           "--select-every", "3", "--data-dir", str(nikuradse)]
    run_child(cmd, timeout=600)
    with RunStore(store, create=False) as s:
        (run,) = s.runs()
        rows = sorted(s.iter_attempts(), key=lambda r: r["seq"])
    assert run.config["select"] == "potential" and run.config["fit"]["select_every"] == 3
    assert [r["seq"] for r in rows] == list(range(9))
    for r in rows:
        sel = json.loads(r["params"])["select"]
        assert sel["rule"] == "potential" and sel["refit_at"] == refit_point(r["seq"] // 3 * 3, 3)


# -- kill -9 under guidance ----------------------------------------------------------

def test_kill_9_mid_guided_words_run_continues_the_same_selection(fake_openai, tmp_path) -> None:
    store = tmp_path / "k.sqlite"
    n, every, seed = 80, 5, 11
    cmd = guided_command(fake_openai.url, store, n, every)
    assert 22 <= kill_9_after(cmd, store, 22) < n
    run_child(cmd)
    _assert_draws_follow_the_stored_prefix(sorted(check_complete(store, n), key=lambda r: r["seq"]),
                                           every, seed)


def test_call_budget_under_guidance_stops_and_the_next_session_continues_the_draws(fake_openai,
                                                                                   tmp_path) -> None:
    store = tmp_path / "b.sqlite"
    n, every, seed = 40, 5, 11
    cmd = guided_command(fake_openai.url, store, n, every)
    for budget, stored in (("13", 13), ("27", 27)):
        run_child(cmd + ["--budget-calls", budget], returncode=3)  # stopped by the budget, resumable
        assert count(store) == stored
    run_child(cmd)
    _assert_draws_follow_the_stored_prefix(sorted(check_complete(store, n), key=lambda r: r["seq"]),
                                           every, seed)


def _assert_draws_follow_the_stored_prefix(rows: list[dict], every: int, seed: int) -> None:
    """Every draw, in every session, is the one the stored attempts before it imply."""
    guide = Guide(Selection("potential", tau=0.5, every=every))
    found = ["BUZZY"]
    estimated = 0
    for r in rows:
        sel = json.loads(r["params"])["select"]
        P = refit_point(r["seq"], every)
        state, want = guide.choose(list(found), random.Random(f"{seed}:{r['seq']}").random(), P)
        assert (r["source"], sel) == (state, want)
        estimated = max(estimated, sel["estimated"])
        guide.add(r["seq"], (r["source"], r["target"], r["escape"], r["count"]))
        if r["target"] and r["target"] not in found:
            found.append(r["target"])
    assert estimated >= 2  # the potential did steer some draws


def _guided_fit_config() -> FitConfig:
    return FitConfig(islands=1, cycles=2, rounds=6, per_round=3, starts=12, population=4, seed=5,
                     select="potential", select_every=6, select_tau=0.5)


def _child(db: str, select: str = "potential") -> None:
    """Run in a subprocess: the guided fit run (or the walk), slowly, until killed."""
    os.environ["DETBAL_DATA_DIR"] = str(DATA)
    cfg = replace(_guided_fit_config(), select=select)
    with RunStore(db) as store:
        asyncio.run(run_fit(store, 1, [ScriptedBackendForBookkeeping(delay=0.1)], cfg, call=bare_call))


def _selections(store: RunStore, run_id: int) -> list[Any]:
    return [json.loads(r["params"])["select"]
            for r in sorted(store.iter_attempts([run_id]), key=lambda r: r["seq"])]


@pytest.mark.parametrize("select", ["potential", "walk"])
def test_kill_9_mid_guided_fit_run_equals_an_uninterrupted_one(tmp_path: Path, nikuradse: Path,
                                                               select: str) -> None:
    cfg = replace(_guided_fit_config(), select=select)
    db = tmp_path / "killed.db"
    with RunStore(db) as store:
        assert store.create_run("fit", "scripted-list", "scripted", {"fit": cfg.as_dict()}) == 1
    assert kill_9_after(script(__file__, str(db), select), db, 14, timeout=120) >= 14
    with RunStore(db) as store:
        before = len(store.stored_seqs(1))
        assert 14 <= before < 36
        res = asyncio.run(run_fit(store, 1, [ScriptedBackendForBookkeeping()], cfg, call=bare_call))
        assert res.stored == 36 and res.committed == 36 - before
        got, got_sel = table(store, 1), _selections(store, 1)
        ref = store.create_run("fit", "scripted-list", "scripted", {"fit": cfg.as_dict()})
        asyncio.run(run_fit(store, ref, [ScriptedBackendForBookkeeping()], cfg, call=bare_call))
        want, want_sel = table(store, ref), _selections(store, ref)
        rows = sorted(store.iter_attempts([1]), key=lambda r: r["seq"])
    assert got == want and got_sel == want_sel
    if select == "walk":
        _assert_fit_walks(rows, cfg.per_round, rows[0]["source"])
    else:
        assert any(s["estimated"] >= 2 for s in got_sel)  # the potential was in play


# -- the walk --------------------------------------------------------------------

def _assert_fit_walks(rows: list[dict[str, Any]], per_round: int, seed_text: str) -> None:
    """Every round's example is an ansatz its previous round wrote (or, if it wrote none, that
    round's example again); the first round starts at the seed."""
    rounds: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        rounds.setdefault(r["seq"] // per_round, []).append(r)
    moved = 0
    for k in sorted(rounds):
        (src,) = {r["source"] for r in rounds[k]}
        sel = json.loads(rounds[k][0]["params"])["select"]
        if k == 0:
            assert src == seed_text
            continue
        written = [r["target"] for r in rounds[k - 1] if r["target"] is not None]
        assert sel["rule"] == "walk" and sel["from"] == k - 1 and sel["candidates"] == len(written)
        assert src in written if written else src == rounds[k - 1][0]["source"]
        moved += src != rounds[k - 1][0]["source"]
    assert moved >= len(rounds) // 3  # the walk goes somewhere


def test_words_walk_prompts_with_the_word_just_written(fake_openai, tmp_path: Path) -> None:
    store = tmp_path / "w.sqlite"
    n = 40
    cmd = words_command(fake_openai.url, store, n, "--select", "walk")  # concurrency 4: waits per step
    assert 10 <= kill_9_after(cmd, store, 10) < n
    run_child(cmd)
    rows = sorted(check_complete(store, n), key=lambda r: r["seq"])
    assert rows[0]["source"] == "BUZZY"
    for prev, r in itertools.pairwise(rows):
        assert r["source"] == (prev["target"] or prev["source"])
        assert json.loads(r["params"])["select"] == {"rule": "walk", "from": prev["seq"], "candidates": 1,
                                                     "p": 1.0}
    assert sum(r["target"] is not None for r in rows) >= n // 2 and len({r["source"] for r in rows}) > 3


if __name__ == "__main__":
    _child(sys.argv[1], *sys.argv[2:])
