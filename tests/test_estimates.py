"""Plan-time estimates: `study run --dry-run` prints each pending stage's wall time from the throughput
measured in the store (same kind, same model spec), and "no estimate yet" without a measurement."""

import json
import re
from types import SimpleNamespace

import pytest
import sqlite_utils

from w2s.commands.cli import cli
from w2s.commands.estimates import duration
from w2s.storing.store import Store
from w2s.storing.throughput import measured_rates, stage_seconds
from conftest import study_toml as tiny_study


def study_toml(*args, **kwargs) -> str:
    """The tiny study with every checkpoint kept: these tests time fit and predict stages apart (tests/test_keep_checkpoints.py
    checks that a folded fit, which predicts inside its stage, is estimated from folded fits)."""
    return tiny_study(*args, **kwargs).replace("seeds = [0]", 'seeds = [0]\nkeep_checkpoints = "all"', 1)

CEILING_FIT = "fit ceiling hf on transfer (ground truth)"
N_TRANSFER, N_TEST, EPOCHS = 80, 60, 2  # study_toml's sizes and strong.train.epochs
HF_DEFAULT_EPOCHS = 2  # w2s.train.TrainConfig.epochs: study_toml's epochs = 2 is the default, so the stored spec omits it


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_bert):
    """A tiny bow -> hf study (one loss) run once: (study file, db)."""
    from click.testing import CliRunner
    from conftest import write_sentiment_tsvs

    tmp_path = tmp_path_factory.mktemp("estimates")
    f = tmp_path / "s.toml"
    f.write_text(study_toml(write_sentiment_tsvs(tmp_path / "data"), tiny_bert, losses=("xent",)))
    db = tmp_path / "w2s.db"
    result = CliRunner().invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert result.exit_code == 0, result.output
    return f, db


def dry_run(runner, f, db, *args) -> dict[str, str]:
    """The dry run's plan lines as title -> what follows the `(mark, key ...)` part, plus the total line under "total"."""
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(db), "--dry-run", *args])
    assert result.exit_code == 0, result.output
    lines = {}
    for line in result.output.splitlines():
        plan = re.match(r"  \[\d+/\d+\] (.*)  \((?:cached|to run|[a-z]+), key \w+\)(.*)$", line)
        if plan:
            lines[plan[1]] = plan[2].strip()
        elif line.startswith("estimated wall time"):
            lines["total"] = line
    return lines


def stored_rate(db, kind: str, model: str) -> tuple[float, str]:
    """Independently of w2s: examples (fit: times epochs) per second over the done stages of `kind` of
    model label `model`, and that model's stored spec."""
    d = sqlite_utils.Database(db)
    rows = list(d.query("SELECT key, model_json, spec_json, seconds FROM stages WHERE kind = ? AND model = ? AND status = 'done'", [kind, model]))
    assert rows and len({json.dumps(json.loads(r["model_json"]), sort_keys=True) for r in rows}) == 1
    work = 0
    for r in rows:
        if kind == "fit":
            n = d.execute("SELECT n FROM splits WHERE key = ?", [json.loads(r["spec_json"])["data"]]).fetchone()[0]
            work += n * json.loads(r["model_json"])["train"].get("epochs", HF_DEFAULT_EPOCHS)  # stored specs keep non-defaults only
        else:
            work += d.execute("SELECT count(*) FROM predictions WHERE stage_key = ?", [r["key"]]).fetchone()[0]
    return work / sum(r["seconds"] for r in rows), rows[0]["model_json"]


def printed_seconds(note: str) -> float:
    """A plan line's `~ 4.3 s` as a number (two significant digits below 10 s); `< 0.01 s` as 0."""
    if note == "< 0.01 s":
        return 0.0
    match = re.fullmatch(r"~ ([\d.]+) s", note)
    assert match, note
    return float(match[1])


def shows_seconds(note: str, expected: float) -> bool:
    """Whether a plan line prints `expected` seconds: `< 0.01 s` below that (a tiny model's predict can be), else to 5%."""
    if expected < 0.01:
        return note == "< 0.01 s"
    return printed_seconds(note) == pytest.approx(expected, rel=0.051)


def test_empty_store_has_no_estimate(runner, tmp_path, sentiment_dir, tiny_bert):
    f = tmp_path / "s.toml"
    f.write_text(study_toml(sentiment_dir, tiny_bert))
    lines = dry_run(runner, f, tmp_path / "empty.db")
    total = lines.pop("total")
    assert len(lines) == 11
    timed = {t: note for t, note in lines.items() if not t.startswith("evaluate")}
    assert len(timed) == 9 and set(timed.values()) == {"no estimate yet"}
    assert {note for t, note in lines.items() if t.startswith("evaluate")} == {"instant"}
    assert total.startswith("estimated wall time of the 11 pending stages: no estimate yet"), total


def test_new_seed_is_estimated_from_the_measured_rate(runner, ran):
    f, db = ran
    lines = dry_run(runner, f, db, "--seed", "1")
    total = lines.pop("total")
    assert len(lines) == 8 and "no estimate yet" not in lines.values()
    rate, spec = stored_rate(db, "fit", "hf")
    expected = N_TRANSFER * EPOCHS / rate
    assert "epochs" not in json.loads(spec)["train"] and EPOCHS == HF_DEFAULT_EPOCHS
    assert shows_seconds(lines[CEILING_FIT], expected)
    # the same number, unrounded, from the estimate function on a stage of that spec
    rates = measured_rates(Store(db))
    fit = SimpleNamespace(kind="fit", row={"model_json": spec}, examples=[None] * N_TRANSFER, model=None)
    assert stage_seconds(fit, rates) == pytest.approx(expected, rel=1e-9)
    predict_rate, predict_spec = stored_rate(db, "predict", "hf")
    predict = SimpleNamespace(kind="predict", row={"model_json": predict_spec}, examples=[None] * N_TEST, model=None)
    assert stage_seconds(predict, rates) == pytest.approx(N_TEST / predict_rate, rel=1e-9)
    assert shows_seconds(lines["predict hf (ceiling) on test"], N_TEST / predict_rate)
    hf = [printed_seconds(note) for title, note in lines.items() if re.search(r"\bhf\b", title) and not title.startswith("evaluate")]
    assert len(hf) == 4
    match = re.fullmatch(r"estimated wall time of the 8 pending stages: ([\d.]+) s \(on the throughput measured in this store\)", total)
    assert match, total
    assert float(match[1]) >= 0.95 * sum(hf)  # the bow stages add a little


def test_a_model_never_run_has_no_estimate(runner, ran):
    f, db = ran
    lines = dry_run(runner, f, db, "--seed", "1", "--set", "strong.options.max_length=24")
    total = lines.pop("total")
    hf = {t: note for t, note in lines.items() if " hf " in f" {t} " and not t.startswith("evaluate")}
    assert len(hf) == 4 and set(hf.values()) == {"no estimate yet"}
    assert lines["fit weak bow on weak_train (ground truth)"].startswith(("~ ", "< "))  # measured: "< 0.01 s" when bow was that fast
    assert total.startswith("estimated wall time of the 8 pending stages: at least ") and total.endswith("4 stages have no estimate yet)"), total


def test_other_epochs_scale_the_rate_of_the_same_model(runner, ran):
    """No exact match (other train settings): same model and options, scaled by epochs."""
    f, db = ran
    lines = dry_run(runner, f, db, "--seed", "1", "--set", "strong.train.epochs=6")
    rate, _ = stored_rate(db, "fit", "hf")
    assert shows_seconds(lines[CEILING_FIT], N_TRANSFER * 6 / rate)


def test_fallback_counts_a_default_epochs_spec_at_the_model_default(tmp_path):
    """A stored spec without train.epochs ran the model's default epochs (here 2)."""
    store = Store(tmp_path / "w2s.db")
    stored = {"model": "hf", "version": 1, "options": {"path": "m"}, "train": {}}
    store.record_split("split-a", "sst2", "transfer", 0, [str(i) for i in range(100)])
    store.db["stages"].insert({"id": "s1", "key": "k1", "kind": "fit", "role": "ceiling", "model": "hf", "model_json": json.dumps(stored),
                               "spec_json": json.dumps({"data": "split-a"}), "status": "done", "created": "now", "seconds": 10.0})
    model = SimpleNamespace(train=SimpleNamespace(epochs=4.0))  # no pydantic fields: one default epoch ...
    rates = measured_rates(store)

    def fit(train, model):
        return SimpleNamespace(kind="fit", row={"model_json": json.dumps({**stored, "train": train})}, examples=[None] * 50, model=model)

    assert stage_seconds(fit({}, model), rates) == pytest.approx(5.0)  # exact: 50 / (100 / 10 s)
    from w2s.train import TrainConfig

    hf = SimpleNamespace(train=TrainConfig())  # default epochs 2: 200 example-epochs in 10 s
    assert TrainConfig.model_fields["epochs"].default == 2
    assert stage_seconds(fit({"epochs": 4}, hf), rates) == pytest.approx(50 * 4 / 20)
    assert HF_DEFAULT_EPOCHS == 2
    assert stage_seconds(fit({"epochs": 4}, model), rates) == pytest.approx(50 * 4 / 10)  # ... without one
    assert stage_seconds(SimpleNamespace(kind="predict", row={"model_json": json.dumps(stored)}, examples=[None], model=None), rates) is None
    other = {**stored, "options": {"path": "m", "max_length": 64}}
    assert stage_seconds(SimpleNamespace(kind="fit", row={"model_json": json.dumps(other)}, examples=[None], model=hf), rates) is None


def test_duration_text():
    assert [duration(s) for s in (0.005, 0.434, 4.34, 42.4, 185, 4320)] == ["< 0.01 s", "0.43 s", "4.3 s", "42 s", "3 min 5 s", "1 h 12 min"]


def planned(key: str, *deps: str) -> SimpleNamespace:
    return SimpleNamespace(key=key, deps=list(deps))


def test_the_wall_time_replays_the_runs_walk_over_the_dag_on_the_estimates():
    """Plan order, a stage once its deps are done, up to N at once; cached deps are done; unknown counts 0."""
    from w2s.running.forecast import wall_seconds

    stages = [planned("a"), planned("b", "a"), planned("c"), planned("d", "b", "c"), planned("e", "cached")]
    seconds = {"a": 10.0, "b": 5.0, "c": 3.0, "d": 0.0, "e": 4.0}
    assert wall_seconds(stages, seconds, 1) == 22.0  # one worker: the sum
    # two: a and c at 0; e at 3 (c done, b still waits on a); b at 10; d at 15
    assert wall_seconds(stages, seconds, 2) == 15.0
    assert wall_seconds(stages, seconds, 8) == 15.0  # the chain a -> b -> d bounds it
    assert wall_seconds(stages, {**seconds, "b": None}, 2) == 10.0  # b unknown: a lower bound
    assert wall_seconds(stages, {"e": 4.0}, 2) == 4.0  # a, b, c, d cached
    assert wall_seconds(stages, {}, 2) == 0.0


def test_the_total_on_two_workers_is_their_wall_time_beside_the_summed_stage_time(runner, ran):
    f, db = ran
    one = dry_run(runner, f, db, "--seed", "1")["total"]
    two = dry_run(runner, f, db, "--seed", "1", "--executor", "processes", "--jobs", "2")["total"]
    summed = float(re.fullmatch(r"estimated wall time of the 8 pending stages: ([\d.]+) s \(on the throughput measured in this store\)", one)[1])
    match = re.fullmatch(r"estimated wall time of the 8 pending stages: ([\d.]+) s on 2 workers \(([\d.]+) s of stage time, "
                         r"on the throughput measured in this store\)", two)
    assert match, two
    wall, stage_time = float(match[1]), float(match[2])
    assert stage_time == summed
    # the weak fit, its two predicts, the ceiling fit and its predict run beside each other; the student waits on the weak labels
    assert summed / 2 <= wall * 1.11 and wall < summed  # 1.11: both are printed to 2 significant digits


def test_a_remote_ray_cluster_without_jobs_gives_the_stage_time_and_says_why(runner, ran):
    f, db = ran
    total = dry_run(runner, f, db, "--seed", "1", "--executor", "ray", "--ray-address", "10.0.0.1:6379")["total"]
    assert re.fullmatch(r"estimated wall time of the 8 pending stages: [\d.]+ s one stage at a time \(on the throughput measured "
                        r"in this store; how many run at once is known only when the executor connects: --jobs N estimates it\)", total), total
    with_jobs = dry_run(runner, f, db, "--seed", "1", "--executor", "ray", "--ray-address", "10.0.0.1:6379", "--jobs", "3")["total"]
    assert " on 3 workers (" in with_jobs, with_jobs
