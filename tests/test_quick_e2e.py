import json

from w2s.cli import cli
from conftest import study_toml


def test_tiny_study_end_to_end(tmp_path, runner, sentiment_dir, tiny_bert):
    f = tmp_path / "s.toml"
    f.write_text(study_toml(sentiment_dir, tiny_bert))
    db = tmp_path / "w2s.db"
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    print(result.output)
    assert result.exit_code == 0, result.output
