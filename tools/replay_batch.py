#!/usr/bin/env python
"""
Replay the batch a training run saved when its loss or gradient turned NaN/inf
(OUTPUT_DIR/nonfinite_batch_iter*.pth): rebuild the model from the saved config and state,
run forward and backward on the saved batch, print the losses, the gradient norm and what
looks wrong.

    python tools/replay_batch.py output/demo/nonfinite_batch_iter0000123_rank0.pth
    python tools/replay_batch.py FILE --config-file my.yaml MODEL.RETINANET.FOCAL_LOSS_GAMMA 1.5
"""
import argparse
import math
import sys

from retina_plugin.config import load_config
from retina_plugin.training.nonfinite_diagnosis import replay, saved_config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("replay_file", help="nonfinite_batch_*.pth written by the trainer")
    parser.add_argument("--config-file", help="use this config instead of the saved one")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE overrides")
    args = parser.parse_args(argv)
    cfg = None
    if args.config_file:
        cfg = load_config(args.config_file, args.opts)
    elif args.opts:
        cfg = saved_config(args.replay_file, opts=args.opts)
    loss_dict, grad_norm, findings = replay(args.replay_file, cfg)
    print("losses:", ", ".join(f"{k} = {v:.6g}" for k, v in loss_dict.items()))
    print(f"total gradient norm: {grad_norm:.6g}")
    print("what looks wrong:")
    for line in findings or ["nothing obvious in the boxes, predictions or parameters"]:
        print(f"  - {line}")
    finite = all(math.isfinite(v) for v in loss_dict.values()) and math.isfinite(grad_norm)
    print("the step is finite now" if finite else "the step is still non-finite")
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())
