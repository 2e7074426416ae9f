"""Tests of the example task: loading, errors and registration through w2s's plugin manager."""

import json

import pytest

import w2s_task_example
from w2s import plugins
from w2s.api import W2SError
from w2s_task_example import SpamTask


def test_sample_data_loads_with_stable_ids_and_both_labels():
    train, test = SpamTask().load("train"), SpamTask().load("test")
    assert (len(train), len(test)) == (400, 120)
    assert train[0].id == "train-0" and {e.label for e in train} == {0, 1}
    assert SpamTask().load("train")[5] == train[5]


def test_data_dir_with_own_files(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"text": "free prize", "label": 1}) + "\n")
    examples = SpamTask(data_dir=tmp_path).load("test")
    assert [(e.text, e.label) for e in examples] == [("free prize", 1)]


def test_missing_field_is_one_clear_error(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"sms": "hi", "label": 0}) + "\n")
    with pytest.raises(W2SError, match=r"lacks field\(s\) \['text'\]"):
        SpamTask(data_dir=tmp_path).load("train")


def test_registered_through_the_plugin_manager():
    name = "task-example-test"
    plugins.load_plugins()  # entry points first: an installed example registers itself under "task-example"
    if plugins.pm.has_plugin("task-example"):  # installed: the entry point already registered it
        assert plugins.tasks()["example-spam"].obj is SpamTask
        return
    unregister = plugins.register_inline(w2s_task_example, name)
    try:
        assert plugins.tasks()["example-spam"].obj is SpamTask
    finally:
        unregister()
