"""
The dense regime of issue 27: retina_shapes drawn as crowded as a closed tree canopy, to test
what ATSS's top-k and the quality focal loss's IoU target do with many small, adjacent objects.
256 px images with 25-40 shapes of 12-32 px each (retina_shapes: 6-16 of 14-48 px), boxes
overlapping up to IoU 0.1 as in retina_shapes; 200 training and 60 val images, as COCO json
under datasets/shapes_dense/. Run from the repository root:

    python experiment_records/shapes_dense_regime/make_datasets.py
    bash experiment_records/shapes_dense_regime/run.sh
"""
import json
import os

from retina_plugin.data.shapes import generate_shapes_split

root = os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "shapes_dense")
for split, count, seed in (("train", 200, 10), ("val", 60, 11)):
    json_file = generate_shapes_split(os.path.join(root, split), count, seed, object_size=(12, 32),
                                      objects_per_image=(25, 40))
    boxes = len(json.load(open(json_file))["annotations"])
    print(f"{json_file}: {count} images, {boxes} boxes ({boxes / count:.1f} an image)")
