"""The openai backend and the `detbal run` command against a fault-injecting loopback server
(the session's ``fake_openai``, reset for each test)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from servers.fake_openai import FakeServer

from detbal.cli import main
from detbal.store import ESCAPE_CATEGORIES, RunStore

SECRET = "sk-test-Do-Not-Store-7f3a9c"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def run_cli(server: FakeServer, store: Path, model: str, *extra: str) -> int:
    return main(["-q", "run", "words", "--store", str(store), "--backend", "openai",
                 "--base-url", server.url, "--model", model, "--backoff", "0.01", *extra])


def attempts(store: Path) -> list[dict]:
    with RunStore(store, create=False) as s:
        return list(s.iter_attempts())


def test_faults_are_retried_until_an_answer(fake_openai, tmp_path) -> None:
    fake_openai.reset(retry_after=0.3)
    model = "plan:429,500,garbage,truncated,ok"
    rc = run_cli(fake_openai, tmp_path / "s.sqlite", model, "--attempts", "6", "--concurrency", "1",
                 "--retries", "5", "--seed", "1")
    assert rc == 0
    rows = attempts(tmp_path / "s.sqlite")
    assert sorted(r["seq"] for r in rows) == list(range(6))
    assert all(r["escape"] != "api_error" for r in rows)
    assert all(json.loads(r["params"])["calls"] == 5 for r in rows)
    log = [(t, a) for t, m, a in fake_openai.log if m == model]
    assert [a for _, a in log] == ["429", "500", "garbage", "truncated", "ok"] * 6
    for (t429, a), (t_next, _) in zip(log, log[1:]):
        if a == "429":
            assert t_next - t429 >= 0.25  # Retry-After: 0.3 honoured (back-off alone is 0.01)


@pytest.mark.parametrize("model,detail", [("plan:hang", "no answer within"),
                                          ("plan:500", "HTTP 500"),
                                          ("plan:garbage", "bad response")])
def test_calls_that_never_succeed_are_stored_as_api_error(fake_openai, tmp_path, model, detail) -> None:
    rc = run_cli(fake_openai, tmp_path / "s.sqlite", model, "--attempts", "4", "--concurrency", "4",
                 "--retries", "1", "--timeout", "0.3")
    assert rc == 0
    rows = attempts(tmp_path / "s.sqlite")
    assert len(rows) == 4 and {r["escape"] for r in rows} == {"api_error"}
    assert all(detail in r["escape_detail"] and "after 2 tries" in r["escape_detail"] for r in rows)
    assert all(r["raw_answer"] is None for r in rows)


def test_every_attempt_is_a_transition_or_a_categorised_escape(fake_openai, tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    assert run_cli(fake_openai, store, "plan:ok,ok,503,ok", "--attempts", "60", "--concurrency", "8") == 0
    rows = attempts(store)
    assert sorted(r["seq"] for r in rows) == list(range(60))
    for r in rows:
        assert (r["target"] is None) != (r["escape"] is None)
        assert r["escape"] is None or r["escape"] in ESCAPE_CATEGORIES
    escapes = {r["escape"] for r in rows}
    assert {"wrong_sum", "not_a_word", "empty"} <= escapes
    # escapes never become prompt words
    valid = {r["target"] for r in rows if r["target"]} | {"BUZZY"}
    assert {r["source"] for r in rows} <= valid


def test_refused_credentials_stop_the_run_and_the_key_is_never_written(fake_openai, tmp_path, capsys,
                                                                      caplog) -> None:
    caplog.set_level(logging.DEBUG)
    store = tmp_path / "s.sqlite"
    rc = run_cli(fake_openai, store, "plan:401", "--attempts", "5")
    assert rc == 1
    assert attempts(store) == []
    out = capsys.readouterr()
    assert "credentials refused" in out.out
    assert run_cli(fake_openai, store, "ok", "--attempts", "5") == 0
    main(["runs", str(store), "--json"])
    out2 = capsys.readouterr()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for text in (out.out, out.err, out2.out, out2.err, caplog.text, blob.decode("latin-1")):
        assert SECRET not in text


def test_call_budget_stops_and_continues_across_sessions(fake_openai, tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    assert run_cli(fake_openai, store, "ok", "--attempts", "50", "--concurrency", "4",
                   "--budget-calls", "7") == 3
    assert len(attempts(store)) == 7
    assert run_cli(fake_openai, store, "ok", "--attempts", "50", "--budget-calls", "10") == 3
    rows = attempts(store)
    assert len(rows) == 10 and len({r["run_id"] for r in rows}) == 1


def test_money_budget_and_runs_listing(fake_openai, tmp_path, capsys) -> None:
    store = tmp_path / "s.sqlite"
    rc = run_cli(fake_openai, store, "ok", "--attempts", "100", "--price-input", "1000",
                 "--price-output", "2000", "--budget-cost", "0.5", "--concurrency", "1")
    assert rc == 3
    capsys.readouterr()
    assert main(["runs", str(store), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["attempts"] < 100
    per_call = run["cost"] / run["attempts"]
    assert 0.5 <= run["cost"] < 0.5 + per_call + 1e-9  # stops right after the call that crossed it
    expected = (run["prompt_tokens"] * 1000 + run["completion_tokens"] * 2000) / 1e6
    assert run["cost"] == pytest.approx(expected)
    assert main(["runs", str(store)]) == 0
    table = capsys.readouterr().out
    assert "valid" in table and f"{run['cost']:.4f}" in table


def test_changed_settings_start_a_new_run(fake_openai, tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    assert run_cli(fake_openai, store, "ok", "--attempts", "3", "--seed", "1") == 0
    assert run_cli(fake_openai, store, "ok", "--attempts", "5", "--seed", "1") == 0  # continues
    assert run_cli(fake_openai, store, "ok", "--attempts", "2", "--seed", "1", "--temperature", "0.5") == 0
    with RunStore(store, create=False) as s:
        counts = {x.run.id: x.attempts for x in s.run_summaries()}
        params = {r["run_id"]: json.loads(r["params"]) for r in s.iter_attempts()}
    assert counts == {1: 5, 2: 2}
    assert params[2]["temperature"] == 0.5 and params[1]["run_seed"] == 1


def test_bad_input_is_one_line(tmp_path, capsys) -> None:
    assert main(["run", "words", "--store", str(tmp_path / "x.sqlite"), "--attempts", "3",
                 "--backend", "openai"]) == 2
    assert "needs a model" in capsys.readouterr().err
    assert main(["run", "words", "--store", str(tmp_path / "x.sqlite"), "--attempts", "3",
                 "--backend", "replay"]) == 2
    assert main(["runs", str(tmp_path / "missing.sqlite")]) == 2
    assert main(["run", "words", "--store", str(tmp_path / "x.sqlite"), "--attempts", "3",
                 "--prompt", str(tmp_path / "nope.txt")]) == 2


def test_resume_hint_never_shows_a_key_given_as_a_flag(fake_openai, tmp_path, capsys, monkeypatch) -> None:
    store = tmp_path / "s.sqlite"
    argv = ["-q", "run", "words", "--store", str(store), "--backend", "openai", "--base-url",
            fake_openai.url, "--model", "ok", "--attempts", "9", "--budget-calls", "2",
            "--api-key", SECRET]
    monkeypatch.setattr("sys.argv", ["detbal", *argv])
    assert main(argv) == 3
    out = capsys.readouterr().out
    assert "to continue: detbal" in out and SECRET not in out and "--budget-calls 2" in out


def test_settings_precedence(tmp_path) -> None:
    from detbal.agents.backends.openai_compat import OpenAISettings

    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "top"\n[openai]\nmodel = "from-file"\nbase_url = "http://f/v1"\n'
                   'api_key_env = "MY_KEY"\n')
    env = {"OPENAI_API_KEY": "env-key", "MY_KEY": "my-key", "OPENAI_BASE_URL": "http://e/v1"}
    s = OpenAISettings.resolve(config=cfg, environ=env)
    assert (s.model, s.base_url, s.api_key) == ("from-file", "http://f/v1", "my-key")
    s = OpenAISettings.resolve(model="flag", base_url="http://x/v1", config=cfg, environ=env)
    assert (s.model, s.base_url) == ("flag", "http://x/v1")
    s = OpenAISettings.resolve(model="m", environ=env)
    assert (s.base_url, s.api_key) == ("http://e/v1", "env-key")
    assert "env-key" not in repr(s)


def test_vote_through_the_cli(fake_openai, tmp_path) -> None:
    store = tmp_path / "v.sqlite"
    assert run_cli(fake_openai, store, "ok", "--attempts", "6", "--vote", "3:2", "--seed", "1") == 0
    rows = attempts(store)
    assert len(rows) == 6
    for r in rows:
        assert json.loads(r["params"])["calls"] == 3 and len(json.loads(r["raw_answer"])) == 3
        assert r["escape"] in (None, "no_majority", "wrong_sum", "not_a_word", "empty", "same_word")


def test_fit_task_is_wired_to_the_cli(fake_openai, tmp_path, nikuradse) -> None:
    store = tmp_path / "f.sqlite"
    args = ["-q", "run", "fit", "--store", str(store), "--backend", "openai", "--base-url",
            fake_openai.url, "--model", "ok,plan:ok,500", "--islands", "2", "--cycles", "1",
            "--rounds", "2", "--starts", "3", "--attempts", "12", "--backoff", "0.01"]
    assert main(args) == 0
    with RunStore(store, create=False) as s:
        (run,) = s.run_summaries()
    assert run.run.task == "fit" and run.attempts == 12 and run.run.model == "ok,plan:ok,500"
    assert main(args) == 0  # the same command again: nothing to add
    with RunStore(store, create=False) as s:
        assert [x.attempts for x in s.run_summaries()] == [12]
