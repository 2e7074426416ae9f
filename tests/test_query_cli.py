"""Querying past studies: list filters, show, compare, query --param, search, rerun, delete, schema docs."""

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from w2s.commands.cli import cli
from w2s.storing.schema_docs import schema_markdown
from w2s.storing.store import Store
from w2s.storing.queries import fts_query, parse_since
from conftest import write_sentiment_tsvs

ROOT = Path(__file__).resolve().parent.parent


def bow_study(data_dir, name, strong_label="bow-bigrams", losses=("xent",), notes="", seeds=(0,), n_test=60, ngram=2):
    loss_tables = "\n".join(f'[[losses]]\nname = "{loss}"\n' for loss in losses)
    return f"""
[study]
name = "{name}"
seeds = [{", ".join(map(str, seeds))}]
notes = "{notes}"

[task]
name = "sst2"
data_dir = "{data_dir}"
n_weak_train = 40
n_transfer = 80
n_test = {n_test}

[weak]
model = "bow"

[strong]
model = "bow"
label = "{strong_label}"
options = {{ ngram_max = {ngram} }}

{loss_tables}
"""


def invoke(*args, input=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input)
    assert result.exit_code == 0, result.output
    return result


def run_study(folder: Path, db: Path, text: str, file_name: str, *extra) -> str:
    path = folder / file_name
    path.write_text(text)
    invoke("study", "run", path, "--db", db, *extra)
    return Store(db, readonly=True).find_study(text.split('name = "')[1].split('"')[0])["id"]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Two stored studies sharing a weak model: A (xent, logconf; notes mention linear probes) and B (xent, --limit 50)."""
    folder = tmp_path_factory.mktemp("query")
    data = write_sentiment_tsvs(folder / "data")
    db = folder / "w2s.db"
    a = run_study(folder, db, bow_study(data, "alpha", losses=("xent", "logconf"), notes="bigram students with linear probes"), "a.toml")
    b = run_study(folder, db, bow_study(data, "beta", strong_label="bow-trigram", ngram=3), "b.toml", "--limit", "50")
    return {"db": db, "a": a, "b": b, "folder": folder, "data": data}


def test_list_filters_and_json(stored):
    db = stored["db"]
    rows = json.loads(invoke("study", "list", "--db", db, "--json").stdout)
    assert [r["name"] for r in rows] == ["beta", "alpha"] and rows[0]["task"] == "sst2"
    names = lambda *args: [r["name"] for r in json.loads(invoke("study", "list", "--db", db, "--json", *args).stdout)]
    assert names("-n", "1") == ["beta"]
    assert names("--model", "bow-trigram") == ["beta"]
    assert names("--model", "bow") == ["beta", "alpha"]
    assert names("--model", "gpt2") == []
    assert names("--task", "sst2", "--status", "done") == ["beta", "alpha"]
    assert names("--task", "boolq") == [] and names("--status", "failed") == []
    assert names("--since", "1h") == ["beta", "alpha"] and names("--since", "2999-01-01") == []
    assert names("--search", "probe") == ["alpha"]  # porter stemming: probe matches probes
    assert names("--search", "beta") == ["beta"]
    assert "no studies match" in invoke("study", "list", "--db", db, "--search", "nothing-like-this").output


def test_bad_since_is_one_line(stored):
    result = CliRunner().invoke(cli, ["study", "list", "--since", "yesterday-ish", "--db", str(stored["db"])])
    assert result.exit_code == 1 and "--since 'yesterday-ish': expected a date" in result.output


def test_show_json_and_toml(stored):
    info = json.loads(invoke("study", "show", "alpha", "--db", stored["db"], "--json").stdout)
    assert info["id"] == stored["a"] and info["spec"]["task"]["name"] == "sst2"
    assert {s["role"] for s in info["stages"]} >= {"weak", "student", "ceiling", "evaluate"}
    assert sorted(r["loss"] for r in info["results"]) == ["logconf", "xent"]
    measured = [(r["weak_acc"], r["student_acc"], r["ceiling_acc"]) for r in info["results"]]
    assert measured == [pytest.approx((0.55, 0.5667, 0.85), abs=1e-4)] * 2  # 60 test sentences: bow 33, student 34, ceiling 51
    text = invoke("study", "show", "alpha", "--db", stored["db"]).stdout
    assert f"task sst2 (data {stored['data']}); weak bow; strong bow-bigrams; losses xent, logconf; seeds [0]" in text
    assert "evaluate" in text and "PGR" in text
    toml_text = invoke("study", "show", stored["a"][:12], "--db", stored["db"], "--toml").stdout  # 12: past the ms timestamp
    assert toml_text.strip() == (stored["folder"] / "a.toml").read_text().strip()


def test_ambiguous_id_prefix_is_an_error(tmp_path):
    from w2s.storing.store import Store

    store = Store(tmp_path / "w2s.db")
    for name in ("one", "two"):
        study_id = store.upsert_study(name, "", {}, name, None, {})
        store.db.execute("UPDATE studies SET id = ? WHERE id = ?", [f"01ABCDEF{name.upper()}", study_id])
        store.db.conn.commit()
    result = CliRunner().invoke(cli, ["study", "show", "01ABCDEF", "--db", str(tmp_path / "w2s.db")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (f"Error: study id prefix '01ABCDEF' matches 2 studies in {tmp_path / 'w2s.db'}; "
                                     "give more of the id (see `w2s study list`)")
    assert store.find_study("01ABCDEFT")["name"] == "two" and store.find_study("one")["name"] == "one"


def test_compare_aligns_pairs_and_json_round_trips(stored):
    db = stored["db"]
    table = invoke("study", "compare", "alpha", "beta", "--db", db).stdout
    lines = [line.split() for line in table.splitlines()]
    logconf = [line for line in lines if line[:4] == ["sst2", "bow", "bow-bigrams", "logconf"]]
    assert [line[4] for line in logconf] == ["alpha", "beta"] and logconf[1][5:] == ["-"] * 5 + ["0"]
    data = json.loads(invoke("study", "compare", "alpha", "beta", "--db", db, "--json").stdout)
    assert [s["name"] for s in data["studies"]] == ["alpha", "beta"]
    assert all(p["role"] == "evaluate" for p in data["pairs"])  # chain steps and oracle rows carry their own role
    pairs = {(p["strong"], p["loss"]): p for p in data["pairs"]}
    assert set(pairs) == {("bow-bigrams", "logconf"), ("bow-bigrams", "xent"), ("bow-trigram", "xent")}
    results = Store(db, readonly=True).db.query("SELECT * FROM results WHERE study_id = ? AND loss = 'xent'", [stored["a"]])
    expected = next(iter(results))
    got = pairs[("bow-bigrams", "xent")]["studies"]["alpha"]
    assert got["student_acc"] == pytest.approx(expected["student_acc"]) and got["seeds"] == 1
    assert set(pairs[("bow-trigram", "xent")]["studies"]) == {"beta"}


def test_compare_needs_two_studies(stored):
    result = CliRunner().invoke(cli, ["study", "compare", "alpha", "--db", str(stored["db"])])
    assert result.exit_code == 1 and "at least two studies" in result.output


def test_query_with_bound_params_json_and_csv(stored):
    db = stored["db"]
    sql = "select study, loss, weak_acc from results where task = :t and seed = :s order by study, loss"
    rows = json.loads(invoke("query", sql, "--param", "t=sst2", "-p", "s=0", "--db", db, "--json").stdout)
    assert [(r["study"], r["loss"]) for r in rows] == [("alpha", "logconf"), ("alpha", "xent"), ("beta", "xent")]
    assert json.loads(invoke("query", sql, "-p", "t=boolq", "-p", "s=0", "--db", db, "--json").stdout) == []
    parsed = list(csv.DictReader(io.StringIO(invoke("query", sql, "-p", "t=sst2", "-p", "s=0", "--db", db, "--csv").stdout)))
    assert [r["loss"] for r in parsed] == ["logconf", "xent", "xent"] and float(parsed[0]["weak_acc"]) == rows[0]["weak_acc"]


@pytest.mark.parametrize("sql", ["delete from studies", "update studies set name = 'x'", "create table t (x)", "drop view results",
                                 "vacuum into '{dir}/copy.db'", "attach database '{dir}/other.db' as other"])
def test_query_refuses_writes(stored, sql, tmp_path):
    result = CliRunner().invoke(cli, ["query", sql.format(dir=tmp_path), "--db", str(stored["db"])])
    assert result.exit_code == 1 and "query failed" in result.output and "Traceback" not in result.output
    assert ("readonly" in result.output) or ("authoriz" in result.output)
    assert not list(tmp_path.glob("*.db"))
    assert len(list(Store(stored["db"], readonly=True).db.query("select id from studies"))) >= 2


def test_query_missing_param_and_bad_param_are_one_line(stored):
    result = CliRunner().invoke(cli, ["query", "select * from results where task = :t", "--db", str(stored["db"])])
    assert result.exit_code == 1 and "query failed" in result.output
    result = CliRunner().invoke(cli, ["query", "select 1", "--param", "novalue", "--db", str(stored["db"])])
    assert result.exit_code == 1 and "--param 'novalue': expected NAME=VALUE" in result.output


def test_query_search(stored):
    rows = json.loads(invoke("query", "--search", "linear probes", "--db", stored["db"], "--json").stdout)
    assert [r["name"] for r in rows] == ["alpha"]
    assert fts_query('a "b" OR(') == '"a" "b" "OR("*'


def test_parse_since_ages_and_dates():
    assert parse_since("2026-11-21") == "2026-11-21T00:00:00+00:00"
    assert parse_since("2h") < parse_since("1h")


def test_rerun_reuses_every_stage_and_the_same_study(stored):
    result = invoke("study", "rerun", "beta", "--db", stored["db"])  # beta ran with --limit 50: rerun must keep it
    assert f"({stored['b']}) done" in result.output
    progress = [line for line in result.output.splitlines() if line.startswith("[")]
    assert progress and all(line.endswith(": cached") for line in progress), progress
    assert len(json.loads(invoke("study", "list", "--db", stored["db"], "--json").stdout)) == 2


def test_delete_keeps_shared_stages_and_removes_owned_artifacts(stored, tmp_path):
    db = tmp_path / "w2s.db"
    kept = lambda text: text.replace('notes = ""', 'notes = ""\nkeep_checkpoints = "all"')  # checkpoints to own and delete
    keep = run_study(tmp_path, db, kept(bow_study(stored["data"], "keeper", losses=("xent",))), "k.toml")
    gone = run_study(tmp_path, db, kept(bow_study(stored["data"], "goner", strong_label="bow-trigram", ngram=3)), "g.toml")
    store = Store(db)
    owned = [r["stage_key"] for r in store.db.query(
        "SELECT stage_key FROM study_stages WHERE study_id = ? EXCEPT SELECT stage_key FROM study_stages WHERE study_id != ?", [gone, gone])]
    shared = [r["stage_key"] for r in store.db.query(
        "SELECT stage_key FROM study_stages WHERE study_id = ? INTERSECT SELECT stage_key FROM study_stages WHERE study_id = ?", [gone, keep])]
    assert owned and shared
    owned_dirs = [store.artifacts_root / k for k in owned if (store.artifacts_root / k).exists()]
    assert owned_dirs

    refused = CliRunner().invoke(cli, ["study", "delete", "goner", "--db", str(db)], input="n\n")
    assert refused.exit_code == 1 and "nothing deleted" in refused.output
    assert store.find_study("goner")["id"] == gone

    done = invoke("study", "delete", "goner", "--db", db, "--yes")
    assert f"{len(owned)} stage(s)" in done.output and f"kept {len(shared)} shared" in done.output
    count = lambda sql, keys: next(store.db.query(sql.format(",".join("?" * len(keys))), keys))["n"]
    assert count("SELECT count(*) AS n FROM stages WHERE key IN ({})", owned) == 0
    assert count("SELECT count(*) AS n FROM metrics WHERE stage_key IN ({})", owned) == 0
    assert count("SELECT count(*) AS n FROM stages WHERE key IN ({})", shared) == len(shared)
    assert not any(d.exists() for d in owned_dirs)
    assert not list(store.db.query("SELECT * FROM study_stages WHERE study_id = ?", [gone]))
    assert "goner" not in invoke("study", "list", "--db", db).stdout
    rerun = invoke("study", "rerun", "keeper", "--db", db)  # the kept study is whole: everything still cached
    assert all(line.endswith(": cached") for line in rerun.output.splitlines() if line.startswith("["))


def test_schema_docs_are_current():
    """docs/schema.md is generated from the migrations; regenerate with `w2s schema --out docs/schema.md`."""
    current = (ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
    assert current == schema_markdown(), "docs/schema.md is stale: run `w2s schema --out docs/schema.md`"
    for table in ("studies", "stages", "metrics", "curves", "predictions", "studies_fts"):
        assert f"## Table `{table}`" in current
    assert "## View `results`" in current


def test_browse_without_datasette_says_how_to_install(stored, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasette" else real(name, *a))
    result = CliRunner().invoke(cli, ["browse", "--db", str(stored["db"])])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: Datasette is not installed; install it with `python -m pip install datasette`, then rerun `w2s browse`"


def test_browse_opens_the_store_read_only_in_datasette(stored, monkeypatch):
    import importlib.util
    import subprocess

    calls = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(subprocess, "call", lambda args: calls.append(args) or 0)
    result = CliRunner().invoke(cli, ["browse", "--db", str(stored["db"]), "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert calls[0][1:] == ["-m", "datasette", "serve", "-i", str(stored["db"]), "--port", "8123", "-o"]


def test_rerun_of_a_study_with_a_relative_data_dir(tmp_path, monkeypatch):
    write_sentiment_tsvs(tmp_path / "study" / "data")
    db = tmp_path / "w2s.db"
    run_study(tmp_path / "study", db, bow_study("data", "relative"), "rel.toml")  # data_dir relative to the file
    monkeypatch.chdir(tmp_path)  # elsewhere: "data" would not resolve from here
    result = invoke("study", "rerun", "relative", "--db", db)
    progress = [line for line in result.output.splitlines() if line.startswith("[")]
    assert progress and all(line.endswith(": cached") for line in progress), result.output


def test_rerun_of_a_study_stored_before_newer_fields_existed(tmp_path, sentiment_dir):
    """A store written by an older w2s has no task.label, strong.adapt or study.only_tasks in its spec (nor in its
    hash); rerun still finds the same definition and every stage cached."""
    from w2s.api import fingerprint

    db = tmp_path / "w2s.db"
    sid = run_study(tmp_path, db, bow_study(sentiment_dir, "older"), "o.toml")
    store = Store(db)
    spec = json.loads(store.db["studies"].get(sid)["spec_json"])
    del spec["task"]["label"], spec["study"]["only_tasks"]
    for model in spec["weak"] + spec["strong"]:
        del model["adapt"]
    old_hash = fingerprint({k: v for k, v in spec.items() if k != "executor"})  # what the older w2s stored
    store.db["studies"].update(sid, {"spec_json": json.dumps(spec), "hash": old_hash})
    result = invoke("study", "rerun", "older", "--db", db)
    progress = [line for line in result.output.splitlines() if line.startswith("[")]
    assert progress and all(line.endswith(": cached") for line in progress), progress
    store.db.execute("UPDATE studies SET hash = '0123456789abcdef' WHERE name = 'older'")  # a changed definition still refuses
    store.db.conn.commit()
    bad = CliRunner().invoke(cli, ["study", "rerun", "older", "--db", str(db)])
    assert bad.exit_code != 0 and "no longer parses to the same spec" in bad.output
