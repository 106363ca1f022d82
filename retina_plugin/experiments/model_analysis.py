"""
Model analysis of a FocalRetinaNet: parameters and FLOPs of each part (ResNet, FPN,
classification subnet, box subnet) and the anchors of each level at one input size.
FLOPs are fvcore's count (one fused multiply-add = one flop) through detectron2's
FlopCountAnalysis, for one image of the given size.
"""
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
from torch import nn

from detectron2.utils.analysis import FlopCountAnalysis

__all__ = ["PARTS", "analyze_model", "format_analysis"]

# Part name -> the submodules it is made of.
PARTS = OrderedDict(
    [
        ("backbone (ResNet)", ["backbone.bottom_up"]),
        ("FPN", ["backbone"]),  # minus the ResNet
        ("classification subnet", ["head.cls_subnet", "head.cls_score"]),
        ("box subnet", ["head.bbox_subnet", "head.bbox_pred"]),
    ]
)


def _sum_by_module(values: Dict[str, int], names: List[str]) -> int:
    return sum(values.get(n, 0) for n in names)


def analyze_model(model: nn.Module, height: int, width: int) -> Dict:
    """
    Args:
        model: a FocalRetinaNet (in eval mode or not; it is analyzed in eval mode).
        height, width: input image size (before padding to the backbone's divisibility).
    Returns:
        {"parts": {part: (params, flops)}, "total": (params, flops),
         "anchors": [(level, Hi, Wi, anchors)], "input": (H, W)}; flops in multiply-adds.
    """
    was_training = model.training
    model.eval()
    try:
        image = torch.zeros(3, height, width, device=model.device)
        flops = FlopCountAnalysis(model, [{"image": image}])
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        # detectron2 traces the model inside a TracingAdapter: names start with "model.".
        flops_by_module = {k[len("model."):]: v for k, v in flops.by_module().items() if k.startswith("model.")}
        params_by_module = {
            name: sum(p.numel() for p in module.parameters()) for name, module in model.named_modules()
        }
        parts = OrderedDict()
        for part, names in PARTS.items():
            parts[part] = [_sum_by_module(params_by_module, names), _sum_by_module(flops_by_module, names)]
        fpn = parts["FPN"]
        resnet = parts["backbone (ResNet)"]
        parts["FPN"] = [fpn[0] - resnet[0], fpn[1] - resnet[1]]
        with torch.no_grad():
            padded = model.preprocess_image([{"image": image}]).tensor
            features = model.backbone(padded)
        num_cell_anchors = model.anchor_generator.num_cell_anchors
        anchors: List[Tuple[str, int, int, int]] = []
        for level, a in zip(model.head_in_features, num_cell_anchors):
            h, w = features[level].shape[-2:]
            anchors.append((level, h, w, a * h * w))
        total = (sum(p.numel() for p in model.parameters()), flops.total())
        return {"parts": parts, "total": total, "anchors": anchors, "input": (height, width)}
    finally:
        model.train(was_training)


def format_analysis(result: Dict) -> str:
    """
    The analysis as two markdown tables.
    """
    height, width = result["input"]
    lines = [
        f"Input {height} x {width} (one image)",
        "",
        "| part | parameters (M) | GFLOPs |",
        "|---|---:|---:|",
    ]
    for part, (params, flops) in result["parts"].items():
        lines.append(f"| {part} | {params / 1e6:.3f} | {flops / 1e9:.3f} |")
    params, flops = result["total"]
    lines.append(f"| total | {params / 1e6:.3f} | {flops / 1e9:.3f} |")
    lines += ["", "| level | H x W | anchors |", "|---|---|---:|"]
    for level, h, w, count in result["anchors"]:
        lines.append(f"| {level} | {h} x {w} | {count} |")
    lines.append(f"| all | | {sum(a[3] for a in result['anchors'])} |")
    return "\n".join(lines)
