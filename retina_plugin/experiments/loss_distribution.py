"""
Loss distribution analyzer (the paper's Figure 4): how the focal loss of a trained model
spreads over positive and negative samples for each gamma.

A *sample* is one binary classification, as the sigmoid head sees it: a positive is the
gt-class output of an anchor matched to a box; a negative is any class output of a background
anchor (ignored anchors, and the other classes of foreground anchors, are left out). For each
gamma the focal loss of every sample is normalized to sum to 1 separately over positives and
negatives and sorted; the cumulative sums are the curves. alpha is left out: within one group
it is a constant factor, which the normalization removes.
"""
import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.data.detection_utils import build_augmentation
from detectron2.modeling import build_model

from ..modeling.losses import sigmoid_focal_loss

__all__ = [
    "collect_sample_logits",
    "focal_losses",
    "cumulative_distribution",
    "hardest_share",
    "loss_distribution",
    "plot_loss_cdfs",
    "main",
]

# The paper's Figure 4 reading: share of the loss in the hardest 20 % of positives and the
# hardest 5 % of negatives.
HARDEST_POSITIVES = 0.20
HARDEST_NEGATIVES = 0.05


@torch.no_grad()
def collect_sample_logits(model, data_loader, max_images: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Run ``model`` (a FocalRetinaNet, eval mode) over ``data_loader`` (dicts with
    "instances") and label its anchors as in training.

    Returns:
        positive_logits: (P,) the gt-class logit of every foreground anchor.
        negative_logits: (Q,) every class logit of every background anchor.
    """
    positives, negatives = [], []
    seen = 0
    for batched_inputs in data_loader:
        images = model.preprocess_image(batched_inputs)
        features, predictions = model.features_and_predictions(images.tensor)
        pred_logits, _ = model.predictions_per_anchor(predictions)
        logits = torch.cat(pred_logits, dim=1)  # (N, R, K)
        gt_instances = [x["instances"].to(model.device) for x in batched_inputs]
        gt_labels, _ = model.label_anchors(model.anchor_generator(features), gt_instances)  # (N, R)
        foreground = (gt_labels >= 0) & (gt_labels != model.num_classes)
        positives.append(logits[foreground].gather(1, gt_labels[foreground][:, None]).squeeze(1))
        negatives.append(logits[gt_labels == model.num_classes].flatten())
        seen += len(batched_inputs)
        if max_images is not None and seen >= max_images:
            break
    return torch.cat(positives).float().cpu(), torch.cat(negatives).float().cpu()


def focal_losses(logits: torch.Tensor, positive: bool, gamma: float) -> torch.Tensor:
    """
    (n,) focal loss of each sample (alpha off), for targets all 1 (positive) or all 0.
    """
    targets = torch.full_like(logits, 1.0 if positive else 0.0)
    return sigmoid_focal_loss(logits, targets, alpha=-1, gamma=gamma)


def cumulative_distribution(losses: torch.Tensor, num_points: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Losses sorted from easiest to hardest, normalized to sum 1, cumulated.

    Returns (fraction (n,), cdf (n,)): fraction i/n of the samples and the share of the loss
    they carry; with ``num_points`` > 0, that many points evenly spaced in the fraction.
    """
    n = losses.numel()
    if n == 0:
        raise ValueError("no samples: the dataset has no anchors of this kind")
    ordered = torch.sort(losses.double()).values
    total = ordered.sum()
    cdf = ordered.cumsum(0) / total if total > 0 else torch.linspace(1.0 / n, 1.0, n, dtype=torch.float64)
    fraction = torch.arange(1, n + 1, dtype=torch.float64) / n
    if num_points and n > num_points:
        picks = torch.linspace(0, n - 1, num_points).round().long()
        fraction, cdf = fraction[picks], cdf[picks]
    return fraction, cdf


def hardest_share(losses: torch.Tensor, fraction: float) -> float:
    """
    Share of the total loss carried by the hardest ``fraction`` of the samples
    (ceil(fraction * n) of them).
    """
    n = losses.numel()
    count = math.ceil(fraction * n - 1e-9)
    total = losses.double().sum()
    if n == 0 or total <= 0:
        return float("nan")
    return float(torch.topk(losses.double(), count).values.sum() / total) if count else 0.0


def loss_distribution(
    positive_logits: torch.Tensor,
    negative_logits: torch.Tensor,
    gammas: Sequence[float],
    num_points: int = 1000,
) -> List[Dict]:
    """
    Per gamma: the hardest-20 %-positives and hardest-5 %-negatives shares and the two curves.
    """
    rows = []
    for gamma in gammas:
        pos = focal_losses(positive_logits, True, gamma)
        neg = focal_losses(negative_logits, False, gamma)
        rows.append(
            {
                "gamma": float(gamma),
                "num_positives": pos.numel(),
                "num_negatives": neg.numel(),
                "positive_share_hardest_20": hardest_share(pos, HARDEST_POSITIVES),
                "negative_share_hardest_5": hardest_share(neg, HARDEST_NEGATIVES),
                "positive_curve": [t.tolist() for t in cumulative_distribution(pos, num_points)],
                "negative_curve": [t.tolist() for t in cumulative_distribution(neg, num_points)],
            }
        )
    return rows


def plot_loss_cdfs(rows: List[Dict], path: str, title: str = ""):
    """
    Two panels, positives and negatives: cumulative normalized loss against the fraction of
    samples (easiest first), one curve per gamma, as in the paper's Figure 4.
    Returns the matplotlib Figure (saved to ``path``, closed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind in zip(axes, ("positive", "negative")):
        for row in rows:
            fraction, cdf = row[f"{kind}_curve"]
            ax.plot(fraction, cdf, label=f"γ = {row['gamma']:g}")
        ax.set_title(f"{kind} samples ({rows[0][f'num_{kind}s']:,})")
        ax.set_xlabel("fraction of samples (sorted by loss, easiest first)")
        ax.set_ylabel("cumulative normalized loss")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def shares_table(rows: List[Dict]) -> str:
    lines = [
        "| γ | loss share of hardest 20 % positives | loss share of hardest 5 % negatives |",
        "|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['gamma']:g} | {100 * row['positive_share_hardest_20']:.1f} % "
            f"| {100 * row['negative_share_hardest_5']:.1f} % |"
        )
    return "\n".join(lines)


def _parse_gammas(text: str) -> List[float]:
    try:
        gammas = [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--gammas {text!r}: expected numbers separated by commas, e.g. 0,0.5,1,2") from None
    if any(g < 0 or not math.isfinite(g) for g in gammas):
        raise ValueError(f"--gammas {text!r}: gamma must be a finite number >= 0")
    return gammas


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Figure 4 of the focal loss paper for a trained model: cumulative distribution "
        "of the focal loss over positive and negative samples, one curve per gamma."
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--gammas", default="0,0.5,1,2", help="comma-separated gammas (default 0,0.5,1,2)")
    parser.add_argument("--dataset", default="", help="dataset name (default: the first of DATASETS.TEST)")
    parser.add_argument("--max-images", type=int, default=0, help="stop after this many images (0: all)")
    parser.add_argument("--output", default="loss_cdf.png", help="the plot; the numbers go to the same name .json")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS output/demo/model_final.pth")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..config import load_config
    from ..data import register_datasets_from_config

    args = argument_parser().parse_args(argv)
    try:
        gammas = _parse_gammas(args.gammas)
        cfg = load_config(args.config_file, args.opts)
    except ValueError as e:
        print(f"loss_cdf: error: {e}", file=sys.stderr)
        return 2
    if not cfg.MODEL.WEIGHTS:
        print("loss_cdf: error: MODEL.WEIGHTS is empty; give a trained model (MODEL.WEIGHTS path.pth)", file=sys.stderr)
        return 2
    cfg.freeze()
    register_datasets_from_config(cfg)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    # The training mapper keeps the annotations; the test-time resize makes it see what
    # inference sees.
    mapper = DatasetMapper(cfg, is_train=True, augmentations=build_augmentation(cfg, is_train=False))
    loader = build_detection_test_loader(cfg, dataset, mapper=mapper)
    positive_logits, negative_logits = collect_sample_logits(model, loader, args.max_images or None)
    rows = loss_distribution(positive_logits, negative_logits, gammas)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    plot_loss_cdfs(rows, args.output, title=f"{os.path.basename(cfg.MODEL.WEIGHTS)} on {dataset}")
    numbers_path = os.path.splitext(args.output)[0] + ".json"
    with open(numbers_path, "w") as f:
        json.dump({"weights": cfg.MODEL.WEIGHTS, "dataset": dataset, "gammas": rows}, f)
    print(f"{len(positive_logits):,} positive and {len(negative_logits):,} negative samples from {dataset}")
    print(shares_table(rows))
    print(f"Wrote {args.output} and {numbers_path}")
    return 0
