"""
The Figure-4 analyzer: shares of the loss carried by the hardest samples, the cumulative
curves, and tools/loss_cdf.py end to end on a tiny model.
"""
import json

import cv2
import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from retina_plugin.experiments import loss_distribution as ld
from retina_plugin.data.shapes import generate_shapes_split

from .conftest import TINY_CONFIG, load_cfg


def test_hardest_share_on_a_hand_made_case():
    losses = torch.tensor([1.0] * 8 + [4.0, 8.0])
    # Hardest 20 % = the 2 largest: (4 + 8) / 20.
    assert ld.hardest_share(losses, 0.2) == pytest.approx(0.6)
    # 5 % of 10 samples rounds up to one sample: 8 / 20.
    assert ld.hardest_share(losses, 0.05) == pytest.approx(0.4)
    assert ld.hardest_share(losses, 1.0) == pytest.approx(1.0)
    fraction, cdf = ld.cumulative_distribution(losses)
    assert fraction.tolist() == pytest.approx([i / 10 for i in range(1, 11)])
    assert cdf.tolist() == pytest.approx([i / 20 for i in range(1, 9)] + [12 / 20, 1.0])
    fraction, cdf = ld.cumulative_distribution(torch.rand(5000), num_points=100)
    assert len(cdf) == 100 and cdf[-1] == pytest.approx(1.0) and (cdf.diff() >= 0).all()


def test_shares_per_gamma_from_logits():
    # Positives: p = sigmoid(x); negatives: 95 easy (x = -4) and 5 hard (x = 0) ones.
    positive_logits = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0])
    negative_logits = torch.tensor([-4.0] * 95 + [0.0] * 5)
    rows = ld.loss_distribution(positive_logits, negative_logits, [0, 2])
    for row, gamma in zip(rows, [0, 2]):
        p = torch.sigmoid(positive_logits.double())
        pos = -((1 - p) ** gamma) * torch.log(p)
        assert row["positive_share_hardest_20"] == pytest.approx(float(pos.sort().values[-2:].sum() / pos.sum()), rel=1e-5)
        q = torch.sigmoid(negative_logits.double())
        neg = -(q**gamma) * torch.log(1 - q)
        assert row["negative_share_hardest_5"] == pytest.approx(float(neg.sort().values[-5:].sum() / neg.sum()), rel=1e-5)
        assert row["num_positives"] == 10 and row["num_negatives"] == 100
    # The point of Figure 4: with gamma = 2 the few hard negatives carry nearly all the loss.
    assert rows[0]["negative_share_hardest_5"] < 0.75 < 0.99 < rows[1]["negative_share_hardest_5"]


def test_loss_cdf_tool_end_to_end(tmp_path, capsys):
    train = generate_shapes_split(str(tmp_path / "val"), 2, seed=3, image_size=128)
    cfg = load_cfg()
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("tiny")
    output = tmp_path / "cdf" / "loss_cdf.png"
    opts = ["DATASETS.REGISTER.COCO", f"[['cdf_val','{train}','{tmp_path / 'val'}']]",
            "DATASETS.TEST", "('cdf_val',)", "MODEL.WEIGHTS", str(tmp_path / "tiny.pth")]
    code = ld.main(["--config-file", str(TINY_CONFIG), "--gammas", "0,1,2", "--output", str(output), *opts])
    assert code == 0
    printed = capsys.readouterr().out
    numbers = json.loads(output.with_suffix(".json").read_text())
    rows = numbers["gammas"]
    assert [r["gamma"] for r in rows] == [0.0, 1.0, 2.0]
    # Every background anchor gives K = 4 negative samples.
    assert rows[0]["num_negatives"] % 4 == 0 and rows[0]["num_positives"] > 0
    for row in rows:
        assert f"| {row['gamma']:g} | {100 * row['positive_share_hardest_20']:.1f} % " in printed
        assert 0.2 <= row["positive_share_hardest_20"] <= 1 and 0.05 <= row["negative_share_hardest_5"] <= 1
    picture = cv2.imread(str(output))
    assert picture is not None and picture.shape[1] > picture.shape[0]

    assert ld.main(["--config-file", str(TINY_CONFIG), "--gammas", "0,x", *opts]) == 2
    assert ld.main(["--config-file", str(TINY_CONFIG), "--gammas", "-1", *opts]) == 2
    assert ld.main(["--config-file", str(TINY_CONFIG)]) == 2
    assert "MODEL.WEIGHTS is empty" in capsys.readouterr().err


def test_loss_cdf_plot_draws_one_curve_per_gamma_in_each_panel(tmp_path):
    rows = [{"gamma": g, "num_positives": 10, "num_negatives": 400,
             "positive_curve": ([0.0, 0.5, 1.0], [0.0, 0.2 + 0.1 * g, 1.0]),
             "negative_curve": ([0.0, 0.5, 1.0], [0.0, 0.05 * g, 1.0])} for g in (0.0, 2.0)]
    figure = ld.plot_loss_cdfs(rows, str(tmp_path / "cdf.png"))
    assert [ax.get_title() for ax in figure.axes] == ["positive samples (10)", "negative samples (400)"]
    for ax, kind in zip(figure.axes, ("positive", "negative")):
        assert [line.get_label() for line in ax.get_lines()] == ["γ = 0", "γ = 2"]
        for line, row in zip(ax.get_lines(), rows):
            assert list(line.get_ydata()) == row[f"{kind}_curve"][1]
        assert (ax.get_xlim(), ax.get_ylim()) == ((0.0, 1.0), (0.0, 1.0))
