"""
Our merge's edge margin and partial-view IoU on a trained reef model, after
oracle.py found that a detector whose boxes are a few percent off loses its cut parts to the 2-px
edge margin: the same 512-px window detections (overlap 0.25), merged with EDGE_MARGIN 2 / 8 / 16
(model pixels) x PARTIAL_IOU_THRESH 0.5 / 0.7 / 0.9 x NMS / MERGE, COCO AP on retina_reef_val_full.

    python experiment_records/large_images/edge_margin.py WEIGHTS [CONFIG [TAG]]

Writes edge_margin{TAG}.json / .md here.
"""
import json
import os
import sys
from dataclasses import replace

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from retina_plugin.config import load_config, test_resize
from retina_plugin.data.windows import slice_windows
from retina_plugin.slicing.inference import SliceSettings, detect_in_windows, merge_views
from retina_plugin.training.trainer import Trainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle import with_edge_margin  # noqa: E402
from run import REPO, _with, coco_ap, load_val_full, plain_nms  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main(weights: str, config: str = "configs/reef_R18_cpu_v2_adamw.yaml", tag: str = "") -> int:
    torch.set_num_threads(2)
    cfg = load_config(config, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu",
                               "OUTPUT_DIR", os.path.join(REPO, "output", "large_images_eval")])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    rows = {"val tiles": {k: v for k, v in Trainer.test(_with(cfg, "retina_reef_val"), model)["bbox"].items()
                          if k in ("AP", "AP50", "AP75")}}
    record, gt, category_ids, image = load_val_full()
    size = image.shape[:2]
    settings = SliceSettings.from_config(cfg)
    resize = test_resize(cfg)
    windows = slice_windows(*size, settings.size, settings.overlap)
    views = [d for batch in detect_in_windows(model, image, windows, settings, resize) for d in batch]
    scale = cfg.INPUT.MIN_SIZE_TEST / min(settings.size)
    rows["class-wise NMS 0.5"] = coco_ap(gt, record["image_id"], plain_nms(views, size), category_ids)
    for margin in (2.0, 8.0, 16.0):
        flagged = with_edge_margin(views, size, margin / scale)
        for merge in ("NMS", "MERGE"):
            for partial in (0.5, 0.7, 0.9):
                name = f"ours {merge}, edge margin {margin:g}, partial IoU {partial:g}"
                rows[name] = coco_ap(gt, record["image_id"], merge_views(
                    flagged, size, replace(settings, merge=merge, partial_threshold=partial, edge_margin=margin)),
                    category_ids)
                print(name, rows[name], flush=True)
    with open(os.path.join(HERE, f"edge_margin{tag}.json"), "w") as f:
        json.dump({"weights": weights, "config": config, "rows": rows}, f, indent=1)
    lines = ["| setting | AP | AP50 | AP75 |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['AP']:.1f} | {r['AP50']:.1f} | {r['AP75']:.1f} |" for name, r in rows.items()]
    with open(os.path.join(HERE, f"edge_margin{tag}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
