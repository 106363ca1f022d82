"""
The one-class, tree-crown-like regime of issue 27 built from the reef: every third training tile
(the tiles of ``retina_reef_train_third``) and the val tiles, with the 4 coral classes merged
into one, as COCO json files under datasets/reef_one_class/ (images stay in datasets/retina_reef/).
Run from the repository root after the reef has been built once (any training on it builds it):

    python experiment_records/reef_one_class_regime/make_datasets.py
    bash experiment_records/reef_one_class_regime/run.sh
"""
import json
import os

from retina_plugin.data.reef import reef_root

root = reef_root()
output = os.path.join(os.path.dirname(root.rstrip("/")), "reef_one_class")
os.makedirs(output, exist_ok=True)
for split, name, every in (("train", "train_third", 3), ("val", "val", 1)):
    coco = json.load(open(os.path.join(root, split, "annotations.json")))
    # detectron2's load_coco_json orders images by id, and retina_reef_train_third takes [::3] of that.
    kept = set(sorted(image["id"] for image in coco["images"])[::every])
    one_class = {
        "images": [image for image in coco["images"] if image["id"] in kept],
        "annotations": [dict(a, category_id=1) for a in coco["annotations"] if a["image_id"] in kept],
        "categories": [{"id": 1, "name": "coral"}],
    }
    with open(os.path.join(output, f"{name}.json"), "w") as f:
        json.dump(one_class, f)
    print(f"{output}/{name}.json: {len(one_class['images'])} tiles, {len(one_class['annotations'])} boxes")
