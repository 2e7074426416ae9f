"""The `openai` model plugin against a local fake of the OpenAI REST API (tests/fake_openai.py)."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import sst2_study
from fake_openai import FakeOpenAI
from w2s.api import W2SError
from w2s.commands.cli import cli
from w2s.storing.store import Store
from w2s_plugins import openai_answers, openai_api, openai_jobs
from w2s_plugins.openai_answers import label_probs
from w2s_plugins.openai_tokens import encoding, label_tokens

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-fake-test-key-7f3a9c"


@pytest.fixture
def fake(monkeypatch):
    server = FakeOpenAI(api_key=KEY).start()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    yield server
    server.stop()


def openai_study(data_dir, base_url, weak='model = "bow"', extra_options="", n=(40, 40, 30), name="oa"):
    strong = f"""model = "gpt-4o-mini"
[strong.options]
base_url = "{base_url}"
poll_seconds = 0.05
max_concurrency = 4
{extra_options}
[strong.train]
n_epochs = 2
"""
    return sst2_study(data_dir, strong, weak=weak, n=n, name=name)


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
    assert "Traceback" not in result.output and "running" not in result.output  # refused before any stage ran
    assert runner.invoke(cli, ["study", "run", str(f), "--db", str(tmp_path / "w.db"), "--dry-run"]).exit_code == 0  # no key needed
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
    assert row["status"] == "done" and row["ceiling_acc"] == 1.0 and row["weak_acc"] < row["student_acc"] < row["ceiling_acc"]
    curves = list(store.db.query("SELECT step, name, value FROM curves c JOIN stages s ON s.key = c.stage_key WHERE s.role = 'ceiling' ORDER BY step"))
    assert [(c["step"], c["name"]) for c in curves if c["name"] == "train_loss"] == [(s, "train_loss") for s in range(1, 6)]
    assert curves[0]["value"] == 1.0
    jobs = list(store.db.query("SELECT job_id, status, info_json FROM jobs"))
    assert sorted(j["job_id"] for j in jobs) == sorted(fake.jobs) and {j["status"] for j in jobs} == {"succeeded"}
    missing = {r["value"] for r in store.db.query("SELECT value FROM metrics WHERE name = 'label_token_missing'")}
    assert missing == {0.0}
    out = json.loads(next(store.db.query("SELECT output_json FROM stages WHERE role = 'student'"))["output_json"])
    assert out["soft_labels"] == "harden" and sum(out["label_counts"]) == 40
    assert out["fine_tuned_model"] == fake.jobs[out["job_id"]]["fine_tuned_model"] and out["trained_tokens"] > 0
    print(result.output)
    assert "weak (bow)" in result.output and "ceiling (gpt-4o-mini)" in result.output


def unique_sentences(folder: Path) -> Path:
    """The shared sentiment fixture with a serial number on every sentence, so each prompt is unique."""
    for name in ("train.tsv", "test.tsv"):
        lines = (folder / name).read_text().splitlines()
        (folder / name).write_text("\n".join([lines[0]] + [f"{t} no{i}\t{l}" for i, (t, l) in enumerate(x.split("\t") for x in lines[1:])]) + "\n")
    return folder


def test_injected_429s_and_500s_are_retried_and_the_run_succeeds(runner, tmp_path, sentiment_dir, fake):
    fake.inject("/v1/files", 500)
    fake.inject("/v1/fine_tuning/jobs", 429, 503)
    fake.inject("/v1/chat/completions", 429, 500, 429, 502)
    f = tmp_path / "s.toml"
    f.write_text(openai_study(sentiment_dir, fake.url))
    result = run_cli(runner, "study", "run", f, "--db", tmp_path / "w.db", "--yes")
    assert result.exit_code == 0, result.output
    assert fake.injected == []  # every injected error was served ...
    errors = [r for r in fake.log if r["status"] in (429, 500, 502, 503)]
    assert len(errors) == 7
    for err in errors:  # ... and each was followed by a successful retry of the same request
        later = fake.log[fake.log.index(err) + 1:]
        assert any(r["path"] == err["path"] and r["status"] == 200 and r["body"] == err["body"] for r in later)
    assert len([r for r in fake.requests("POST", "/v1/fine_tuning/jobs", answered=True) if r["status"] == 200 and r["path"] == "/v1/fine_tuning/jobs"]) == 2
    assert next(Store(tmp_path / "w.db", readonly=True).db.query("SELECT status FROM results"))["status"] == "done"


def test_failed_job_ends_its_stage_with_the_api_message_and_keeps_other_results(runner, tmp_path, sentiment_dir, fake):
    fake.job_outcome = "failed"
    f = tmp_path / "s.toml"
    f.write_text(openai_study(sentiment_dir, fake.url))
    db = tmp_path / "w.db"
    result = run_cli(runner, "study", "run", f, "--db", db, "--yes")
    assert result.exit_code == 1
    assert f"FAILED: W2SError: fine-tuning job ftjob-000002 failed: {fake.fail_message}" in result.output
    store = Store(db, readonly=True)
    status = {r["role"]: r["status"] for r in store.db.query("SELECT ss.role, st.status FROM study_stages ss JOIN stages st ON st.key = ss.stage_key")}
    assert status["weak"] == status["weak_labels"] == status["weak_test"] == "done"
    assert status["ceiling"] == status["student"] == "failed"
    assert len(store.predictions(next(store.db.query("SELECT stage_key AS key FROM study_stages WHERE role='weak_test'"))["key"], "test")) == 30
    # the cause is fixed: a rerun keeps the weak stages and launches fresh jobs for the failed ones
    fake.job_outcome = "succeeded"
    result = run_cli(runner, "study", "run", f, "--db", db, "--yes")
    assert result.exit_code == 0, result.output
    assert "fit weak bow on weak_train (ground truth), predict on transfer, test: cached" in result.output
    assert sorted(j["status"] for j in fake.jobs.values()) == ["failed", "failed", "succeeded", "succeeded"]


def test_dry_run_prints_tokens_and_cost_and_creates_nothing_remotely(runner, tmp_path, sentiment_dir, fake):
    f = tmp_path / "s.toml"
    f.write_text(openai_study(sentiment_dir, fake.url))
    result = run_cli(runner, "study", "run", f, "--db", tmp_path / "w.db", "--dry-run")
    assert result.exit_code == 0, result.output
    assert fake.log == []
    from w2s.planning.study import load_study

    study = load_study(f)
    strong = study.strong[0]
    table = result.output.split("pending API stage")[1]
    found = [re.match(r"(.+?)\s{2,}([\d,]+)\s+\$", line) for line in table.splitlines() if line.startswith(("fit", "predict"))]
    rows = {m.group(1): int(m.group(2).replace(",", "")) for m in found}
    assert len(rows) == 4
    per_epoch = rows["fit ceiling gpt-4o-mini on transfer (ground truth)"] // 2
    assert 40 * 30 < per_epoch < 40 * 60  # 40 chat examples of a few dozen tokens each, 2 epochs
    assert f"total: {sum(rows.values()):,} tokens (tiktoken)" in result.output
    assert "estimated cost $" in result.output and "(dry run: nothing was launched)" in result.output
    usd = strong.estimate_cost([], study.task, "fit")
    assert usd["tokens"] == 0 and usd["usd"] == 0.0


def test_confirmation_is_asked_before_paid_work_and_no_launches_nothing(runner, tmp_path, sentiment_dir, fake):
    f = tmp_path / "s.toml"
    f.write_text(openai_study(sentiment_dir, fake.url, extra_options="price_train_per_1m = 3000.0"))
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(tmp_path / "w.db")], input="n\n")
    assert result.exit_code == 1
    assert "Launch this paid API work? [y/N]" in result.output
    assert "Error: paid API work not confirmed; nothing was launched" in result.output
    assert fake.log == []
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(tmp_path / "w.db")], input="y\n")
    assert result.exit_code == 0, result.output
    assert len(fake.jobs) == 2


def test_prompted_baseline_k_shot_launches_no_job(runner, tmp_path, sentiment_dir, fake):
    f = tmp_path / "s.toml"
    f.write_text(openai_study(sentiment_dir, fake.url, extra_options="finetune = false\nk_shot = 2"))
    result = run_cli(runner, "study", "run", f, "--db", tmp_path / "w.db", "--yes")
    assert result.exit_code == 0, result.output
    assert fake.jobs == {} and fake.files == {}
    chats = fake.requests("POST", "/v1/chat/completions")
    assert {r["body"]["model"] for r in chats} == {"gpt-4o-mini-2024-07-18"}
    roles = [m["role"] for m in chats[0]["body"]["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "prompted baseline: no fine-tuning" in result.output


def test_missing_label_tokens_are_floored_and_counted(runner, tmp_path, sentiment_dir, fake):
    fake.drop_tokens = {"negative", "Negative"}
    f = tmp_path / "s.toml"
    f.write_text(openai_study(sentiment_dir, fake.url, extra_options="finetune = false"))
    result = run_cli(runner, "study", "run", f, "--db", tmp_path / "w.db", "--yes")
    assert result.exit_code == 0, result.output
    store = Store(tmp_path / "w.db", readonly=True)
    counts = {r["key"]: r["value"] for r in store.db.query(
        "SELECT s.key, m.value FROM metrics m JOIN stages s ON s.key = m.stage_key WHERE m.name = 'label_token_missing' AND s.role = 'ceiling_test'")}
    assert list(counts.values()) == [30.0]  # "negative" never comes back: every answer lacks it
    probs = store.predictions(next(iter(counts)), "test")
    assert all(p["probs"][1] > 0.5 for p in probs.values())  # the floor (lowest top-k logprob) sits below positive


def test_sampled_soft_labels_follow_the_weak_probabilities(fake):
    model = openai_api.OpenAIModel({"soft_labels": "sample"})
    soft = np.tile([0.8, 0.2], (2000, 1))
    sampled = model.training_labels(soft, seed=0)
    assert 0.17 < sampled.mean() < 0.23
    assert openai_api.OpenAIModel({}).training_labels(soft, seed=0).sum() == 0
    assert "soft_labels" in model.spec()["options"] and "max_concurrency" not in model.spec()["options"]


def test_non_xent_loss_is_a_one_line_error(runner, tmp_path, sentiment_dir, fake):
    f = tmp_path / "s.toml"
    f.write_text(openai_study(sentiment_dir, fake.url) + '\n[[losses]]\nname = "logconf"\n')
    result = run_cli(runner, "study", "run", f, "--db", tmp_path / "w.db", "--yes")
    assert "the OpenAI fine-tuning API trains on labels only; use loss xent for openai students" in result.output
    assert len(fake.jobs) == 1  # the ceiling trained; no job for the logconf student


def Ctx(key):
    """The StageContext a worker gives the plugin, for driving it directly (its events are kept in .events)."""
    from w2s.running.work import Work, WorkerContext

    events = []
    ctx = WorkerContext(Work(key, "fit", key, {"seed": 0}, {}, "."), events.append)
    ctx.events = events
    return ctx


def test_a_job_launched_but_not_stored_is_found_by_metadata_not_launched_again(fake):
    from openai import OpenAI

    client = OpenAI(api_key=KEY, base_url=fake.url)
    upload = client.files.create(file=("t.jsonl", b"{}\n"), purpose="fine-tune")
    orphan = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=upload.id, metadata={"w2s_stage": "stage-k1"})
    model = openai_api.OpenAIModel({"base_url": fake.url})
    ctx = Ctx("stage-k1")
    from w2s.plugins import make_task

    job = openai_jobs.attach_or_launch(model, model.client(), [], np.zeros(0, int), make_task("sst2", {}, None, "task"), ctx)
    assert job.id == orphan.id and ctx.find_job("openai")["job_id"] == orphan.id
    assert [e.data["job_id"] for e in ctx.events if e.kind == "job"] == [orphan.id]  # the driver persists this event
    assert len(fake.jobs) == 1


# -- crash safety: SIGKILL a real `w2s` process, rerun, and read the server's request log ------------------
def spawn_run(study: Path, db: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": KEY, "W2S_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "w2s", "study", "run", str(study), "--db", str(db), "--yes"]
    return subprocess.Popen(args, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)


def wait_for(condition, proc: subprocess.Popen, out: Path, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"w2s exited early ({proc.returncode}):\n{out.read_text()}"
        assert time.monotonic() < deadline, f"timed out; w2s output so far:\n{out.read_text()}"
        time.sleep(0.05)


def db_count(db: Path, sql: str) -> int:
    import sqlite3

    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        conn.close()


def test_kill_while_the_job_runs_then_rerun_reattaches_and_creates_exactly_one_job(runner, tmp_path, sentiment_dir, fake):
    fake.jobs_released.clear()  # the first job stays "running" until released
    f, db, out = tmp_path / "s.toml", tmp_path / "w.db", tmp_path / "out.txt"
    f.write_text(openai_study(sentiment_dir, fake.url))
    proc = spawn_run(f, db, out)
    wait_for(lambda: len(fake.requests("GET", "/v1/fine_tuning/jobs/ftjob")) >= 2, proc, out)
    assert db_count(db, "SELECT count(*) FROM jobs") == 1  # stored before polling began
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (running,) = fake.jobs.values()
    assert running["status"] == "running"
    fake.jobs_released.set()
    mark = len(fake.log)
    result = run_cli(runner, "study", "run", f, "--db", db, "--yes")
    assert result.exit_code == 0, result.output
    assert f"re-attaching to fine-tuning job {running['id']}" in result.output
    creates = [r for r in fake.log if r["method"] == "POST" and r["path"] == "/v1/fine_tuning/jobs"]
    stage_keys = [r["body"]["metadata"]["w2s_stage"] for r in creates]
    assert len(creates) == 2 and len(set(stage_keys)) == 2  # ceiling and student: one job per stage key
    assert running["metadata"]["w2s_stage"] in stage_keys and stage_keys.count(running["metadata"]["w2s_stage"]) == 1
    assert any(r["path"] == f"/v1/fine_tuning/jobs/{running['id']}" for r in fake.log[mark:])
    assert next(Store(db, readonly=True).db.query("SELECT status FROM results"))["status"] == "done"


def test_kill_midway_through_inference_then_rerun_never_asks_an_answered_prompt_again(runner, tmp_path, sentiment_dir, fake):
    unique_sentences(sentiment_dir)
    fake.hold_chat_after = 12  # answer 12 completions, then hold the rest until the client is gone
    f, db, out = tmp_path / "s.toml", tmp_path / "w.db", tmp_path / "out.txt"
    f.write_text(openai_study(sentiment_dir, fake.url))
    proc = spawn_run(f, db, out)

    def asked(entries, answered=None):
        return [(r["body"]["model"], r["body"]["messages"][-1]["content"]) for r in entries
                if r["path"] == "/v1/chat/completions" and (answered is None or (r["answered"] and r["status"] == 200) == answered)]

    def answered_and_stored():  # nothing in flight but the held requests, and every answer stored
        chats = [r for r in list(fake.log) if r["path"] == "/v1/chat/completions"]
        settled = all(r["answered"] or r.get("held") for r in chats)
        answered = len(asked(chats, True))
        return settled and any(r.get("held") for r in chats) and answered >= 12 \
            and db_count(db, "SELECT count(*) FROM partial_predictions") == answered

    wait_for(answered_and_stored, proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = asked(fake.log, True)
    in_flight = asked([r for r in fake.log if r.get("held")])
    fake.abandon_held()
    mark = len(fake.log)
    result = run_cli(runner, "study", "run", f, "--db", db, "--yes")
    assert result.exit_code == 0, result.output
    after = asked(fake.log[mark:])
    assert len(before) >= 12 and not set(before) & set(after)  # nothing answered before the kill is asked again
    assert len(after) == len(set(after))
    everything = asked(fake.log, True)
    assert len(everything) == len(set(everything)) == 2 * 30  # each test prompt answered exactly once per model
    assert 1 <= len(in_flight) <= 4 and set(in_flight) <= set(after)  # only requests cut off by the kill are resent
    assert len(fake.jobs) == 2
    resumed = [r["value"] for r in Store(db, readonly=True).db.query("SELECT value FROM metrics WHERE name = 'resumed_predictions'")]
    assert sorted(resumed) == [0.0, float(len(before))]


def test_the_api_key_never_reaches_the_db_artifacts_output_or_report(runner, tmp_path, sentiment_dir, fake):
    f, db = tmp_path / "s.toml", tmp_path / "w.db"
    f.write_text(openai_study(sentiment_dir, fake.url))
    fake.job_outcome = "failed"  # an error path too: tracebacks are stored
    outputs = [run_cli(runner, "study", "run", f, "--db", db, "--yes").output]
    fake.job_outcome = "succeeded"
    outputs.append(run_cli(runner, "study", "run", f, "--db", db, "--yes").output)
    outputs.append(run_cli(runner, "study", "show", "oa", "--db", db).output)
    outputs.append(run_cli(runner, "query", "SELECT * FROM jobs", "--db", db, "--json").output)
    report = runner.invoke(cli, ["report", "oa", "--db", str(db), "--out", str(tmp_path / "report")])
    outputs.append(report.output)
    assert "ft:gpt-4o-mini" in outputs[2] or "gpt-4o-mini" in outputs[2]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".toml"]
    assert any(p.name == "w.db" for p in files) and any(p.name == "model.json" for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
    for text in outputs:
        assert KEY not in text
    assert fake.requests()[0]["status"] == 200  # the key was really sent (and accepted) by the client


# -- acceptance: the seed study file, a tiny local BERT standing in for bert-base-uncased ----------------
def test_the_sst2_bert_gpt4o_study_runs_end_to_end_on_the_fake_api(runner, tmp_path, sentiment_dir, tiny_bert, fake, monkeypatch):
    monkeypatch.setenv("W2S_DATA_DIR", str(ROOT / "tests" / "fixtures" / "ethics"))  # the ETHICS evals read it
    db = tmp_path / "w.db"
    result = run_cli(runner, "study", "run", ROOT / "studies" / "sst2_bert_gpt4o.toml", "--db", db, "--yes", "--limit", "40",
                     "--set", f"task.data_dir={sentiment_dir}", "--set", f"weak.options.path={tiny_bert}",
                     "--set", f"strong.options.base_url={fake.url}", "--set", "strong.options.poll_seconds=0.05")
    print(result.output)
    assert result.exit_code == 0, result.output
    assert len(fake.jobs) == 2 and {j["status"] for j in fake.jobs.values()} == {"succeeded"}
    assert {j["hyperparameters"]["n_epochs"] for j in fake.jobs.values()} == {3}
    table = result.output.split("done; stored in")[1]
    for row in ("weak (bert)", "student xent (bert->gpt-4o-mini)", "ceiling (gpt-4o-mini)", "PGR 95% CI"):
        assert row in table
    baseline = [r for r in fake.requests("POST", "/v1/chat/completions") if r["body"]["model"] == "gpt-4o-mini-2024-07-18"
                and len(r["body"]["messages"]) == 10]  # system + 4 demonstrations (user, assistant) + the input
    assert len(baseline) == 40 and "gpt-4o-mini (pretrained)" in table  # the prompted baseline row, on every test sentence
    store = Store(db, readonly=True)
    evals = {(r["task"], r["status"]) for r in store.db.query("SELECT task, status FROM stages WHERE kind = 'eval'")}
    assert {t for t, _ in evals} == {f"ethics/{s}" for s in ("justice", "deontology", "virtue", "utilitarianism", "commonsense")}
    assert {s for _, s in evals} == {"done"}
    asked = {r["body"]["messages"][-1]["content"] for r in fake.requests("POST", "/v1/chat/completions")}
    hard = (ROOT / "tests/fixtures/ethics/justice/justice_test_hard.csv").read_text().splitlines()[1].split(",", 1)[1]
    assert any(hard in prompt for prompt in asked)  # Hard Test rows were asked too
    systems = {r["body"]["messages"][0]["content"].rsplit(":", 1)[1] for r in fake.requests("POST", "/v1/chat/completions")
               if r["body"]["model"] == "gpt-4o-mini-2024-07-18"}  # the pretrained model: SST-2 baseline and ETHICS evals
    assert systems == {" negative or positive.", " unreasonable or reasonable.", " no or yes.", " first or second.", " acceptable or wrong."}
    assert "ethics/justice" in table


class Bar:
    def set_postfix_str(self, text):
        pass

    def update(self, n):
        pass

    def close(self):
        pass


def test_ctrl_c_leaves_the_job_running_by_default_or_cancels_it_when_asked(fake, monkeypatch):
    from openai import OpenAI

    fake.jobs_released.clear()
    client = OpenAI(api_key=KEY, base_url=fake.url)
    upload = client.files.create(file=("t.jsonl", b"{}\n"), purpose="fine-tune")

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(openai_jobs.time, "sleep", interrupt)
    for cancel, expected in ((False, "validating_files"), (True, "cancelled")):
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=upload.id)
        ctx = Ctx(f"k-{cancel}")
        ctx.progress = lambda *a, **k: Bar()
        model = openai_api.OpenAIModel({"base_url": fake.url, "cancel_on_interrupt": cancel})
        with pytest.raises(KeyboardInterrupt):
            openai_jobs.wait(model, model.client(), job, ctx)
        assert fake.jobs[job.id]["status"] == expected
        assert len(fake.requests("POST", f"/v1/fine_tuning/jobs/{job.id}/cancel")) == int(cancel)
    assert ctx.find_job("openai")["status"] == "cancelled"


def test_prompted_baseline_model_is_the_base_model_without_a_job():
    model = openai_api.OpenAIModel({"top_logprobs": 5}, {"n_epochs": 2})
    model.label = "gpt-4o-mini"
    base = model.prompted(k_shot=3)
    assert base.label == "gpt-4o-mini (pretrained)" and base.options.finetune is False and base.options.k_shot == 3
    assert base.options.top_logprobs == 5 and base.spec() != model.spec()


@pytest.mark.slow
def test_the_cost_estimate_in_the_study_header_matches_a_dry_run_on_the_real_data(runner, tmp_path, monkeypatch):
    shared = ROOT.parent / "shared" / "data"
    monkeypatch.setenv("W2S_DATA_DIR", str(shared / "ethics"))
    study = ROOT / "studies" / "sst2_bert_gpt4o.toml"
    result = run_cli(runner, "study", "run", study, "--db", tmp_path / "w.db", "--dry-run", "--set", f"task.data_dir={shared / 'sst2'}")
    assert result.exit_code == 0, result.output
    assert result.output.count("fine-tune: 494612 tokens x 3 epochs") == 2  # the header's 2.97M training tokens
    usd = float(re.search(r"estimated cost \$([\d.]+)", result.output).group(1))
    assert 8.9 < usd < 9.5 and "about $9.50" in study.read_text()  # Test only here; Hard Test adds ~$0.27


def test_a_request_that_fails_for_good_keeps_the_answers_in_flight_and_the_rerun_asks_only_the_rest(runner, tmp_path, sentiment_dir, fake):
    unique_sentences(sentiment_dir)
    fake.inject("/v1/chat/completions", 400)  # not retryable: the first predict stage fails
    f, db = tmp_path / "s.toml", tmp_path / "w.db"
    f.write_text(openai_study(sentiment_dir, fake.url))
    result = run_cli(runner, "study", "run", f, "--db", db, "--yes")
    assert result.exit_code == 1 and "BadRequestError" in result.output
    chats = fake.requests("POST", "/v1/chat/completions")
    failed_model = chats[0]["body"]["model"]
    answered = [r["body"]["messages"][-1]["content"] for r in chats if r["body"]["model"] == failed_model and r["status"] == 200]
    assert 1 <= len(answered) < 30 and db_count(db, "SELECT count(*) FROM partial_predictions") == len(answered)  # all kept
    mark = len(fake.log)
    result = run_cli(runner, "study", "run", f, "--db", db, "--yes")
    assert result.exit_code == 0, result.output
    again = [r["body"]["messages"][-1]["content"] for r in fake.log[mark:] if r["path"] == "/v1/chat/completions"]
    assert len(again) == 30 - len(answered) and len(set(answered) | set(again)) == 30


def test_limit_caps_the_cross_task_evals_too(runner, tmp_path, sentiment_dir, monkeypatch, tiny_bert):
    monkeypatch.setenv("W2S_DATA_DIR", str(ROOT / "tests" / "fixtures" / "ethics"))
    result = run_cli(runner, "study", "run", ROOT / "studies" / "sst2_bert_gpt4o.toml", "--db", tmp_path / "w.db", "--dry-run",
                     "--limit", "3", "--set", f"task.data_dir={sentiment_dir}",
                     "--set", f'weak.options.path="{tiny_bert}"')  # planning checks bert can be loaded: offline, a local BERT
    assert result.exit_code == 0, result.output
    counts = [int(n) for n in re.findall(r"eval .* (\d+) one-token completions", result.output)]
    assert len(counts) == 18 and max(counts) == 3  # 3 models x (5 Test + 1 Hard Test with fixture data), <= 3 rows each


def test_k_shot_demonstrations_are_label_balanced_and_seeded():
    answers = np.array([0] * 90 + [1] * 10)
    picks = openai_answers.balanced_picks(answers, 4, seed=0)
    assert sorted(answers[picks]) == [0, 0, 1, 1] and len(set(picks)) == 4
    assert picks == openai_answers.balanced_picks(answers, 4, seed=0) != openai_answers.balanced_picks(answers, 4, seed=1)
    assert len(openai_answers.balanced_picks(answers[:3], 8, seed=0)) == 3


def test_a_rejected_key_is_one_line_and_the_key_is_not_stored(runner, tmp_path, sentiment_dir, fake, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-0000")
    f, db = tmp_path / "s.toml", tmp_path / "w.db"
    f.write_text(openai_study(sentiment_dir, fake.url))
    result = run_cli(runner, "study", "run", f, "--db", db, "--yes")
    assert result.exit_code == 1
    assert "FAILED: W2SError: the OpenAI API rejected the key (401); check OPENAI_API_KEY or run `w2s keys set openai`" in result.output
    assert {r["status"] for r in fake.log} == {401} and fake.jobs == {}
    assert b"sk-wrong-key-0000" not in db.read_bytes() and "sk-wrong-key-0000" not in result.output
