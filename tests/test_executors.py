"""Executors and a shared store: local, processes and Ray give the same numbers; two drivers never run a
stage twice; stale claims are taken over; a killed Ray worker loses nothing; bad choices are one line."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils

from conftest import sst2_study, write_sentiment_tsvs
from w2s.commands.cli import cli
from w2s.storing.claims import Owner, is_live

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"W2S_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
RAY_NODE_KEY = "sk-fake-ray-node-key-51c2"


def hf_table(path, label, epochs=2, extra="") -> str:
    return (f'model = "hf"\nlabel = "{label}"\noptions = {{ path = "{path}", max_length = 16{extra} }}\n'
            f"train = {{ epochs = {epochs}, batch_size = 16, lr = 1e-3 }}\n")


def grid_toml(data, bert) -> str:
    """Two weak and two strong models: 4 pairs, 22 stages, many of them independent; every checkpoint is kept, so
    predict stages load a fit's weights on whichever worker (or Ray node) they land."""
    return f"""
[study]
name = "grid"
keep_checkpoints = "all"
[task]
name = "sst2"
data_dir = "{data}"
n_weak_train = 40
n_transfer = 80
n_test = 60
[[weak]]
model = "bow"
[[weak]]
model = "bow"
label = "bow-c01"
train = {{ C = 0.1 }}
[[strong]]
{hf_table(bert, "bert-l1", extra=", num_layers = 1")}
[[strong]]
{hf_table(bert, "bert-l2")}
"""


def slow_toml(data, bert, loss="xent", name="slow") -> str:
    """bow -> tiny BERT with 15 epochs (75 steps), so a fit lasts long enough to be caught running."""
    strong = hf_table(bert, "bert").replace("epochs = 2", "epochs = 15")
    return sst2_study(data, strong, name=name, extra=f'[[losses]]\nname = "{loss}"\n')


def w2s_run(study: Path, db: Path, *args, threads: int | None = 1, **popen) -> subprocess.Popen:
    """`w2s study run` in its own process; one torch thread per stage unless told (the same count, the same bits)."""
    cmd = [sys.executable, "-m", "w2s", "study", "run", str(study), "--db", str(db), *map(str, args)] + (["--threads", str(threads)] if threads else [])
    env = {**os.environ, **QUIET}  # read now: a Ray runtime started by a fixture sets its auth variables
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen, timeout=300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def predictions(db: Path) -> dict:
    rows = sqlite_utils.Database(db).query("SELECT stage_key, split, example_id, probs_json FROM predictions")
    return {(r["stage_key"], r["split"], r["example_id"]): json.loads(r["probs_json"]) for r in rows}


def wait_for_row(db: Path, sql: str, proc: subprocess.Popen, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            row = next(sqlite_utils.Database(db).query(sql), None)
        except Exception:  # the store is not created yet
            row = None
        if row:
            return row
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {sql}")


def overlapping(db: Path) -> list[tuple[str, str]]:
    """Pairs of stages whose recorded [started, finished] intervals overlap."""
    rows = list(sqlite_utils.Database(db).query("SELECT key, started, finished FROM stages WHERE status = 'done' ORDER BY started"))
    return [(a["key"], b["key"]) for i, a in enumerate(rows) for b in rows[i + 1:] if b["started"] < a["finished"]]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("executors")
    data = write_sentiment_tsvs(root / "data")
    out = {"root": root}
    for name, text in (("grid", grid_toml(data, tiny_bert)), ("slow", slow_toml(data, tiny_bert)),
                       ("slow_b", slow_toml(data, tiny_bert, loss="logconf", name="slow-b"))):
        out[name] = root / f"{name}.toml"
        out[name].write_text(text)
    return out


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray runtime for the module (2 CPUs, no dashboard); drivers connect with --ray-address.

    Like a real cluster node, its workers have the API key in their own environment: w2s never ships secrets.
    """
    ray = pytest.importorskip("ray")
    saved = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = RAY_NODE_KEY
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    finally:
        os.environ.pop("OPENAI_API_KEY") if saved is None else os.environ.update(OPENAI_API_KEY=saved)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(files):
    """The slow study, then its logconf twin, run one after the other in a fresh store with the local executor."""
    db = files["root"] / "reference.db"
    finish(w2s_run(files["slow"], db))
    finish(w2s_run(files["slow_b"], db))
    return db


def test_processes_and_ray_give_the_same_predictions_as_local_and_overlap(files, ray_address):
    root = files["root"]
    runs = {"local": [], "processes": ["--executor", "processes", "--jobs", 2], "ray": ["--executor", "ray", "--jobs", 2, "--ray-address", ray_address]}
    dbs = {name: root / f"grid-{name}.db" for name in runs}
    outputs = {name: finish(w2s_run(files["grid"], dbs[name], *args)) for name, args in runs.items()}
    assert "executor: processes (2 workers, 1 torch thread(s) each)" in outputs["processes"]
    assert "executor: ray on " in outputs["ray"]
    local = predictions(dbs["local"])
    assert len(local) == 2 * (80 + 60) + 2 * 60 + 4 * 60  # 2 weak (transfer + test), 2 ceilings, 4 students
    for name in ("processes", "ray"):
        assert predictions(dbs[name]) == local, name  # bit-identical with one torch thread per stage
        pairs = overlapping(dbs[name])
        assert pairs, f"{name}: no two stages ran at the same time"
        workers = {r["key"]: json.loads(r["worker_json"]) for r in sqlite_utils.Database(dbs[name]).query("SELECT key, worker_json FROM stages")}
        assert any(workers[a]["pid"] != workers[b]["pid"] for a, b in pairs)
        assert all(w["threads"] == 1 for w in workers.values() if "threads" in w)
    # with the default threads (all cores locally) only the last float bits move: no prediction changes
    default = root / "grid-default.db"
    finish(w2s_run(files["grid"], default, threads=None))
    other = predictions(default)
    assert other.keys() == local.keys()
    assert all(np.argmax(other[k]) == np.argmax(local[k]) and np.allclose(other[k], local[k], atol=1e-5) for k in local)


def test_two_drivers_on_one_store_run_each_shared_stage_once(files, reference):
    db = files["root"] / "shared.db"
    first, second = w2s_run(files["slow"], db), w2s_run(files["slow_b"], db)
    logs = [finish(first), finish(second)]
    assert any("waiting for " in log and "(running in pid " in log for log in logs), logs
    store = sqlite_utils.Database(db)
    assert {r["status"] for r in store.query("SELECT status FROM studies")} == {"done"}
    shared = [r["stage_key"] for r in store.query(
        "SELECT stage_key FROM study_stages GROUP BY stage_key HAVING count(DISTINCT study_id) = 2")]
    assert len(shared) == 2  # the weak and the ceiling fit, each predicting on its splits in its own stage
    for key in shared:
        assert store.execute("SELECT count(*) FROM stages WHERE key = ?", [key]).fetchone()[0] == 1
        attempts = list(store.query("SELECT status, run_id FROM stage_attempts WHERE stage_key = ?", [key]))
        assert [a["status"] for a in attempts] == ["done"], (key, attempts)  # one execution, by one driver
    assert predictions(db) == predictions(reference)


def test_a_killed_drivers_claim_is_taken_over_and_the_results_match_a_clean_run(files, reference, tmp_path):
    db = tmp_path / "killed.db"
    proc = w2s_run(files["slow"], db)
    row = wait_for_row(db, "SELECT key FROM stages WHERE role = 'ceiling' AND status = 'running' AND worker_json IS NOT NULL", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    out = finish(w2s_run(files["slow"], db))
    assert "waiting for" not in out  # the owner is gone: no wait, the claim is taken over at once
    attempts = [a["status"] for a in sqlite_utils.Database(db).query("SELECT status FROM stage_attempts WHERE stage_key = ? ORDER BY id", [row["key"]])]
    assert attempts == ["abandoned", "done"]
    ours = predictions(db)
    assert ours == {k: v for k, v in predictions(reference).items() if k in ours} and len(ours) == 80 + 3 * 60


def test_a_stopped_drivers_claim_goes_stale_after_the_heartbeat_timeout(files, reference, tmp_path, monkeypatch):
    """SIGSTOP keeps the owner process alive but silent: its claim is taken over once the heartbeat is stale,
    and when it wakes up its result is not recorded over the new owner's."""
    monkeypatch.setenv("W2S_CLAIM_TIMEOUT", "3")
    db = tmp_path / "stopped.db"
    stopped = w2s_run(files["slow"], db)
    row = wait_for_row(db, "SELECT key FROM stages WHERE role = 'ceiling' AND status = 'running' AND worker_json IS NOT NULL", stopped)
    stopped.send_signal(signal.SIGSTOP)
    try:
        out = finish(w2s_run(files["slow"], db), timeout=200)
    finally:
        stopped.send_signal(signal.SIGCONT)
    assert f"(running in pid {stopped.pid} on {socket.gethostname()})" in out  # it waited first, then took over
    stopped.communicate(timeout=200)
    store = sqlite_utils.Database(db)
    attempts = [a["status"] for a in store.query("SELECT status FROM stage_attempts WHERE stage_key = ? ORDER BY id", [row["key"]])]
    assert attempts[-1] == "done" and attempts.count("done") == 1
    ours = predictions(db)
    assert ours == {k: v for k, v in predictions(reference).items() if k in ours}


def test_a_ray_worker_killed_mid_stage_is_retried_and_nothing_is_lost(files, reference, ray_address, tmp_path):
    db = tmp_path / "ray-killed.db"
    proc = w2s_run(files["slow"], db, "--executor", "ray", "--ray-address", ray_address)
    row = wait_for_row(db, "SELECT key, worker_json FROM stages WHERE role = 'ceiling' AND status = 'running' AND worker_json IS NOT NULL", proc)
    victim = json.loads(row["worker_json"])["pid"]
    os.kill(victim, signal.SIGKILL)
    finish(proc)
    store = sqlite_utils.Database(db)
    stage = next(store.query("SELECT status, worker_json FROM stages WHERE key = ?", [row["key"]]))
    assert stage["status"] == "done" and json.loads(stage["worker_json"])["pid"] != victim  # Ray ran it again elsewhere
    ours = predictions(db)
    assert ours == {k: v for k, v in predictions(reference).items() if k in ours} and len(ours) == 80 + 3 * 60


def test_claims_are_live_only_while_the_owner_beats_and_exists():
    me = Owner.me()
    now = time.time()
    other_host = {"host": "elsewhere", "pid": 1, "run": "r1"}
    assert is_live(other_host, now, me)
    assert not is_live(other_host, now - 120, me, timeout=60)  # no heartbeat for two minutes
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    assert not is_live({"host": me.host, "pid": int(dead), "run": "r2"}, now, me)  # the owner process is gone
    assert not is_live({"host": me.host, "pid": me.pid, "run": "older"}, now, me)  # an earlier run in this process
    assert not is_live(None, None, me)  # a claim from before claims existed


@pytest.mark.parametrize("args, message", [
    (["--executor", "proceses"], "executor 'proceses': unknown (did you mean 'processes'?); valid: local, processes, ray"),
    (["--executor", "processes", "--jobs", "0"], "--jobs 0: run at least one stage at a time; use --jobs 1 or more"),
    (["--threads", "0"], "--threads 0: give each stage at least one thread; use --threads 1 or more"),
])
def test_bad_executor_choices_are_one_line_and_store_nothing(runner, files, tmp_path, args, message):
    db = tmp_path / "w.db"
    result = runner.invoke(cli, ["study", "run", str(files["grid"]), "--db", str(db), *args])
    assert result.exit_code == 1 and result.output.strip() == f"Error: {message}"
    assert sqlite_utils.Database(db).execute("SELECT count(*) FROM studies").fetchone()[0] == 0


def test_the_executor_table_of_a_study_file_is_checked_too(runner, files, tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(files["grid"].read_text() + '\n[executor]\nname = "rayy"\n')
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(tmp_path / "w.db")])
    assert result.output.strip() == "Error: executor 'rayy': unknown (did you mean 'ray'?); valid: local, processes, ray"


def test_ray_missing_or_unreachable_is_one_line(runner, files, tmp_path, monkeypatch):
    db = tmp_path / "w.db"
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(cli, ["study", "run", str(files["grid"]), "--db", str(db), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert f"--ray-address 127.0.0.1:{port}: cannot reach a Ray cluster there (" in result.output and "ray start --head" in result.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    result = runner.invoke(cli, ["study", "run", str(files["grid"]), "--db", str(db), "--executor", "ray"])
    assert result.output.strip() == 'Error: executor ray: Ray is not installed; install it with `pip install "w2s[ray]"`'


def test_openai_answers_under_ray_are_persisted_by_the_driver_and_never_asked_again(tmp_path, ray_address, monkeypatch):
    """A driver on Ray is killed mid-inference: what its events delivered is in the store, and the rerun asks none of it again."""
    from fake_openai import FakeOpenAI

    fake = FakeOpenAI(api_key=RAY_NODE_KEY).start()
    monkeypatch.setenv("OPENAI_API_KEY", RAY_NODE_KEY)  # the driver's own check (preflight) reads it too
    try:
        data = write_sentiment_tsvs(tmp_path / "data")
        for name in ("train.tsv", "test.tsv"):  # a serial number on every sentence: each prompt is unique
            lines = (data / name).read_text().splitlines()
            (data / name).write_text("\n".join([lines[0], *(f"{t} no{i}\t{y}" for i, (t, y) in enumerate(x.split("\t") for x in lines[1:]))]) + "\n")
        strong = f'model = "gpt-4o-mini"\n[strong.options]\nbase_url = "{fake.url}"\npoll_seconds = 0.05\nmax_concurrency = 4\n'
        study = tmp_path / "oa.toml"
        study.write_text(sst2_study(data, strong, n=(40, 40, 30), name="oa-ray"))
        db = tmp_path / "w.db"
        fake.hold_chat_after = 12  # answer 12 completions, then hold the rest until the driver is gone
        proc = w2s_run(study, db, "--executor", "ray", "--ray-address", ray_address, "--yes")

        def asked(entries, answered=None):
            return [(r["body"]["model"], r["body"]["messages"][-1]["content"]) for r in entries
                    if r["path"] == "/v1/chat/completions" and (answered is None or (r["answered"] and r["status"] == 200) == answered)]

        def settled():  # every answer so far is in the store, and the rest are held
            chats = [r for r in list(fake.log) if r["path"] == "/v1/chat/completions"]
            answered = len(asked(chats, True))
            if not (answered >= 12 and any(r.get("held") for r in chats) and all(r["answered"] or r.get("held") for r in chats)):
                return None
            store = sqlite_utils.Database(db)
            jobs = {r["job_id"] for r in store.query("SELECT job_id FROM jobs")}  # the second job may start later on a busy machine
            return (answered == store.execute("SELECT count(*) FROM partial_predictions").fetchone()[0] and jobs == set(fake.jobs)) or None

        deadline = time.monotonic() + 120
        while not settled():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0] if proc.poll() is not None else "timed out"
            time.sleep(0.05)
        stored_jobs = {r["job_id"] for r in sqlite_utils.Database(db).query("SELECT job_id FROM jobs")}
        assert stored_jobs == set(fake.jobs) and len(stored_jobs) >= 1  # each job id reached the store as an event
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        before = asked(fake.log, True)
        fake.abandon_held()
        mark = len(fake.log)
        finish(w2s_run(study, db, "--executor", "ray", "--ray-address", ray_address, "--yes"))
        after = asked(fake.log[mark:])
        assert len(before) >= 12 and not set(before) & set(after)  # nothing answered before the kill is asked again
        assert len(fake.jobs) == 2  # and no fine-tuning job was launched twice
        resumed = sorted(r["value"] for r in sqlite_utils.Database(db).query("SELECT value FROM metrics WHERE name = 'resumed_predictions'"))
        assert 1 <= len(resumed) <= 2 and sum(resumed) == len(before)  # the predict stages that had answers resume them all
    finally:
        fake.stop()


def test_an_executor_plugin_registered_through_the_hook_runs_a_study(runner, files, tmp_path):
    """A third-party executor (here inline; a Slurm one would come from a package) is found by name and used."""
    from w2s import plugins
    from w2s.hookspecs import hookimpl
    from w2s.running.executors import LocalExecutor

    class CountingExecutor(LocalExecutor):
        """Runs in-process and counts what it was given."""

        name = "counting"
        submitted: list[str] = []

        def submit(self, work):
            self.submitted.append(work.kind)
            super().submit(work)

    class ExecutorPlugin:
        @hookimpl
        def register_executors(self, register):
            register(CountingExecutor)

    unregister = plugins.register_inline(ExecutorPlugin(), "counting-executor")
    try:
        listed = runner.invoke(cli, ["plugins", "list", "--json"])
        assert {"name": "counting", "kind": "executor"}.items() <= next(r for r in json.loads(listed.output) if r["name"] == "counting").items()
        result = runner.invoke(cli, ["study", "run", str(files["grid"]), "--db", str(tmp_path / "w.db"), "--executor", "counting"])
        assert result.exit_code == 0, result.output
        assert "executor: counting" in result.output
        assert sorted(set(CountingExecutor.submitted)) == ["evaluate", "fit", "predict"] and len(CountingExecutor.submitted) == 22
    finally:
        unregister()


def test_drivers_that_open_a_new_store_at_the_same_moment_all_succeed(files, tmp_path):
    """Creating the schema is serialized (a lock file beside the store): without it, one of two drivers
    starting together on a fresh store failed with 'database is locked' about one time in eight."""
    db = tmp_path / "fresh.db"
    procs = [w2s_run(files["grid"], db, "--dry-run") for _ in range(4)]
    for proc in procs:
        assert "22 stages (0 cached)" in finish(proc, timeout=120)


def test_sigterm_ends_a_run_like_ctrl_c_and_stops_its_worker_processes(files, reference, tmp_path):
    """`kill` on the driver: one line, exit 130, the running stage recorded as interrupted, and no worker computing on
    as an orphan; the rerun resumes and matches a clean run."""
    db = tmp_path / "terminated.db"
    proc = w2s_run(files["slow"], db, "--executor", "processes", "--jobs", "2")
    row = wait_for_row(db, "SELECT key, worker_json FROM stages WHERE role = 'ceiling' AND status = 'running' AND worker_json IS NOT NULL", proc)
    worker = json.loads(row["worker_json"])["pid"]
    assert worker != proc.pid  # the stage runs in a worker process
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert out.strip().splitlines()[-1] == "w2s: interrupted; finished stages are kept, rerun the same command to resume"
    deadline = time.monotonic() + 30
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(worker)
    attempts = sqlite_utils.Database(db).query("SELECT status, error FROM stage_attempts WHERE stage_key = ? ORDER BY id", [row["key"]])
    assert [(a["status"], a["error"]) for a in attempts] == [("interrupted", "interrupted (Ctrl-C or SIGTERM)")]
    finish(w2s_run(files["slow"], db))
    ours = predictions(db)
    assert ours == {k: v for k, v in predictions(reference).items() if k in ours} and len(ours) == 80 + 3 * 60


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan nobody has reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_killed_mid_stage_ends_its_pool_and_the_rerun_resumes(files, reference, tmp_path):
    """SIGKILL (as the OOM killer does) on a worker process: the driver does not wait on it forever; the stages of
    its pool fail with a line saying a worker died, and a rerun finishes them with a clean run's results."""
    db = tmp_path / "oom.db"
    proc = w2s_run(files["slow"], db, "--executor", "processes", "--jobs", "2")
    row = wait_for_row(db, "SELECT key, worker_json FROM stages WHERE role = 'ceiling' AND status = 'running' AND worker_json IS NOT NULL", proc)
    os.kill(json.loads(row["worker_json"])["pid"], signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert "the worker process died" in out or "a worker process died (exit code -9" in out
    statuses = [a["status"] for a in sqlite_utils.Database(db).query("SELECT status FROM stage_attempts WHERE stage_key = ?", [row["key"]])]
    assert statuses == ["failed"]
    finish(w2s_run(files["slow"], db))
    ours = predictions(db)
    assert ours == {k: v for k, v in predictions(reference).items() if k in ours} and len(ours) == 80 + 3 * 60


def test_a_dead_worker_the_pool_missed_still_ends_its_stages():
    """The pool can miss a death (an OOM-killed worker stayed a zombie for minutes while its stages showed as running):
    the executor polls its workers' exit codes, ends every pending stage with the cause, and stops the pool."""
    from concurrent.futures import Future

    from w2s.running.executors import ExecutorOptions, ProcessExecutor

    class Process:
        def __init__(self, exitcode):
            self.exitcode, self.terminated = exitcode, False

        def terminate(self):
            self.terminated = True

    class Pool:
        def __init__(self, *codes):
            self._processes = {i: Process(code) for i, code in enumerate(codes)}
            self.shut = False

        def shutdown(self, wait=True, cancel_futures=False):
            self.shut = True

    executor = ProcessExecutor(ExecutorOptions(name="processes", jobs=2))
    executor._pool = healthy = Pool(None, None)
    executor._futures = {Future(): "a", Future(): "b"}  # never finish on their own
    assert executor.collect(lambda event: None, timeout=0.01) == [] and len(executor._futures) == 2  # all alive: wait on
    executor._pool = broken = Pool(None, -9)
    outcomes = executor.collect(lambda event: None, timeout=0.01)
    assert sorted(o.key for o in outcomes) == ["a", "b"] and all(o.result is None for o in outcomes)
    assert {o.error for o in outcomes} == {"the worker pool broke when a worker process died (exit code -9; -9 is a kill, e.g. out of "
                                           "memory); rerun to retry the stage"}
    assert executor._futures == {} and executor._pool is None and broken.shut and all(p.terminated for p in broken._processes.values())
    assert not healthy.shut
