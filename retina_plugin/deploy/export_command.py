"""
The command line of ``tools/export_model.py``: export a trained FocalRetinaNet, and check
what was written against eager mode before reporting success.

- ``--format torchscript`` / ``onnx-standalone``: the whole model in one file (image in,
  detections out, NMS inside; :mod:`retina_plugin.deploy.export`), checked for the same
  detections at the sample image's size and at other sizes.
- ``--format onnx`` / ``openvino`` / ``tensorrt``: an engine folder
  (:mod:`retina_plugin.deploy.engines`) at ``--precision fp32|fp16|bf16|int8`` (bf16: OpenVINO
  on a CPU with AMX or AVX512-BF16); int8 is calibrated on ``--calibration-images`` images of
  ``--calibration-dataset``. An fp32 engine must give the eager model's detections (as sets) on
  real images, alone and in batches; fp16, bf16 and int8 engines are scored by COCOEvaluator on
  evaluation images that calibration did not use, and refused (non-zero exit, and an engine that
  will not load) when they lose more than ``--max-ap-drop`` AP.
- ``--verify ENGINE``: the same check again, here, for an engine made elsewhere or with another
  release of its backend.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog

from ..config import add_retina_config, build_any_model, inference_resize, load_config, model_weights, test_resize
from ..data import register_datasets_from_config
from ..data.mapper import read_image_checked
from ..entry_points.defaults import setup_logging, setup_process
from ..utils.timing import median_latency_ms
from ..utils.files import file_sha256
from .build import build_engine, default_profile, write_engine_metadata
from .engines import PRECISIONS, SUPPORTED, EngineError, InputProfile, backend_version, read_engine_metadata
from .export import FORMATS, METHODS, export_model, load_exported, resized_copies, run_eager, run_exported, verify_exported
from .predictor import build_engine_model
from .verification import calibration_batches, compare_with_eager, evaluate_ap, held_out_subset, mapped_test_images

__all__ = ["ENGINE_FORMATS", "STANDALONE_FORMATS", "argument_parser", "main"]

DEFAULT_MAX_AP_DROP = 1.0
# --format -> backend
ENGINE_FORMATS = {"onnx": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
# --format -> export.py's format
STANDALONE_FORMATS = {"torchscript": "torchscript", "onnx-standalone": "onnx"}
assert set(STANDALONE_FORMATS.values()) == set(FORMATS)


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export FocalRetinaNet (a standalone file or a deployment engine) and check it "
        "against eager mode", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config-file", metavar="FILE", help=".yaml (or .py for torchscript)")
    parser.add_argument("--verify", metavar="ENGINE",
                        help="run an engine's check against eager mode again here (config, weights and "
                        "calibration images from its engine.json; KEY VALUE overrides apply)")
    parser.add_argument("--format", choices=list(STANDALONE_FORMATS) + list(ENGINE_FORMATS), default="torchscript")
    parser.add_argument("--export-method", choices=METHODS, default="tracing",
                        help="torchscript only; the ONNX formats are traced")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="engines only")
    parser.add_argument("--calibration-dataset", metavar="NAME",
                        help="int8: registered dataset to calibrate on (default: the first of DATASETS.TRAIN)")
    parser.add_argument("--calibration-images", type=int, default=64, metavar="N",
                        help="int8: images of the calibration dataset used (its first N)")
    parser.add_argument("--evaluation-dataset", metavar="NAME",
                        help="engines: dataset of the check against eager mode (default: the first of DATASETS.TEST)")
    parser.add_argument("--evaluation-images", type=int, default=0, metavar="N",
                        help="fp16/bf16/int8: score on at most N held-out images (0: all)")
    parser.add_argument("--max-ap-drop", type=float, default=None,
                        help=f"fp16/bf16/int8: the most AP the engine may lose against eager mode (default "
                        f"{DEFAULT_MAX_AP_DROP}; with --verify, the engine's own)")
    parser.add_argument("--max-size", type=int, nargs=2, metavar=("H", "W"),
                        help="engines: largest padded input accepted (default: INPUT.MAX_SIZE_TEST squared)")
    parser.add_argument("--max-batch", type=int, default=16, help="engines: largest batch accepted")
    parser.add_argument("--output", metavar="DIR", help="folder for the exported file / engine")
    parser.add_argument("--sample-image", metavar="IMG",
                        help="standalone formats: image to trace and check (default: first of DATASETS.TEST)")
    parser.add_argument("--benchmark", type=int, default=0, metavar="N",
                        help="also print the median latency of eager vs exported over N runs")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE)")
    return parser


def sample_image(cfg, path: str) -> torch.Tensor:
    """
    ``path`` (or the first image of the config's test set), resized as DefaultPredictor does:
    a float (3, H, W) tensor in INPUT.FORMAT.
    """
    _, _, image_format = inference_resize(cfg)
    if not path:
        test_sets = cfg.DATASETS.TEST if hasattr(cfg, "DATASETS") else [cfg.dataloader.test.dataset.names]
        if not test_sets:
            raise SystemExit("export_model.py: give --sample-image (the config has no test set)")
        path = DatasetCatalog.get(test_sets[0])[0]["file_name"]
    image = read_image_checked(path, format=image_format)
    image = test_resize(cfg).get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))


def _export_standalone(args, cfg, model) -> str:
    if args.format == "onnx-standalone" and args.export_method != "tracing":
        raise SystemExit("export_model.py: ONNX export is traced; use --export-method tracing")
    image = sample_image(cfg, args.sample_image)
    path = export_model(model, image, args.output, STANDALONE_FORMATS[args.format], args.export_method)
    exported = load_exported(path)
    report = verify_exported(model, exported, [image] + resized_copies(image))
    print(f"{'input H x W':>12} | detections | agrees with eager")
    for (height, width), count, problems in report:
        print(f"{height:>5} x {width:<4} | {count:>10} | {'yes' if not problems else '; '.join(problems)}")
    if any(problems for _, _, problems in report):
        sys.exit(f"export_model.py: {path} does NOT match eager mode (see above)")
    print(f"Wrote {path}; it gives eager mode's detections on all {len(report)} images above.")
    if args.benchmark:
        eager_ms = median_latency_ms(lambda: run_eager(model, image), args.benchmark)
        exported_ms = median_latency_ms(lambda: run_exported(exported, image), args.benchmark)
        height, width = image.shape[1:]
        print(f"Median latency over {args.benchmark} runs at {height} x {width}, "
              f"{torch.get_num_threads()} threads: eager {eager_ms:.1f} ms, {args.format} {exported_ms:.1f} ms")
    return path


def _first(names: Sequence[str], flag: str, key: str) -> str:
    if not names:
        raise SystemExit(f"export_model.py: give {flag} (the config's {key} is empty)")
    return names[0]


def _check_fp32(model, engine_model, cfg, dataset: str) -> Dict:
    inputs = mapped_test_images(cfg, dataset, 0, 4)
    report = compare_with_eager(model, engine_model, inputs)
    print(f"{'image':>40} | detections | same as eager (as sets)")
    for what, count, problems in report:
        print(f"{what:>40} | {count:>10} | {'yes' if not problems else '; '.join(problems)}")
    passed = not any(problems for _, _, problems in report)
    return {"kind": "same detections as eager, as sets", "dataset": dataset, "checks": len(report),
            "passed": passed, "differences": [p for _, _, ps in report for p in ps][:10]}


def _check_ap(model, engine_model, cfg, dataset: str, calibration_files: List[str], args) -> Dict:
    # Ground truth and both models' detections stay in the engine folder, for a second look.
    folder = os.path.join(args.output, "verification")
    subset = held_out_subset(dataset, calibration_files, folder, args.evaluation_images or None)
    eager_ap = evaluate_ap(model, cfg, subset, os.path.join(folder, "eager"))
    engine_ap = evaluate_ap(engine_model, cfg, subset, os.path.join(folder, "engine"))
    drop = eager_ap["AP"] - engine_ap["AP"]
    print(f"COCO box AP on {len(DatasetCatalog.get(subset))} images of {dataset} that calibration did not use: "
          f"eager {eager_ap['AP']:.2f}, {args.format} {args.precision} {engine_ap['AP']:.2f} (drop {drop:.2f}; "
          f"allowed {args.max_ap_drop})")
    return {"kind": "AP drop against eager on held-out images", "dataset": dataset,
            "images": len(DatasetCatalog.get(subset)), "eager": eager_ap, "engine": engine_ap,
            "ap_drop": drop, "max_ap_drop": args.max_ap_drop, "passed": drop <= args.max_ap_drop}


def _verify_and_record(model, engine_model, cfg, metadata: Dict, evaluation: str,
                       calibration_files: List[str], args) -> None:
    """The engine's check against eager mode, recorded in its engine.json; exits if it fails."""
    if metadata["precision"] == "fp32":
        verification = _check_fp32(model, engine_model, cfg, evaluation)
    else:
        verification = _check_ap(model, engine_model, cfg, evaluation, calibration_files, args)
    verification["backend_version"] = backend_version(metadata["backend"])
    metadata["verification"] = verification
    write_engine_metadata(args.output, metadata)
    if not verification["passed"]:
        sys.exit(f"export_model.py: the {metadata['backend']} {metadata['precision']} engine in {args.output} "
                 "FAILED its check against eager mode (see above); it is marked so in engine.json and will not load")


def verify_engine(args) -> str:
    """
    ``--verify ENGINE``: run an engine's check against eager mode again here (after a backend
    update, on another machine), with the config, weights and calibration images its
    engine.json names; ``opts`` override the config (e.g. MODEL.WEIGHTS where the weights
    moved). Records the result, with the backend version it ran on, in engine.json.
    """
    directory, metadata = read_engine_metadata(args.verify)
    source = metadata.get("source", {})
    cfg = get_cfg()
    add_retina_config(cfg)
    cfg.merge_from_other_cfg(CfgNode.load_cfg(source["config"]))
    cfg.merge_from_list(list(args.opts))
    cfg.MODEL.DEVICE = "cpu"
    register_datasets_from_config(cfg)
    weights = model_weights(cfg)
    if source.get("weights_sha256") and os.path.isfile(weights) and file_sha256(weights) != source["weights_sha256"]:
        raise SystemExit(f"export_model.py: {weights} is not the file {directory} was made from (its SHA-256 "
                         f"differs from engine.json's); give MODEL.WEIGHTS of the weights it was exported from")
    model = build_any_model(cfg).to("cpu").eval()
    DetectionCheckpointer(model).load(weights)
    previous = metadata.pop("verification", None) or {}
    try:
        engine_model = build_engine_model(cfg, directory, refuse_failed=False)  # a failure earlier is re-checked
    except EngineError as e:
        sys.exit(f"export_model.py: {e}")
    args.output = directory
    if args.max_ap_drop is None:
        args.max_ap_drop = previous.get("max_ap_drop", DEFAULT_MAX_AP_DROP)
    calibration = source.get("calibration_dataset")
    ids = set(source.get("calibration_image_ids") or [])
    files = [d["file_name"] for d in DatasetCatalog.get(calibration) if d.get("image_id") in ids] if calibration else []
    evaluation = args.evaluation_dataset or _first(cfg.DATASETS.TEST, "--evaluation-dataset", "DATASETS.TEST")
    _verify_and_record(model, engine_model, cfg, metadata, evaluation, files, args)
    print(f"{directory}: {metadata['backend']} {backend_version(metadata['backend'])} {metadata['precision']} "
          "passed its check against eager mode here.")
    return directory


def _export_engine(args, cfg, model) -> str:
    if not isinstance(cfg, CfgNode):
        raise SystemExit("export_model.py: engines are made from yaml configs")
    backend = ENGINE_FORMATS[args.format]
    if args.precision not in SUPPORTED[backend]:
        raise SystemExit(f"export_model.py: {backend} builds {list(SUPPORTED[backend])} engines, not {args.precision}")
    profile = default_profile(cfg, args.max_batch)
    if args.max_size:
        profile = InputProfile(args.max_batch, profile.min_size, args.max_size)
    evaluation = args.evaluation_dataset or _first(cfg.DATASETS.TEST, "--evaluation-dataset", "DATASETS.TEST")
    batches, calibration, used = None, None, []
    if args.precision == "int8":
        calibration = args.calibration_dataset or _first(cfg.DATASETS.TRAIN, "--calibration-dataset", "DATASETS.TRAIN")
        batches, used = calibration_batches(model, cfg, calibration, args.calibration_images)
        print(f"Calibrating on {len(batches)} images of {calibration}")
    weights = model_weights(cfg)
    source = {"config_file": os.path.abspath(args.config_file), "opts": list(args.opts),
              "weights": weights, "weights_sha256": file_sha256(weights) if os.path.isfile(weights) else None,
              "calibration_dataset": calibration,
              "calibration_image_ids": [u["image_id"] for u in used] if batches else None}
    try:
        metadata = build_engine(model, cfg, args.output, backend, args.precision, profile, batches, source)
        engine_model = build_engine_model(cfg, args.output)
    except EngineError as e:
        sys.exit(f"export_model.py: {e}")
    _verify_and_record(model, engine_model, cfg, metadata, evaluation, [u["file_name"] for u in used], args)
    print(f"Wrote the {args.format} {args.precision} engine in {args.output}; it passed its check against eager mode.")
    if args.benchmark:
        inputs = mapped_test_images(cfg, evaluation, 0, 1)
        with torch.no_grad():
            eager_ms = median_latency_ms(lambda: model(inputs), args.benchmark)
            engine_ms = median_latency_ms(lambda: engine_model(inputs), args.benchmark)
        print(f"Median latency over {args.benchmark} runs, {torch.get_num_threads()} threads: "
              f"eager {eager_ms:.1f} ms, {args.format} {args.precision} {engine_ms:.1f} ms")
    return args.output


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = argument_parser().parse_args(argv)
    setup_process()
    setup_logging()
    if args.verify:
        return verify_engine(args)
    if not (args.config_file and args.output):
        raise SystemExit("export_model.py: give --config-file and --output (or --verify ENGINE)")
    if args.max_ap_drop is None:
        args.max_ap_drop = DEFAULT_MAX_AP_DROP
    cfg = load_config(args.config_file, args.opts)
    if isinstance(cfg, CfgNode):  # yaml; export on the CPU (a TensorRT engine builds on the GPU)
        cfg.MODEL.DEVICE = "cpu"
        register_datasets_from_config(cfg)
    model = build_any_model(cfg).to("cpu").eval()
    DetectionCheckpointer(model).load(model_weights(cfg))
    if args.format in STANDALONE_FORMATS:
        return _export_standalone(args, cfg, model)
    return _export_engine(args, cfg, model)
