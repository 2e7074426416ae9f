"""Task boolq: the original and the SuperGLUE JSONL layouts, errors, and a small study."""

from pathlib import Path

import pytest

from w2s.api import W2SError
from w2s.commands.cli import cli
from w2s.plugins import make_task
from w2s.storing.store import Store

BOOLQ = Path(__file__).parent / "fixtures" / "boolq"


def boolq(folder):
    return make_task("boolq", {}, BOOLQ / folder, "task")


def test_original_and_superglue_layouts_give_the_same_examples():
    original, superglue = boolq("original"), boolq("superglue")
    for split, n in (("train", 48), ("test", 16)):
        a, b = original.load(split), superglue.load(split)
        assert len(a) == len(b) == n
        assert [(e.text, e.label) for e in a] == [(e.text, e.label) for e in b]
    first = original.load("test")[0]  # {"question": "is the sky blue", ..., "answer": true}
    assert first.label == 1 and original.load("test")[1].label == 0
    assert original.render(first) == "Passage: It is well known that the sky is blue. Item 0.\nQuestion: is the sky blue?\nAnswer:"
    assert original.label_words == ("no", "yes")


def test_missing_dev_file_and_bad_answer_are_one_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"question": "is it", "passage": "p", "answer": "maybe"}\n')
    task = make_task("boolq", {}, tmp_path, "task")
    with pytest.raises(W2SError, match=r"dev\.jsonl not found \(nor val\.jsonl, validation\.jsonl\)"):
        task.load("test")
    with pytest.raises(W2SError, match=r"train\.jsonl line 1: answer 'maybe' is not a label; use true/false"):
        task.load("train")


def test_missing_columns_are_named(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"query": "is it", "passage": "p", "answer": true}\n')
    with pytest.raises(W2SError, match=r"column\(s\) \['question'\] not found"):
        make_task("boolq", {}, tmp_path, "task").load("train")


def test_small_boolq_study_runs(tmp_path, runner, tiny_gpt2, folder="superglue"):
    study = tmp_path / "boolq.toml"
    study.write_text(f"""
[study]
name = "boolq-{folder}"

[task]
name = "boolq"
data_dir = "{BOOLQ / folder}"
n_weak_train = 16
n_transfer = 32

[weak]
model = "bow"

[strong]
model = "hf"
[strong.options]
path = "{tiny_gpt2}"
head = "lm"
max_length = 48
[strong.train]
epochs = 1
batch_size = 16
""")
    db = tmp_path / "w2s.db"
    result = runner.invoke(cli, ["study", "run", str(study), "--db", str(db)])
    assert result.exit_code == 0, result.output
    row = next(Store(db, readonly=True).db.query("SELECT task, n_test, student_acc, ceiling_acc FROM results"))
    assert (row["task"], row["n_test"]) == ("boolq", 16)
    assert (row["student_acc"], row["ceiling_acc"]) == pytest.approx((0.25, 0.25))  # measured: the tiny random LM, 4 of 16
    # the LM-head student scored rendered prompts, and they are queryable
    prompts = list(Store(db, readonly=True).db.query(
        "SELECT DISTINCT p.split, p.example_id, p.prompt FROM eval_prompts p JOIN study_stages ss ON ss.stage_key = p.stage_key "
        "WHERE ss.role = 'student_test' AND p.split = 'test'"))
    assert len(prompts) == 16 and all(r["prompt"].startswith("Passage: It is well known that") for r in prompts)
