"""
The one-class, tree-crown-like regime of issue 27 built from the reef: the tiles of
``retina_reef_train_third`` and ``retina_reef_val`` (built on first load), with the 4 coral
classes merged into one, as COCO json files under datasets/reef_one_class/ (images stay in
datasets/retina_reef/). Run from the repository root:

    python experiment_records/reef_one_class_regime/make_datasets.py
    bash experiment_records/reef_one_class_regime/run.sh
"""
import json
import os

from detectron2.data import DatasetCatalog

import retina_plugin  # noqa: F401  (registers the reef datasets)
from retina_plugin.data.reef import reef_root

root = reef_root()
output = os.path.join(os.path.dirname(root.rstrip("/")), "reef_one_class")
os.makedirs(output, exist_ok=True)
for dataset, split, name in (("retina_reef_train_third", "train", "train_third"), ("retina_reef_val", "val", "val")):
    kept = {record["image_id"] for record in DatasetCatalog.get(dataset)}
    coco = json.load(open(os.path.join(root, split, "annotations.json")))
    one_class = {
        "images": [image for image in coco["images"] if image["id"] in kept],
        "annotations": [dict(a, category_id=1) for a in coco["annotations"] if a["image_id"] in kept],
        "categories": [{"id": 1, "name": "coral"}],
    }
    with open(os.path.join(output, f"{name}.json"), "w") as f:
        json.dump(one_class, f)
    print(f"{output}/{name}.json: {len(one_class['images'])} tiles, {len(one_class['annotations'])} boxes")
