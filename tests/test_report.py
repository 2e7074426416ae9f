"""`w2s report`: PNG figures and one self-contained HTML page; grid and chain figures from constructed rows."""

import base64
import json
import re

import matplotlib.image
import pytest
from click.testing import CliRunner

from w2s.reporting import plots
from w2s.commands.cli import cli
from w2s.reporting.tables import fmt, results
from w2s.storing.store import Store
from conftest import study_toml, write_sentiment_tsvs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _html(text):
    import html

    return html.escape(text, quote=True)


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_SIGNATURE, path
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 200 and width > 300


@pytest.fixture(scope="module")
def reported(tmp_path_factory, tiny_bert):
    """The tiny study (bow -> tiny BERT, xent and logconf) stored once, and its report written."""
    folder = tmp_path_factory.mktemp("report")
    study = folder / "tiny.toml"
    study.write_text(study_toml(write_sentiment_tsvs(folder / "data"), tiny_bert))
    db, out = folder / "w2s.db", folder / "out"
    runner = CliRunner()
    ran = runner.invoke(cli, ["study", "run", str(study), "--db", str(db), "--set", "strong.train.epochs=1"])
    assert ran.exit_code == 0, ran.output
    result = runner.invoke(cli, ["report", "tiny", "--db", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {"db": db, "out": out, "output": result.output}


def test_report_writes_valid_pngs(reported):
    out = reported["out"]
    assert sorted(p.name for p in out.glob("*.png")) == ["accuracy.png", "curves.png"]  # no grid, no chain here
    for png in out.glob("*.png"):
        assert_png(png)
        assert f"wrote {png}" in reported["output"]


def test_html_is_self_contained_and_holds_the_table_numbers(reported):
    page = (reported["out"] / "report.html").read_text()
    store = Store(reported["db"], readonly=True)
    sid = store.find_study("tiny")["id"]
    res = results(store, sid)
    assert len(res) == 2
    for row in res:
        cells = [row["loss"], fmt(row["weak_acc"]), fmt(row["student_acc"]), fmt(row["ceiling_acc"]), fmt(row["agreement"])]
        assert re.search(r"<tr>\s*" + r"\s*".join(rf"<td[^>]*>{re.escape(str(c))}\s*</td>" for c in [row["seed"], row["weak"], row["strong"]] + cells[:1]), page)
        for cell in cells[1:]:
            assert f">{cell}" in page
    flags = sorted({f for r in res for f in json.loads(r["flags"] or "[]")})
    assert page.count("<p class='flag'>FLAG: ") == len(flags)
    assert all(f"FLAG: {_html(f)}" in page for f in flags)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert [base64.b64decode(i) for i in images] == [(reported["out"] / n).read_bytes() for n in ("accuracy.png", "curves.png")]
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "name = &quot;tiny&quot;" in page  # the study definition, HTML-escaped


def test_report_of_unknown_study_is_one_line(reported, tmp_path):
    result = CliRunner().invoke(cli, ["report", "nope", "--db", str(reported["db"]), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "no study 'nope'" in result.output and "Traceback" not in result.output


def test_accuracy_panels_average_seeds_with_a_t_interval():
    rows = [
        {"task": "t", "weak": "w", "strong": "s", "loss": "xent", "seed": seed, "weak_acc": wa, "student_acc": sa, "ceiling_acc": 0.9,
         "weak_acc_ci_low": wa - 0.05, "weak_acc_ci_high": wa + 0.05, "pgr": (sa - wa) / (0.9 - wa), "pgr_ci_low": 0.1, "pgr_ci_high": 0.9}
        for seed, wa, sa in ((0, 0.6, 0.7), (1, 0.62, 0.74), (2, 0.58, 0.72))
    ]
    (panel,) = plots.accuracy_panels(rows)
    weak, student, ceiling = panel["bars"]
    assert (weak["kind"], student["kind"], ceiling["kind"]) == ("weak", "student", "ceiling")
    assert weak["value"] == pytest.approx(0.6) and weak["n_seeds"] == 3
    half = 4.302653 * 0.02 / 3**0.5  # t(0.975, 2) * sd / sqrt(n)
    assert (weak["low"], weak["high"]) == pytest.approx((0.6 - half, 0.6 + half), abs=1e-5)
    assert ceiling["low"] == pytest.approx(0.9) and ceiling["high"] == pytest.approx(0.9)
    assert student["pgr"] == pytest.approx(sum(r["pgr"] for r in rows) / 3)
    import statistics

    pgr_half = 4.302653 * statistics.stdev(r["pgr"] for r in rows) / 3**0.5  # across seeds, like the accuracy bars
    assert (student["pgr_low"], student["pgr_high"]) == pytest.approx((student["pgr"] - pgr_half, student["pgr"] + pgr_half), abs=1e-5)
    one_seed = plots.accuracy_panels(rows[:1])[0]["bars"][0]
    assert (one_seed["low"], one_seed["high"]) == pytest.approx((0.55, 0.65))  # the bootstrap CI


def link(store, study_id, key, role, labels, metrics, bytes_=None):
    """Insert one constructed stage with its study link and metrics."""
    store.db["stages"].insert({"id": key, "key": key, "kind": "evaluate" if "chain" in role or role == "evaluate" else "fit",
                               "role": role, "status": "done", "created": key, "study_id": study_id})
    store.db["study_stages"].insert({"study_id": study_id, "stage_key": key, "role": role, "task": "t", "seed": 0, **labels})
    store.db["metrics"].insert_all({"stage_key": key, "split": "test", "name": n, "value": v} for n, v in metrics.items())
    if bytes_:
        store.db["artifacts"].insert({"id": key, "stage_key": key, "kind": "checkpoint", "path": "/nonexistent", "bytes": bytes_, "created": key})


@pytest.fixture
def constructed(tmp_path):
    store = Store(tmp_path / "w2s.db")
    chain = [{"model": m} for m in ("bow", "mini2", "mini6", "smol")]
    sid = store.upsert_study("constructed", "", {"study": {}, "chain": chain}, "h", None, {})
    return store, sid


def test_grid_rows_and_figure_from_constructed_rows(constructed, tmp_path):
    store, sid = constructed
    sizes = {"small": 1_000_000, "large": 9_000_000}
    pgrs = {("w1", "small"): 0.2, ("w1", "large"): 0.5, ("w2", "small"): 0.1, ("w2", "large"): 0.3}
    for (weak, strong), pgr in pgrs.items():
        labels = {"weak": weak, "strong": strong, "loss": "xent"}
        link(store, sid, f"e-{weak}-{strong}", "evaluate", labels, {"pgr": pgr, "pgr_ci_low": pgr - 0.1, "pgr_ci_high": pgr + 0.1, "ceiling_acc": 0.8})
    for strong, size in sizes.items():
        link(store, sid, f"c-{strong}", "ceiling", {"weak": "w1", "strong": strong, "loss": None}, {}, bytes_=size)
    rows = plots.grid_rows(store, sid)
    assert {(r["weak"], r["strong"]): r["pgr"] for r in rows} == pytest.approx(pgrs)
    assert {r["strong"]: r["size"] for r in rows} == sizes and rows[0]["size_unit"] == "checkpoint bytes"
    assert_png(plots.grid_figure(rows, tmp_path / "grid.png"))
    unsized = [{k: v for k, v in r.items() if k != "size"} for r in rows]
    assert_png(plots.grid_figure(unsized, tmp_path / "grid_unsized.png"))


def test_single_pair_has_no_grid(constructed):
    store, sid = constructed
    link(store, sid, "e1", "evaluate", {"weak": "w", "strong": "s", "loss": "xent"}, {"pgr": 0.4})
    assert plots.grid_rows(store, sid) == []


def test_chain_rows_follow_the_chain_and_figure_draws(constructed, tmp_path):
    store, sid = constructed
    steps = [("bow", "mini2", 0.70, 0.78), ("mini2", "mini6", 0.78, 0.83), ("mini6", "smol", 0.83, 0.86)]
    for i, (weak, strong, weak_acc, student_acc) in reversed(list(enumerate(steps))):  # stored out of order on purpose
        link(store, sid, f"step{i}", "chain_step", {"weak": weak, "strong": strong, "loss": "xent"},
             {"weak_acc": weak_acc, "student_acc": student_acc, "student_acc_ci_low": student_acc - 0.02,
              "student_acc_ci_high": student_acc + 0.02, "ceiling_acc": 0.9, "pgr": 0.5})
    link(store, sid, "direct", "chain_direct", {"weak": "bow", "strong": "smol", "loss": "xent"},
         {"weak_acc": 0.70, "student_acc": 0.80, "pgr": 0.33, "chain_minus_direct": 0.06, "chain_minus_direct_ci_low": 0.01,
          "chain_minus_direct_ci_high": 0.11})
    rows = plots.chain_rows(store, sid)
    assert rows[-1]["chain_minus_direct"] == pytest.approx((0.06, 0.01, 0.11))  # one seed: the stored bootstrap CI
    assert [(r["position"], r["model"], r["kind"]) for r in rows] == [
        (0, "bow", "M1 (ground truth)"), (1, "mini2", "chain student"), (2, "mini6", "chain student"),
        (3, "smol", "chain student"), (3, "smol", "direct M1 -> Mn")]
    assert [r["accuracy"] for r in rows] == pytest.approx([0.70, 0.78, 0.83, 0.86, 0.80])
    assert_png(plots.chain_figure(rows, tmp_path / "chain.png"))
    page_dir = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", sid, "--db", str(store.path), "--out", str(page_dir)])
    assert result.exit_code == 0, result.output
    assert (page_dir / "chain.png").exists() and "Bootstrapping chain" in (page_dir / "report.html").read_text()
