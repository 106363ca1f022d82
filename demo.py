#!/usr/bin/env python
"""
Run a trained FocalRetinaNet on images or a video and save the detections drawn on them.

    python demo.py --config-file configs/demo_R18_cpu.yaml --input photos/ more/*.jpg \
        --output predictions/ --opts MODEL.WEIGHTS output/demo/model_final.pth
    python demo.py --config-file configs/retina_R50.yaml --video-input clip.mp4 \
        --output clip_detections.mp4 --opts MODEL.WEIGHTS model_final.pth
    python demo.py --config-file configs/demo_R18_cpu.yaml --engine engines/demo_int8 \
        --input photos/ --output predictions/          # a deployment engine (tools/export_model.py)
"""
import argparse
import os

import cv2
import tqdm

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger

import retina_plugin  # noqa: F401  (registers FocalRetinaNet, its parts and the datasets)
from retina_plugin.data import register_datasets_from_config
from retina_plugin.data.mapper import UnreadableImageError, read_image_checked
from retina_plugin.deploy import EnginePredictor
from retina_plugin.entry_points.defaults import setup_config, setup_logging, setup_process
from retina_plugin.visualization import draw_detections, expand_image_inputs


def setup_cfg(args):
    # The detectron2 convention: the threshold applies to the model's own score filter.
    opts = list(args.opts) + ["MODEL.RETINANET.SCORE_THRESH_TEST", str(args.confidence_threshold)]
    cfg = setup_config(args.config_file, opts, training=False)
    register_datasets_from_config(cfg)
    return cfg


def get_parser():
    parser = argparse.ArgumentParser(description="FocalRetinaNet demo")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    parser.add_argument("--input", nargs="+", help="image files, glob patterns or folders")
    parser.add_argument("--video-input", help="a video file readable by OpenCV")
    parser.add_argument(
        "--output",
        help="folder for the drawn images (or a file name for a single input / the video); "
        "default: <OUTPUT_DIR>/predictions",
    )
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="minimum score of the detections drawn")
    parser.add_argument("--scale", type=float, default=1.0, help="scale of the drawn images")
    parser.add_argument("--engine", metavar="DIR",
                        help="predict with this deployment engine (tools/export_model.py) instead of MODEL.WEIGHTS")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER,
                        help="config KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth")
    return parser


def output_file(args, cfg, input_path: str, extension: str, single_input: bool) -> str:
    """
    Where the drawn version of ``input_path`` goes: ``--output`` itself when it names a file
    and there is one input, else a file in the ``--output`` folder (default
    ``<OUTPUT_DIR>/predictions``). Creates the folder.
    """
    if args.output and single_input and os.path.splitext(args.output)[1]:
        target = args.output
    else:
        folder = args.output or os.path.join(cfg.OUTPUT_DIR, "predictions")
        stem = os.path.splitext(os.path.basename(input_path))[0]
        target = os.path.join(folder, stem + extension)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    return target


def run_on_images(args, cfg, predictor, metadata):
    files = expand_image_inputs(args.input)
    written = []
    for path in tqdm.tqdm(files, desc="predict", unit="image"):
        try:
            image = read_image_checked(path, format="BGR")
        except UnreadableImageError as e:
            # One bad file must not cost the rest of the inputs.
            tqdm.tqdm.write(f"WARNING: skipped {e}")
            args.unreadable.append(path)
            continue
        instances = predictor(image)["instances"]
        target = output_file(args, cfg, path, ".png", single_input=len(files) == 1)
        if not cv2.imwrite(target, draw_detections(image, instances, metadata, args.scale)):
            raise OSError(f"Could not write {target}")
        written.append(target)
        tqdm.tqdm.write(f"{path}: {len(instances)} detections -> {target}")
    return written


def run_on_video(args, cfg, predictor, metadata):
    video = cv2.VideoCapture(args.video_input)
    if not video.isOpened():
        raise FileNotFoundError(f"--video-input: OpenCV cannot open {args.video_input!r}")
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    num_frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    target = output_file(args, cfg, args.video_input, ".mp4", single_input=True)
    writer = None
    with tqdm.tqdm(total=num_frames, desc="predict", unit="frame") as bar:
        while True:
            ok, frame = video.read()
            if not ok:
                break
            drawn = draw_detections(frame, predictor(frame)["instances"], metadata, args.scale)
            if writer is None:
                writer = cv2.VideoWriter(
                    target, cv2.VideoWriter_fourcc(*"mp4v"), fps, (drawn.shape[1], drawn.shape[0])
                )
            writer.write(drawn)
            bar.update(1)
    video.release()
    if writer is None:
        raise ValueError(f"--video-input: {args.video_input!r} has no readable frames")
    writer.release()
    return [target]


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if bool(args.input) == bool(args.video_input):
        raise SystemExit("demo.py: give either --input or --video-input")
    if not 0 <= args.confidence_threshold <= 1:
        parser.error(f"--confidence-threshold {args.confidence_threshold}: expected a score in [0, 1]")
    if not args.scale > 0:
        parser.error(f"--scale {args.scale}: expected a number > 0")
    args.unreadable = []
    setup_process()
    logger = setup_logger(name="retina_plugin.demo")
    setup_logging()
    cfg = setup_cfg(args)
    if args.engine:
        predictor = EnginePredictor(cfg, args.engine)
    else:
        if not cfg.MODEL.WEIGHTS:
            logger.warning("MODEL.WEIGHTS is empty: predicting with an untrained model")
        predictor = DefaultPredictor(cfg)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    if args.input:
        written = run_on_images(args, cfg, predictor, metadata)
    else:
        written = run_on_video(args, cfg, predictor, metadata)
    if written:
        folder = os.path.dirname(os.path.abspath(written[0]))
        print(f"Wrote {len(written)} file(s) with drawn detections to {folder}")
    if args.unreadable:
        raise SystemExit(
            f"demo.py: {len(args.unreadable)} input(s) could not be read: {', '.join(args.unreadable)}"
        )
    return written


if __name__ == "__main__":
    main()
