"""A malformed study exits non-zero with one clear line naming the file and field, never a traceback."""

import pytest

from w2s.commands.cli import cli
from conftest import study_toml


def run_bad(runner, tmp_path, text):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(tmp_path / "w2s.db")])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1, result.output
    assert str(f) in lines[0]
    return lines[0]


def test_bad_toml_syntax(runner, tmp_path):
    line = run_bad(runner, tmp_path, "[study\nname = 'x'\n")
    assert "invalid TOML" in line and "line 1" in line


def test_unknown_task_suggests_near_miss(runner, tmp_path, sentiment_dir, tiny_bert):
    text = study_toml(sentiment_dir, tiny_bert).replace('name = "sst2"', 'name = "sst3"')
    line = run_bad(runner, tmp_path, text)
    assert "task: unknown task 'sst3'" in line and "did you mean 'sst2'" in line and "valid:" in line


def test_unknown_model_option_lists_valid_ones(runner, tmp_path, sentiment_dir, tiny_bert):
    text = study_toml(sentiment_dir, tiny_bert).replace("max_length = 16", "max_lenght = 16")
    line = run_bad(runner, tmp_path, text)
    assert "strong.options.max_lenght: unknown option (did you mean 'max_length'?)" in line
    assert "valid:" in line and "pooling" in line


def test_unknown_top_level_field(runner, tmp_path, sentiment_dir, tiny_bert):
    line = run_bad(runner, tmp_path, study_toml(sentiment_dir, tiny_bert) + "\n[stronk]\nmodel = 'x'\n")
    assert "stronk: unknown option" in line and "strong" in line


def test_wrong_value_type(runner, tmp_path, sentiment_dir, tiny_bert):
    text = study_toml(sentiment_dir, tiny_bert).replace("n_test = 60", 'n_test = "sixty"')
    line = run_bad(runner, tmp_path, text)
    assert "task.n_test" in line and "integer" in line and "'sixty'" in line


def test_wrong_hyperparameter_type(runner, tmp_path, sentiment_dir, tiny_bert):
    text = study_toml(sentiment_dir, tiny_bert).replace("epochs = 2", "epochs = -1")
    line = run_bad(runner, tmp_path, text)
    assert "strong.train.epochs" in line and "greater than 0" in line


def test_unknown_loss(runner, tmp_path, sentiment_dir, tiny_bert):
    line = run_bad(runner, tmp_path, study_toml(sentiment_dir, tiny_bert, losses=("xent", "logcof")))
    assert "losses[1]: unknown loss 'logcof'" in line and "did you mean 'logconf'" in line


def test_missing_data_file(runner, tmp_path, sentiment_dir, tiny_bert):
    (sentiment_dir / "test.tsv").unlink()
    line = run_bad(runner, tmp_path, study_toml(sentiment_dir, tiny_bert))
    assert "test.tsv not found" in line and "data_dir" in line


def test_missing_data_dir(runner, tmp_path, tiny_bert):
    line = run_bad(runner, tmp_path, study_toml(tmp_path / "nowhere", tiny_bert))
    assert "task.data_dir" in line and "does not exist" in line


def test_missing_study_file(runner, tmp_path):
    result = runner.invoke(cli, ["study", "run", str(tmp_path / "nope.toml")])
    assert result.exit_code != 0 and "study file not found" in result.output and "Traceback" not in result.output


def test_too_few_examples(runner, tmp_path, sentiment_dir, tiny_bert):
    text = study_toml(sentiment_dir, tiny_bert).replace("n_transfer = 80", "n_transfer = 8000")
    line = run_bad(runner, tmp_path, text)
    assert "n_transfer" in line and "lower them" in line


@pytest.mark.parametrize("override,expect", [("task.n_test", "expected key=value"), ("task.n_test=abc", "task.n_test")])
def test_bad_set_override(runner, tmp_path, sentiment_dir, tiny_bert, override, expect):
    f = tmp_path / "s.toml"
    f.write_text(study_toml(sentiment_dir, tiny_bert))
    result = runner.invoke(cli, ["study", "run", str(f), "--set", override, "--dry-run"])
    assert result.exit_code != 0 and expect in result.output and "Traceback" not in result.output
