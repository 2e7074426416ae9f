"""Task `files`: a task defined only in the study TOML, run end to end, and its one-line errors."""

import shutil
from pathlib import Path

import pytest

from w2s.api import W2SError
from w2s.commands.cli import cli
from w2s.plugins import make_task
from w2s.storing.store import Store

FILES = Path(__file__).parent / "fixtures" / "files"

OPTIONS = {
    "train": "train.jsonl",
    "test": "test.jsonl",
    "text_columns": ["premise", "hypothesis"],
    "template": "Premise: {premise}\nHypothesis: {hypothesis}\nTrue or false?\nAnswer:",
    "label_words": ["false", "true"],
    "label_map": {"contradiction": 0, "entailment": 1},
}


def files_task(data_dir=FILES, **changes):
    return make_task("files", {**OPTIONS, **changes}, data_dir, "task")


def test_loads_jsonl_with_template_and_label_map():
    task = files_task()
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == (60, 20)
    assert task.label_words == ("false", "true") and task.num_labels == 2
    first = train[0]  # {"premise": "coal is black", "hypothesis": "coal is white", "label": "contradiction"}
    assert first.label == 0 and first.text == "coal is black\ncoal is white"
    assert task.render(first) == "Premise: coal is black\nHypothesis: coal is white\nTrue or false?\nAnswer:"


def test_toml_only_study_runs_end_to_end(tmp_path, runner, tiny_bert):
    data = tmp_path / "data"
    shutil.copytree(FILES, data)
    study = tmp_path / "nli.toml"
    study.write_text(f"""
[study]
name = "files-nli"

[task]
name = "files"
data_dir = "data"
n_weak_train = 20
n_transfer = 40
[task.options]
train = "train.jsonl"
test = "test.jsonl"
text_columns = ["premise", "hypothesis"]
template = "Premise: {{premise}}\\nHypothesis: {{hypothesis}}\\nAnswer:"
label_column = "label"
label_words = ["false", "true"]
label_map = {{ contradiction = 0, entailment = 1 }}

[weak]
model = "bow"

[strong]
model = "hf"
[strong.options]
path = "{tiny_bert}"
max_length = 32
[strong.train]
epochs = 1
batch_size = 8
""")
    db = tmp_path / "w2s.db"
    result = runner.invoke(cli, ["study", "run", str(study), "--db", str(db)])
    assert result.exit_code == 0, result.output
    store = Store(db, readonly=True)
    row = next(store.db.query("SELECT task, weak, strong, n_test, weak_acc, student_acc, ceiling_acc FROM results"))
    assert (row["task"], row["weak"], row["strong"], row["n_test"]) == ("files", "bow", "hf", 20)
    # 20 test pairs; measured on this fixture (bag-of-words cannot compare premise and hypothesis: chance)
    assert (row["weak_acc"], row["student_acc"], row["ceiling_acc"]) == pytest.approx((0.50, 0.55, 0.55))


def test_absent_label_column_is_one_line():
    with pytest.raises(W2SError) as err:
        files_task(label_column="gold").load("train")
    message = str(err.value)
    assert "train.jsonl: label column 'gold' not found" in message and "\n" not in message
    assert "set task.options.label_column" in message


def test_label_value_outside_mapping_is_one_line():
    with pytest.raises(W2SError) as err:
        files_task(label_map={"entailment": 1}).load("train")
    message = str(err.value)
    assert "train.jsonl line 1: label 'contradiction' is not a label (valid: entailment)" in message
    assert "add it to task.options.label_map" in message
    assert "\n" not in message


def test_raw_labels_must_be_indexes_without_a_mapping(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\nhello,0\nbye,2\n")
    task = make_task("files", {"train": "t.csv", "test": "t.csv", "text_columns": ["text"], "label_words": ["a", "b"]}, tmp_path, "task")
    with pytest.raises(W2SError, match=r"t\.csv line 3: label '2' is not a label \(valid: 0, 1\); add task.options.label_map"):
        task.load("test")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"template": "{premise} {question}"}, "template uses ['question'], which are not text_columns"),
        ({"hub": "org/data"}, "set either train/test files or hub, not both"),
        ({"train": None}, "set both train and test"),
        ({"label_map": {"entailment": 2}}, "label_map values {'entailment': 2} are outside 0..1"),
        ({"label_words": ["only"]}, "task.options.label_words"),
    ],
)
def test_bad_options_are_one_line(changes, message):
    with pytest.raises(W2SError) as err:
        files_task(**changes)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_file_names_it():
    with pytest.raises(W2SError, match=r"data file .*nope\.jsonl not found"):
        files_task(test="nope.jsonl").load("test")


def test_a_text_column_named_text_renders(tmp_path):
    """IMDB names its column `text`: the meta holds `text` too, and render used to pass it twice (TypeError)."""
    (tmp_path / "t.csv").write_text("text,label\na fine film,1\na dull film,0\n")
    options = {"train": "t.csv", "test": "t.csv", "text_columns": ["text"], "label_words": ["neg", "pos"], "template": "Review: {text}\nAnswer:"}
    task = make_task("files", options, tmp_path, "task")
    first = task.load("train")[0]
    assert first.meta == {"text": "a fine film"}
    assert task.render(first) == "Review: a fine film\nAnswer:"
    two = make_task("files", {**options, "text_columns": ["title", "text"], "template": "{title}: {text}"}, tmp_path, "task")
    (tmp_path / "t.csv").write_text("title,text,label\nT,body,1\n")
    assert two.render(two.load("train")[0]) == "T: body"  # a column named text wins over the joined columns
