"""
The ablation harness: grid / variant parsing, errors before anything trains, a sweep that
resumes, the files it writes, and one real train + COCOEvaluator run in a subprocess.
"""
import json
import re
import math
import os
import time

import cv2
import numpy as np
import pytest

from retina_plugin.experiments import ablation
from retina_plugin.experiments.ablation import AblationError, build_settings, parse_grid, parse_variant, prepare
from retina_plugin.data.shapes import generate_shapes_split

from .conftest import TINY_CONFIG

GAMMA = "MODEL.RETINANET.FOCAL_LOSS_GAMMA"
ALPHA = "MODEL.RETINANET.FOCAL_LOSS_ALPHA"


def test_grid_values_split_at_top_level_commas_only():
    grid = parse_grid([f"{GAMMA}=0,0.5,2", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS=[[1.0]],[[0.5, 1.0,2.0]]"])
    assert grid == [
        (GAMMA, ["0", "0.5", "2"]),
        ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", ["[[1.0]]", "[[0.5, 1.0,2.0]]"]),
    ]
    settings = build_settings(grid)
    assert len(settings) == 6
    assert settings[1].overrides == [(GAMMA, "0"), ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0,2.0]]")]
    assert len({s.folder for s in settings}) == 6


@pytest.mark.parametrize(
    "item, message",
    [
        (GAMMA, "expected KEY=VALUE"),
        (f"{GAMMA}=", "expected KEY=VALUE"),
        (f"{GAMMA}=0,,2", "empty value"),
        (f"{GAMMA}=0,0", "repeated value"),
        (f"{GAMMA}=[0,2", "unclosed bracket"),
        (f"{GAMMA}=0],2", "unbalanced"),
        ("gamma=0,2", "does not look like a config key"),
    ],
)
def test_bad_grid_syntax(item, message):
    with pytest.raises(AblationError, match=message):
        parse_grid([item])


def test_variants():
    name, overrides = parse_variant(["ohem", "MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS=OHEMLoss",
                                     "MODEL.RETINANET.IOU_THRESHOLDS=[0.4,0.5]"])
    assert name == "ohem" and overrides[1] == ("MODEL.RETINANET.IOU_THRESHOLDS", "[0.4,0.5]")
    settings = build_settings([(GAMMA, ["1", "2"])], [(name, overrides)])
    assert [s.name for s in settings] == [
        "base FOCAL_LOSS_GAMMA=1", "base FOCAL_LOSS_GAMMA=2", "ohem FOCAL_LOSS_GAMMA=1", "ohem FOCAL_LOSS_GAMMA=2"
    ]
    assert [s.name for s in build_settings([], [(name, overrides)], include_base=False)] == ["ohem"]
    with pytest.raises(AblationError, match="NAME KEY=VALUE"):
        parse_variant(["ohem"])
    with pytest.raises(AblationError, match="give it first"):
        parse_variant([f"{GAMMA}=1", f"{ALPHA}=0.5"])
    with pytest.raises(AblationError, match="used twice"):
        build_settings([], [("a", [(GAMMA, "1")]), ("a", [(GAMMA, "2")])])
    with pytest.raises(AblationError, match="also on the --grid"):
        build_settings([(GAMMA, ["1"])], [("a", [(GAMMA, "2")])])


def test_settings_are_checked_before_training():
    settings = build_settings(parse_grid([f"{GAMMA}=0,2"]))
    prepare(str(TINY_CONFIG), [], settings)
    # An int for a float key is that float (yacs alone would reject GAMMA=0).
    assert settings[0].overrides == [(GAMMA, "0.0")]
    cases = [
        ([f"MODEL.RETINANET.FOCAL_LOSS_GAMA=0,2"], [], "unknown config key 'MODEL.RETINANET.FOCAL_LOSS_GAMA'"),
        ([f"{GAMMA}=0,abc"], [], "bad value 'abc' for MODEL.RETINANET.FOCAL_LOSS_GAMMA"),
        (["MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS=SigmoidFocalLoss,Nope"], [],
         "CLASSIFICATION_LOSS = 'Nope': expected one of the registered names"),
        # A value outside its domain fails here, not inside every run of the sweep.
        ([f"{GAMMA}=2,-1"], [], re.escape(f"setting 'FOCAL_LOSS_GAMMA=-1': {GAMMA} = -1.0: expected gamma >= 0")),
        ([f"{GAMMA}=1"], ["SOLVER.NOPE", "1"], "command line: unknown config key 'SOLVER.NOPE'"),
        ([f"{GAMMA}=1"], ["SOLVER.MAX_ITER"], "KEY VALUE pairs"),
    ]
    for grid, opts, message in cases:
        with pytest.raises(AblationError, match=message):
            prepare(str(TINY_CONFIG), opts, build_settings(parse_grid(grid)))


def test_main_reports_errors_without_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ablation.runner, "run_one", lambda *a, **k: pytest.fail("trained"))
    code = ablation.main(["--config-file", str(TINY_CONFIG), "--grid", f"{GAMMA}=0,oops",
                          "--output", str(tmp_path)])
    assert code == 2
    assert "bad value 'oops' for MODEL.RETINANET.FOCAL_LOSS_GAMMA" in capsys.readouterr().err
    assert ablation.main(["--config-file", str(tmp_path / "none.yaml"), "--grid", f"{GAMMA}=1"]) == 2
    assert ablation.main(["--config-file", str(TINY_CONFIG)]) == 2
    assert not list(tmp_path.iterdir())


class FakeRuns:
    """
    Stands in for the subprocess: writes result.json with AP = 10 * gamma + alpha + seed.
    """

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def __call__(self, config_file, opts, output_dir, seed, num_gpus=1, threads=None):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt  # the sweep is killed
        self.calls.append((tuple(opts), seed))
        values = dict(zip(opts[0::2], opts[1::2]))
        ap = 10 * float(values[GAMMA]) + float(values[ALPHA]) + seed
        result = {"status": "finished", "seed": seed, "opts": list(opts), "seconds": 1.0,
                  "metrics": {m: ap + i for i, m in enumerate(ablation.METRICS)}}
        if float(values[GAMMA]) == 5:
            result = {**result, "status": "diverged", "diverged_at": 3,
                      "metrics": {m: float("nan") for m in ablation.METRICS}}
        (output_dir_path := __import__("pathlib").Path(output_dir)).mkdir(parents=True, exist_ok=True)
        (output_dir_path / "result.json").write_text(json.dumps(result))
        return result


def test_a_finished_run_without_detections_says_so():
    setting = ablation.Setting(name="v", variant="v", labels={}, overrides=[])
    no_ap = {m: float("nan") for m in ablation.METRICS}
    rows = ablation.summarize([setting], {"v": [{"status": "finished", "metrics": no_ap}]})
    assert "| v | no detections | no detections |" in ablation.results_markdown(rows)
    rows = ablation.summarize([setting], {"v": [{"status": "diverged", "metrics": no_ap}]})
    assert "| v | diverged | diverged |" in ablation.results_markdown(rows)
    rows = ablation.summarize([setting], {"v": []})
    assert "| v | – | – |" in ablation.results_markdown(rows)


def test_the_table_shows_the_final_training_loss_where_the_runs_recorded_it():
    setting = ablation.Setting(name="v", variant="v", labels={}, overrides=[])
    ap = {m: 10.0 for m in ablation.METRICS}
    runs = [{"status": "finished", "metrics": ap, "train_loss": loss} for loss in (0.5, 0.7)]
    table = ablation.results_markdown(ablation.summarize([setting], {"v": runs}))
    assert "| variant | AP | AP50 | AP75 | APs | train loss | runs | time |" in table
    assert "| 10.0 ± 0.0 | 0.60 ± 0.14 | 2 |" in table
    # One run recorded before result.json held the loss: no mean over the other alone.
    runs[1].pop("train_loss")
    table = ablation.results_markdown(ablation.summarize([setting], {"v": runs}))
    assert "train loss" not in table and "| 10.0 ± 0.0 | 2 |" in table
    # Beside a setting that recorded it, the older runs' cell says the loss was not recorded:
    # they have detections (the AP cells), so "no detections" would be wrong.
    recorded = ablation.Setting(name="w", variant="w", labels={}, overrides=[])
    newer = [{"status": "finished", "metrics": {m: 5.0 for m in ablation.METRICS}, "train_loss": 0.3}]
    table = ablation.results_markdown(ablation.summarize([setting, recorded], {"v": runs, "w": newer}))
    assert "| v | **10.0 ± 0.0** | 10.0 ± 0.0 | 10.0 ± 0.0 | 10.0 ± 0.0 | not recorded | 2 |" in table
    assert "| w | 5.0 | 5.0 | 5.0 | 5.0 | 0.30 | 1 |" in table
    # Whether or not they had detections: the loss cell is about the loss.
    no_ap = [{"status": "finished", "metrics": {m: float("nan") for m in ablation.METRICS}}]
    table = ablation.results_markdown(ablation.summarize([setting, recorded], {"v": no_ap, "w": newer}))
    assert "| v | no detections | no detections | no detections | no detections | not recorded | 1 |" in table


def test_sweep_resumes_and_writes_the_run_numbers(tmp_path, monkeypatch, capsys):
    argv = ["--config-file", str(TINY_CONFIG), "--grid", f"{GAMMA}=0,2,5", f"{ALPHA}=.25,.75",
            "--seeds", "2", "--output", str(tmp_path), "SOLVER.MAX_ITER", "7"]
    killed = FakeRuns(fail_at=5)
    monkeypatch.setattr(ablation.runner, "run_one", killed)
    with pytest.raises(KeyboardInterrupt):
        ablation.main(argv)
    assert len(killed.calls) == 5
    # --report: tables from the finished runs, nothing trained.
    monkeypatch.setattr(ablation.runner, "run_one", lambda *a, **k: pytest.fail("trained"))
    assert ablation.main(argv[:-2] + ["--report"] + argv[-2:]) == 0
    partial = (tmp_path / "results.md").read_text()
    assert "| 0 | .25 | 0.8 ± 0.7 |" in partial and "| 5 | .75 | – | – | – | – | 0 |" in partial
    assert "not run yet" in capsys.readouterr().out
    resumed = FakeRuns()
    monkeypatch.setattr(ablation.runner, "run_one", resumed)
    assert ablation.main(argv) == 0
    # The 5 finished runs are skipped; the 7 others run, each with the base overrides.
    assert len(resumed.calls) == 12 - 5
    assert not set(killed.calls) & set(resumed.calls)
    assert all(opts[:2] == ("SOLVER.MAX_ITER", "7") for opts, _ in resumed.calls)
    out = capsys.readouterr().out
    assert out.count("done before, skipped") == 5 and "ETA" in out

    summary = json.loads((tmp_path / "results.json").read_text())
    rows = {r["name"]: r for r in summary["settings"]}
    row = rows["FOCAL_LOSS_GAMMA=2 FOCAL_LOSS_ALPHA=.25"]
    # Seeds 0 and 1: AP 20.25 and 21.25.
    assert row["mean"]["AP"] == pytest.approx(20.75) and row["std"]["AP"] == pytest.approx(math.sqrt(0.5))
    assert row["mean"]["AP75"] == pytest.approx(22.75)
    assert rows["FOCAL_LOSS_GAMMA=5 FOCAL_LOSS_ALPHA=.75"]["num_diverged"] == 2
    table = (tmp_path / "results.md").read_text()
    assert "| FOCAL_LOSS_GAMMA | FOCAL_LOSS_ALPHA | AP | AP50 | AP75 | APs | runs | time |" in table
    assert "| 2 | .75 | **21.2 ± 0.7** | 22.2 ± 0.7 | 23.2 ± 0.7 | 24.2 ± 0.7 | 2 |" in table
    assert "| 5 | .25 | diverged | diverged | diverged | diverged | 2 (2 diverged) |" in table
    assert cv2.imread(str(tmp_path / "results.png")) is not None
    # The plot: AP against gamma, one line per alpha, error bars = std over seeds.
    ax = ablation.plot_results(summary["settings"], str(tmp_path / "again.png")).axes[0]
    lines = {c.get_label(): c for c in ax.containers}
    assert set(lines) == {"FOCAL_LOSS_ALPHA=.25", "FOCAL_LOSS_ALPHA=.75"}
    data = lines["FOCAL_LOSS_ALPHA=.25"].lines[0]
    expected = [r for r in summary["settings"] if r["labels"]["MODEL.RETINANET.FOCAL_LOSS_ALPHA"] == ".25"]
    assert list(data.get_xdata()) == [float(r["labels"]["MODEL.RETINANET.FOCAL_LOSS_GAMMA"]) for r in expected]
    np.testing.assert_allclose(np.asarray(data.get_ydata(), dtype=float), [r["mean"]["AP"] for r in expected])
    assert ax.get_xlabel() == "MODEL.RETINANET.FOCAL_LOSS_GAMMA" and ax.get_ylabel() == "COCO box AP"

    # Same folder, other base overrides: refuse to mix results.
    monkeypatch.setattr(ablation.runner, "run_one", FakeRuns())
    assert ablation.main(argv[:-1] + ["8"]) == 2


def test_listed_seeds_extend_a_finished_sweep(tmp_path, monkeypatch, capsys):
    argv = ["--config-file", str(TINY_CONFIG), "--grid", f"{GAMMA}=0,2", f"{ALPHA}=.25", "--output", str(tmp_path),
            "SOLVER.MAX_ITER", "7"]
    first = FakeRuns()
    monkeypatch.setattr(ablation.runner, "run_one", first)
    assert ablation.main(argv[:5] + ["--seeds", "2"] + argv[5:]) == 0
    assert sorted(seed for _, seed in first.calls) == [0, 0, 1, 1]
    # Two more seeds: only those run, the earlier two are not even looked up again.
    more = FakeRuns()
    monkeypatch.setattr(ablation.runner, "run_one", more)
    assert ablation.main(argv[:5] + ["--seeds", "3,4"] + argv[5:]) == 0
    assert sorted(seed for _, seed in more.calls) == [3, 3, 4, 4]
    # --report over all four seeds tables the two sweeps as one: AP = 10 * gamma + 0.25 + seed.
    monkeypatch.setattr(ablation.runner, "run_one", lambda *a, **k: pytest.fail("trained"))
    assert ablation.main(argv[:5] + ["--seeds", "0,1,3,4", "--report"] + argv[5:]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "results.json").read_text())["settings"]}
    assert [r["seed"] for r in rows["FOCAL_LOSS_GAMMA=2 FOCAL_LOSS_ALPHA=.25"]["runs"]] == [0, 1, 3, 4]
    assert rows["FOCAL_LOSS_GAMMA=2 FOCAL_LOSS_ALPHA=.25"]["mean"]["AP"] == pytest.approx(20.25 + 2)
    for bad in ("0", "-1,2", "3,3", "a,b", "x"):
        with pytest.raises(SystemExit):
            ablation.main(argv[:5] + ["--seeds", bad] + argv[5:])
        assert "--seeds" in capsys.readouterr().err


def test_parallel_sweep_runs_each_setting_once_and_orders_seeds(tmp_path, monkeypatch, capsys):
    argv = ["--config-file", str(TINY_CONFIG), "--grid", f"{GAMMA}=0,2", f"{ALPHA}=.25,.75",
            "--seeds", "3", "--output", str(tmp_path), "--jobs", "4"]
    runs = FakeRuns()
    threads_seen = []
    monkeypatch.setattr(ablation.runner, "run_one", lambda *a, threads=None, **k: threads_seen.append(threads) or runs(*a, **k))
    assert ablation.main(argv) == 0
    assert len(runs.calls) == 12 and len(set(runs.calls)) == 12
    assert set(threads_seen) == {max(1, (os.cpu_count() or 1) // 4)}
    rows = {r["name"]: r for r in json.loads((tmp_path / "results.json").read_text())["settings"]}
    # Seeds 0, 1, 2 in order, whatever order the runs finished in.
    assert [r["seed"] for r in rows["FOCAL_LOSS_GAMMA=2 FOCAL_LOSS_ALPHA=.75"]["runs"]] == [0, 1, 2]
    assert rows["FOCAL_LOSS_GAMMA=2 FOCAL_LOSS_ALPHA=.75"]["mean"]["AP"] == pytest.approx(21.75)
    assert capsys.readouterr().out.count("ETA") == 12


def test_parallel_sweep_stops_starting_runs_after_a_failure(tmp_path, monkeypatch):
    started = []

    def failing(config_file, opts, output_dir, seed, num_gpus=1, threads=None):
        started.append(seed)
        if len(started) == 1:
            raise RuntimeError("run in x failed (exit code 1)")
        time.sleep(0.5)
        return FakeRuns()(config_file, opts, output_dir, seed)

    monkeypatch.setattr(ablation.runner, "run_one", failing)
    settings = ablation.build_settings([(GAMMA, ["1"]), (ALPHA, [".25"])], [])
    with pytest.raises(RuntimeError, match="exit code 1"):
        ablation.run_sweep(str(TINY_CONFIG), settings, str(tmp_path), seeds=range(20), jobs=2)
    # The run in flight beside the failed one may finish; the other 18 never start.
    assert len(started) <= 3


def test_variant_sweep_draws_bars(tmp_path, monkeypatch):
    argv = ["--config-file", str(TINY_CONFIG), "--output", str(tmp_path),
            "--variant", "gamma2", f"{GAMMA}=2", "--variant", "alpha_hi", f"{ALPHA}=0.75", f"{GAMMA}=1"]
    # Overrides after the last --variant are the base config's (the fake needs both keys).
    monkeypatch.setattr(ablation.runner, "run_one", FakeRuns())
    assert ablation.main(argv + [GAMMA, "1", ALPHA, "0.5"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert [(r["name"], r["mean"]["AP"]) for r in rows] == [("base", 10.5), ("gamma2", 20.5), ("alpha_hi", 10.75)]
    table = (tmp_path / "results.md").read_text()
    assert "| variant | AP |" in table and "| gamma2 | **20.5** |" in table
    assert "- `alpha_hi`: `MODEL.RETINANET.FOCAL_LOSS_ALPHA=0.75` `MODEL.RETINANET.FOCAL_LOSS_GAMMA=1.0`" in table
    assert cv2.imread(str(tmp_path / "results.png")) is not None
    ax = ablation.plot_results(rows, str(tmp_path / "again.png")).axes[0]
    assert [bar.get_height() for bar in ax.patches] == [10.5, 20.5, 10.75]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base", "gamma2", "alpha_hi"]


@pytest.mark.slow
def test_a_real_run_trains_and_evaluates(tmp_path):
    train = generate_shapes_split(str(tmp_path / "train"), 4, seed=1, image_size=128)
    val = generate_shapes_split(str(tmp_path / "val"), 2, seed=2, image_size=128)
    register = (f"[['abl_train','{train}','{tmp_path / 'train'}'],"
                f"['abl_val','{val}','{tmp_path / 'val'}']]")
    output = tmp_path / "sweep"
    code = ablation.main([
        "--config-file", str(TINY_CONFIG), "--grid", f"{GAMMA}=2", "--output", str(output),
        "DATASETS.REGISTER.COCO", register, "DATASETS.TRAIN", "('abl_train',)", "DATASETS.TEST", "('abl_val',)",
        # p = 0.5 at the start: detections above the score threshold, so a real AP.
        "MODEL.RETINANET.PRIOR_PROB", "0.5", "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0",
        "SOLVER.IMS_PER_BATCH", "2",
    ])
    assert code == 0
    (run_dir,) = (output / "runs").iterdir()
    run_dir = run_dir / "seed0"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "finished" and result["iterations"] == 2
    # The numbers are COCOEvaluator's, as detectron2 logged them in the run's metrics.json.
    logged = [json.loads(line) for line in (run_dir / "metrics.json").read_text().splitlines()]
    logged_ap = [r["bbox/AP"] for r in logged if "bbox/AP" in r][-1]
    assert result["metrics"]["AP"] == pytest.approx(logged_ap)
    assert not math.isnan(logged_ap)
    # The final training loss, as detectron2 logged it (the median of the last iterations).
    logged_loss = [r["total_loss"] for r in logged if "total_loss" in r][-1]
    assert result["train_loss"] == pytest.approx(logged_loss)
    assert (run_dir / "inference" / "abl_val" / "coco_instances_results.json").is_file()
    summary = json.loads((output / "results.json").read_text())
    assert summary["settings"][0]["mean"]["AP"] == pytest.approx(logged_ap)
    assert f"{logged_ap:.1f}" in (output / "results.md").read_text()
    assert f"| {logged_loss:.2f} |" in (output / "results.md").read_text()


class RecipeRuns:
    """Stands in for the subprocess of a recipe comparison: AP by recipe and seed."""

    def __init__(self, ap_of):
        self.ap_of, self.calls = ap_of, []

    def __call__(self, config_file, opts, output_dir, seed, num_gpus=1, threads=None):
        values = dict(zip(opts[0::2], opts[1::2]))
        recipe = ("detectron2_RetinaNet" if values.get("MODEL.META_ARCHITECTURE") == "RetinaNet"
                  else "v2_adamw" if values.get("SOLVER.OPTIMIZER") == "AdamW"
                  else "v2" if values.get("MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS") == "QualityFocalLoss" else "base")
        self.calls.append((recipe, values))
        ap = self.ap_of[recipe](seed)
        result = {"status": "finished", "seed": seed, "opts": list(opts), "seconds": 1.0,
                  "metrics": {m: ap for m in ablation.METRICS}}
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "result.json"), "w") as f:
            json.dump(result, f)
        return result


def test_compare_recipes_runs_the_four_recipes_on_a_fraction_of_the_schedule(tmp_path, monkeypatch, capsys):
    runs = RecipeRuns({"base": lambda s: 10.0 + s, "v2_adamw": lambda s: 20.0 + s, "v2": lambda s: 15.0 + s,
                       "detectron2_RetinaNet": lambda s: 10.5 + s})
    monkeypatch.setattr(ablation.runner, "run_one", runs)
    argv = ["--config-file", str(TINY_CONFIG), "--compare-recipes", "--seeds", "3", "--schedule-fraction", "0.5",
            "--output", str(tmp_path), "SOLVER.MAX_ITER", "40", "SOLVER.STEPS", "(30,)"]
    assert ablation.main(argv) == 0
    assert sorted({recipe for recipe, _ in runs.calls}) == ["base", "detectron2_RetinaNet", "v2", "v2_adamw"]
    assert len(runs.calls) == 12
    for recipe, values in runs.calls:
        assert (values["SOLVER.MAX_ITER"], values["SOLVER.STEPS"]) == ("20", "(15,)")
        if recipe == "v2_adamw":
            assert all(values[k] == v for k, v in ablation.V2_ADAMW_RECIPE)
        if recipe == "v2":
            # the model and loss options of configs/*_v2.yaml on the config's own assigner, optimizer and lr
            assert all(values[k] == v for k, v in ablation.V2_RECIPE)
            assert not {"SOLVER.OPTIMIZER", "SOLVER.BASE_LR", "MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER"} & set(values)
    verdict = (tmp_path / "results.md").read_text()
    assert ("v2_adamw is better: every seed above every paper-default seed (v2_adamw 20.0-22.0 AP against the "
            "paper default's 10.0-12.0") in verdict
    assert "v2 is better: every seed above" in verdict
    assert "detectron2_RetinaNet ties with the paper default within seed noise: their seeds overlap" in verdict
    # the better recipe with the higher mean
    assert "**Use v2_adamw on this data.**" in verdict
    assert "**Use v2_adamw on this data.**" in capsys.readouterr().out


def test_compare_recipes_keeps_the_paper_default_when_seeds_overlap(tmp_path, monkeypatch):
    # v2_adamw is ahead on average (+1.0) but its seeds overlap the paper default's: a tie, not a win.
    runs = RecipeRuns({"base": lambda s: 10.0 + 2 * s, "v2_adamw": lambda s: 11.0 + 2 * s,
                       "v2": lambda s: 9.0 + 2 * s, "detectron2_RetinaNet": lambda s: 3.0 + s})
    monkeypatch.setattr(ablation.runner, "run_one", runs)
    assert ablation.main(["--config-file", str(TINY_CONFIG), "--compare-recipes", "--seeds", "2",
                          "--output", str(tmp_path)]) == 0
    verdict = (tmp_path / "results.md").read_text()
    assert "v2_adamw ties with the paper default within seed noise" in verdict and "+1.0" in verdict
    assert "v2 ties with the paper default within seed noise" in verdict and "-1.0" in verdict
    assert "detectron2_RetinaNet is worse: every seed below" in verdict
    assert "**Use the paper default on this data: no recipe beats it beyond seed noise (2 seed(s) per recipe" in verdict


def test_a_schedule_fraction_outside_0_1_is_refused(tmp_path, capsys):
    assert ablation.main(["--config-file", str(TINY_CONFIG), "--compare-recipes", "--schedule-fraction", "1.5",
                          "--output", str(tmp_path)]) == 2
    assert "--schedule-fraction must be in (0, 1]" in capsys.readouterr().err
