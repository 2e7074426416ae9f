"""The `openai` model plugin against a local fake of the OpenAI REST API (tests/fake_openai.py)."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fake_openai import FakeOpenAI
from w2s.api import W2SError
from w2s.cli import cli
from w2s.store import Store
from w2s_plugins import openai_api
from w2s_plugins.openai_api import encoding, label_probs, label_tokens

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-fake-test-key-7f3a9c"


@pytest.fixture
def fake(monkeypatch):
    server = FakeOpenAI(api_key=KEY).start()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    yield server
    server.stop()


def openai_study(data_dir, base_url, weak='model = "bow"', extra_options="", n=(40, 40, 30), name="oa"):
    return f"""
[study]
name = "{name}"
seeds = [0]

[task]
name = "sst2"
data_dir = "{data_dir}"
n_weak_train = {n[0]}
n_transfer = {n[1]}
n_test = {n[2]}

[weak]
{weak}

[strong]
model = "gpt-4o-mini"
[strong.options]
base_url = "{base_url}"
poll_seconds = 0.05
max_concurrency = 4
{extra_options}
[strong.train]
n_epochs = 2
"""


def run_cli(runner, *args):
    result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


# -- pure functions --------------------------------------------------------------------------
def test_label_probs_renormalise_sum_case_variants_and_floor_missing():
    top = [("positive", np.log(0.6)), ("Positive", np.log(0.1)), ("negative", np.log(0.2)), ("The", np.log(0.05))]
    probs, missing = label_probs(top, ["negative", "positive"], None)
    assert missing == 0
    np.testing.assert_allclose(probs, [0.2 / 0.9, 0.7 / 0.9], rtol=1e-6)
    probs, missing = label_probs([("positive", np.log(0.9)), ("The", np.log(0.01))], ["negative", "positive"], None)
    assert missing == 1  # negative absent: floored at the lowest top-k logprob (0.01)
    np.testing.assert_allclose(probs, [0.01 / 0.91, 0.9 / 0.91], rtol=1e-6)
    probs, missing = label_probs([("The", -0.1)], ["negative", "positive"], -5.0)
    assert missing == 2 and probs == [0.5, 0.5]


def test_label_tokens_must_differ_in_their_first_token():
    enc = encoding("o200k_base")
    assert label_tokens(enc, ("negative", "positive")) == ["negative", "positive"]
    assert label_tokens(enc, ("acceptable", "unacceptable")) == ["acceptable", "un"]
    with pytest.raises(W2SError, match="share the first token 'un'"):
        label_tokens(enc, ("unreasonable", "unacceptable"))


# -- keys --------------------------------------------------------------------------------------
def test_keys_set_stores_mode_0600_and_missing_key_is_one_line(runner, isolated_home, monkeypatch, tmp_path, sentiment_dir):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    f = tmp_path / "s.toml"
    f.write_text(openai_study(sentiment_dir, "http://127.0.0.1:9/v1"))
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(tmp_path / "w.db"), "--yes"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "Error: no openai API key: set OPENAI_API_KEY or run `w2s keys set openai`"
    result = runner.invoke(cli, ["keys", "set", "openai"], input="sk-from-prompt\n")
    assert result.exit_code == 0, result.output
    path = isolated_home / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"openai": "sk-from-prompt"}
    assert "sk-from-prompt" not in result.output
    assert runner.invoke(cli, ["keys", "list"]).output.strip() == "openai"
    from w2s.keys import get_key

    assert get_key("openai", "OPENAI_API_KEY") == "sk-from-prompt"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-wins")
    assert get_key("openai", "OPENAI_API_KEY") == "sk-env-wins"


# -- end to end, in process ---------------------------------------------------------------------
def test_study_runs_end_to_end_against_the_fake_api(runner, tmp_path, sentiment_dir, fake):
    f = tmp_path / "s.toml"
    f.write_text(openai_study(sentiment_dir, fake.url))
    db = tmp_path / "w.db"
    result = run_cli(runner, "study", "run", f, "--db", db, "--yes")
    assert result.exit_code == 0, result.output
    assert "total:" in result.output and "estimated cost $" in result.output
    # two fine-tuning jobs (student on weak labels, ceiling on ground truth), each from its own upload
    creates = fake.requests("POST", "/v1/fine_tuning/jobs")
    assert len([r for r in creates if r["path"] == "/v1/fine_tuning/jobs"]) == 2
    job = creates[0]["body"]
    assert job["method"]["type"] == "supervised" and job["method"]["supervised"]["hyperparameters"] == {"n_epochs": 2}
    assert job["seed"] == 0 and job["suffix"] == "w2s" and job["model"] == "gpt-4o-mini-2024-07-18"
    lines = [json.loads(l) for l in fake.files[job["training_file"]].decode().splitlines()]
    assert len(lines) == 40 and [m["role"] for m in lines[0]["messages"]] == ["system", "user", "assistant"]
    assert lines[0]["messages"][1]["content"].startswith("Review: ") and lines[0]["messages"][2]["content"] in ("negative", "positive")
    # inference: one-token, temperature-0 requests with logprobs, each test prompt asked once per model
    chats = fake.requests("POST", "/v1/chat/completions")
    assert {(r["body"]["max_tokens"], r["body"]["temperature"], r["body"]["logprobs"], r["body"]["top_logprobs"]) for r in chats} == {(1, 0, True, 20)}
    assert len(chats) == 2 * 30 and {r["body"]["model"] for r in chats} == {j["fine_tuned_model"] for j in fake.jobs.values()}
    store = Store(db, readonly=True)
    row = next(store.db.query("SELECT * FROM results"))
    assert row["status"] == "done" and row["ceiling_acc"] == 1.0 and row["student_acc"] > row["weak_acc"] - 0.2
    curves = list(store.db.query("SELECT step, name, value FROM curves c JOIN stages s ON s.key = c.stage_key WHERE s.role = 'ceiling' ORDER BY step"))
    assert [(c["step"], c["name"]) for c in curves if c["name"] == "train_loss"] == [(s, "train_loss") for s in range(1, 6)]
    assert curves[0]["value"] == 1.0
    jobs = list(store.db.query("SELECT job_id, status, info_json FROM jobs"))
    assert sorted(j["job_id"] for j in jobs) == sorted(fake.jobs) and {j["status"] for j in jobs} == {"succeeded"}
    missing = {r["value"] for r in store.db.query("SELECT value FROM metrics WHERE name = 'label_token_missing'")}
    assert missing == {0.0}
    out = json.loads(next(store.db.query("SELECT output_json FROM stages WHERE role = 'student'"))["output_json"])
    assert out["soft_labels"] == "harden" and sum(out["label_counts"]) == 40
    print(result.output)
    assert "weak (bow)" in result.output and "ceiling (gpt-4o-mini)" in result.output
