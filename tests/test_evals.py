"""Cross-task evaluation: [[eval]] stages, k-shot prompts, skipped rows, caching and the table."""

import json
from pathlib import Path

import pytest

from conftest import write_sentiment_tsvs
from w2s.api import Example, W2SError
from w2s.commands.cli import cli
from w2s.prompting import balanced_shots, fewshot_prefix
from w2s.plugins import make_task
from w2s.storing.store import Store
from w2s.planning.study import parse_study

FIXTURES = Path(__file__).parent / "fixtures"


def eval_study(data_dir, gpt2, extra_evals=""):
    return f"""
[study]
name = "evals"
seeds = [0]

[task]
name = "sst2"
data_dir = "{data_dir}"
n_weak_train = 20
n_transfer = 30
n_test = 10

[weak]
model = "bow"

[strong]
model = "hf"
label = "gpt2-lm"
[strong.options]
path = "{gpt2}"
head = "lm"
max_length = 96
[strong.train]
epochs = 1
batch_size = 16
lr = 1e-3

[[eval]]
task = "ethics"
options = {{ subset = "justice" }}
data_dir = "{FIXTURES / 'ethics'}"
splits = ["test", "test_hard"]
n = 6
k_shot = 2
models = ["strong_pretrained", "students", "ceiling", "weak"]

[[eval]]
task = "ethics"
options = {{ subset = "commonsense" }}
data_dir = "{FIXTURES / 'ethics'}"
splits = ["test", "test_hard"]
n = 2
k_shot = 2
models = ["strong_pretrained", "weak"]
{extra_evals}
"""


THREE_LABELS = f"""
[[eval]]
task = "files"
label = "three-way"
data_dir = "{FIXTURES / 'files'}"
n = 4
models = ["weak"]
[eval.options]
train = "train.jsonl"
test = "test.jsonl"
text_columns = ["premise", "hypothesis"]
label_words = ["contradiction", "entailment", "neutral"]
label_map = {{ contradiction = 0, entailment = 1 }}
"""


def test_eval_stages_table_prompts_and_cache(tmp_path, runner, tiny_gpt2):
    data = write_sentiment_tsvs(tmp_path / "sst2", n_train=60, n_test=20)
    study = tmp_path / "s.toml"
    study.write_text(eval_study(data, tiny_gpt2, THREE_LABELS))
    db = tmp_path / "w2s.db"
    first = runner.invoke(cli, ["study", "run", str(study), "--db", str(db)])
    assert first.exit_code == 0, first.output
    out = first.output
    assert "Cross-task evaluation" in out and "Hard Test" in out and "average" in out
    assert "ethics/justice" in out and "ethics/commonsense" in out and "three-way" in out

    store = Store(db, readonly=True)
    rows = {(r["eval"], r["split"], r["source"]): r for r in (json.loads(x["output_json"]) for x in store.db.query(
        "SELECT output_json FROM stages WHERE kind = 'eval'"))}
    # prompt models: k = 2 label-balanced shots from the train split; commonsense has no train file
    pre = rows[("ethics/justice", "test", "strong_pretrained")]
    assert pre["k_shot"] == 2 and pre["shot_source"] == "train split" and pre["scoring"] == "label-word log-probabilities"
    cm = rows[("ethics/commonsense", "test", "strong_pretrained")]
    assert cm["shot_source"].startswith("unscored rows of the test file") and cm["k_shot"] == 2
    # the classifier-head weak model (bow) shares the 2-label space: scored, with the mapping stated
    assert rows[("ethics/justice", "test", "weak")]["mapping"] == "negative->unreasonable, positive->reasonable"
    assert "trained on another task's labels" in rows[("ethics/justice", "test", "weak")]["warning"]
    assert "warning: bow's classifier head was trained on another task's labels" in out  # said while it ran
    assert "WARNING: classifier heads trained on another task's labels are read by label index (negative->unreasonable" in out
    assert "warning" not in pre  # a prompted model answers the eval task's own question
    # never silent: missing Hard Test file and a different label space are stored as skipped rows
    assert "cm_test_hard.csv not found)" in rows[("ethics/commonsense", "test_hard", "strong_pretrained")]["skipped"]
    assert rows[("three-way", "test", "weak")]["skipped"] == "label spaces differ: sst2 has 2 labels, three-way has 3"
    assert "skipped [1]" in out and "label spaces differ" in out and "no Hard Test data" in out

    acc = {(r["eval"], r["split"], r["source"]): (r["accuracy"], r["n"]) for r in json_rows(store)}
    assert acc[("ethics/justice", "test", "student")][1] == 6 and acc[("ethics/justice", "test_hard", "ceiling")][1] == 4
    # measured: accuracies over 6 Test / 4 Hard Test / 2 commonsense rows
    assert acc[("ethics/justice", "test", "strong_pretrained")] == pytest.approx((4 / 6, 6))
    assert acc[("ethics/justice", "test_hard", "strong_pretrained")] == pytest.approx((0.25, 4))
    assert acc[("ethics/justice", "test", "ceiling")] == pytest.approx((4 / 6, 6)) and acc[("ethics/justice", "test", "weak")] == pytest.approx((0.5, 6))

    # every scored example's rendered prompt is queryable; k-shot prompts hold k demonstrations
    key = pre_key(store, "ethics/justice", "test", "strong_pretrained")
    prompts = [r["prompt"] for r in store.db.query("SELECT prompt FROM eval_prompts WHERE stage_key = ?", [key])]
    assert len(prompts) == 6 and all(p.count("Answer:") == 3 for p in prompts)
    assert all(p.endswith("Question: Is this justification reasonable or unreasonable?\nAnswer:") for p in prompts)
    cm_key = pre_key(store, "ethics/commonsense", "test", "strong_pretrained")
    cm_scored = {r["example_id"] for r in store.db.query("SELECT example_id FROM eval_prompts WHERE stage_key = ?", [cm_key])}
    assert len(cm_scored) == 2 and not cm_scored & set(cm["shots"])  # shots never include a scored example
    weak_key = pre_key(store, "ethics/justice", "test", "weak")
    assert next(store.db.query("SELECT count(*) AS c FROM eval_prompts WHERE stage_key = ?", [weak_key]))["c"] == 6

    again = runner.invoke(cli, ["study", "run", str(study), "--db", str(db)])
    assert again.exit_code == 0 and ": running" not in again.output and "eval gpt2-lm (pretrained)" in again.output
    shown = runner.invoke(cli, ["study", "show", "evals", "--db", str(db)])
    assert shown.exit_code == 0 and "Cross-task evaluation" in shown.output and "skipped [1]" in shown.output


def json_rows(store):
    sql = """SELECT st.output_json, (SELECT value FROM metrics m WHERE m.stage_key = st.key AND m.name = 'accuracy') AS accuracy,
             (SELECT value FROM metrics m WHERE m.stage_key = st.key AND m.name = 'n') AS n FROM stages st WHERE st.kind = 'eval'"""
    return [{**json.loads(r["output_json"]), "accuracy": r["accuracy"], "n": r["n"]} for r in store.db.query(sql)]


def pre_key(store, label, split, source):
    for r in store.db.query("SELECT key, output_json FROM stages WHERE kind = 'eval'"):
        info = json.loads(r["output_json"])
        if (info["eval"], info["split"], info["source"]) == (label, split, source):
            return r["key"]
    raise AssertionError("no such eval stage")


def test_balanced_seeded_shots_and_prefix():
    pool = [Example(f"e{i}", f"text {i}", int(i < 3)) for i in range(10)]  # 3 positives, 7 negatives
    shots = balanced_shots(pool, 4, 2, seed=1)
    assert sorted(e.label for e in shots) == [0, 0, 1, 1]
    assert [e.id for e in balanced_shots(pool, 4, 2, seed=1)] == [e.id for e in shots]
    assert [e.id for e in balanced_shots(pool, 4, 2, seed=2)] != [e.id for e in shots]
    assert len(balanced_shots(pool, 8, 2, seed=0)) == 8  # labels run out: fill from the rest
    task = make_task("ethics", {"subset": "justice"}, FIXTURES / "ethics", "eval[0]")
    prefix = fewshot_prefix(task, [Example("a", "It was fair.", 1)])
    assert prefix == "Scenario: It was fair.\nQuestion: Is this justification reasonable or unreasonable?\nAnswer: reasonable\n\n"


@pytest.mark.parametrize(
    "table, message",
    [
        ('task = "sst2"\nsplits = ["test_hard"]', "eval[0].splits: task 'sst2' has no Hard Test"),
        ('task = "ethic"', "eval[0]: unknown task 'ethic' (did you mean 'ethics'?)"),
        ('task = "ethics"\noptions = { subset = "justice", split = "test_hard" }', "eval[0].options.split: choose splits with"),
        ('task = "ethics"\nmodels = ["teacher"]', "eval.0.models.0: Input should be"),
        ('task = "ethics"\ndata_dir = "/nonexistent/ethics"', "eval[0].data_dir: directory /nonexistent/ethics does not exist"),
    ],
)
def test_eval_table_errors_are_one_line(tmp_path, tiny_bert, table, message):
    data = write_sentiment_tsvs(tmp_path / "sst2", n_train=60, n_test=20)
    text = eval_study(data, tiny_bert).split("[[eval]]")[0] + "[[eval]]\n" + table + "\n"
    with pytest.raises(W2SError) as err:
        parse_study(text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_shared_prefix_cache_gives_the_same_scores(tiny_gpt2, monkeypatch):
    import numpy as np

    import w2s_plugins.hf_lm as hf_lm
    from w2s.plugins import make_model

    trained = make_model("hf", {"path": str(tiny_gpt2), "head": "lm", "max_length": 200}, {"eval_batch_size": 3}, "s").pretrained(None)
    demos = "the film was good and fun . answer : yes\n\nthe movie was bad and dull . answer : no\n\n"
    prompts = [demos + q for q in ["the plot was great . answer :", "a film . answer :", "the actors were awful but fun . answer :", "it was dull"]]
    choices = [["yes", "no", "not very good"]] * 4  # single- and multi-token choices
    shared, rest = hf_lm.split_shared_prefix(trained.encode(prompts))
    assert len(shared) >= 16 and all(len(r["input_ids"]) >= 1 for r in rest)
    cached = np.array(trained.score_many(prompts, choices))
    monkeypatch.setattr(hf_lm, "split_shared_prefix", lambda encoded, minimum=16: ([], encoded))
    assert np.allclose(cached, np.array(trained.score_many(prompts, choices)), atol=1e-5)
