"""
The summary of tools/compare_options.py: mean and sample std per setting and metric.
"""
import json

import pytest

from retina_plugin.compare import bar_plot, markdown_table, parse_setting, summarize


def run(setting, seed, ap):
    return {"setting": setting, "seed": seed, "metrics": {"AP": ap, "AP50": ap + 10, "AP75": ap - 5, "APs": ap / 2}}


def test_summary_mean_std_table_and_plot(tmp_path):
    runs = [run("paper", 0, 10.0), run("v2", 0, 20.0), run("paper", 1, 14.0), run("v2", 1, 26.0)]
    summary = summarize(runs)
    assert list(summary) == ["paper", "v2"]
    assert summary["paper"]["AP"]["mean"] == pytest.approx(12.0)
    assert summary["paper"]["AP"]["std"] == pytest.approx(2 ** 0.5 * 2)  # sample std of 10, 14
    assert summary["v2"]["APs"]["mean"] == pytest.approx(11.5)
    table = markdown_table(summary, baseline="paper")
    assert "| v2 | 23.0 ± 4.2 | 33.0 ± 4.2 | 18.0 ± 4.2 | 11.5 ± 2.1 | 2 | +11.0 |" in table
    bar_plot(summary, str(tmp_path / "plot.png"))
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_setting_syntax():
    assert parse_setting("paper") == ("paper", [])
    assert parse_setting("atss=MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER ATSS") == (
        "atss", ["MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER", "ATSS"])
    with pytest.raises(ValueError, match="expected 'name=KEY VALUE"):
        parse_setting("x=MODEL.FOO")


def test_compare_options_trains_evaluates_and_writes_the_table(tmp_path):
    # Two settings x one seed, two iterations each on a generated 128-px dataset.
    from retina_plugin.data.shapes import generate_shapes_split
    from .conftest import TINY_CONFIG
    from .test_train_eval_predict import load_tool

    data = {}
    for split, n, seed in (("train", 8, 21), ("val", 3, 22)):
        data[split] = (generate_shapes_split(str(tmp_path / split), n, seed=seed, image_size=128), str(tmp_path / split))
    register = [["cmp_train", *data["train"]], ["cmp_val", *data["val"]]]
    out = tmp_path / "out"
    load_tool("compare_options").main([
        "--config-file", str(TINY_CONFIG), "--seeds", "0", "--output", str(out),
        "--setting", "paper", "--setting", "atss=MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER ATSS",
        "--common-opts", "DATASETS.REGISTER.COCO", str(register), "DATASETS.TRAIN", "('cmp_train',)",
        "DATASETS.TEST", "('cmp_val',)", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1",
    ])
    runs = json.load(open(out / "runs.json"))
    assert [(r["setting"], r["seed"]) for r in runs] == [("paper", 0), ("atss", 0)]
    assert all(set(r["metrics"]) >= {"AP", "AP50", "AP75", "APs"} for r in runs)
    assert "| atss |" in (out / "results.md").read_text() and (out / "results.png").is_file()
    atss_cfg = (out / "atss_seed0" / "config.yaml").read_text()
    assert "ANCHOR_ASSIGNER: ATSS" in atss_cfg and "MAX_ITER: 2" in atss_cfg
