#!/usr/bin/env python
"""
Train one config under named settings x seeds, evaluate each run, write a table and a plot:

    python tools/compare_options.py --config-file configs/demo_R18_cpu.yaml --seeds 0 1 2 \
        --setting paper --setting "atss=MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER ATSS" \
        --output /work/out/compare  [--common-opts SOLVER.MAX_ITER 200 ...]

Writes OUTPUT/runs.json (after every run, so a stopped comparison keeps what it has),
OUTPUT/results.md (mean ± std of AP, AP50, AP75, APs per setting) and OUTPUT/results.png.
The first setting is the baseline of the ΔAP column. Settings run seed-major (all settings of
seed 0, then seed 1, ...), so partial results stay comparable.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detectron2.utils.logger import setup_logger  # noqa: E402

import retina_plugin  # noqa: E402,F401
from retina_plugin.compare import (  # noqa: E402
    bar_plot,
    markdown_table,
    parse_setting,
    run_one,
    save_runs,
    summarize,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--setting", action="append", required=True,
                        help="'name' or 'name=KEY VALUE ...' (repeat; the first is the baseline)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", required=True)
    parser.add_argument("--common-opts", nargs=argparse.REMAINDER, default=[],
                        help="overrides applied to every setting (before the setting's own)")
    args = parser.parse_args(argv)
    settings = [parse_setting(s) for s in args.setting]
    os.makedirs(args.output, exist_ok=True)
    setup_logger(os.path.join(args.output, "log.txt"))
    setup_logger(os.path.join(args.output, "log.txt"), name="retina_plugin")

    runs_file = os.path.join(args.output, "runs.json")
    runs = json.load(open(runs_file)) if os.path.isfile(runs_file) else []
    done = {(r["setting"], r["seed"]) for r in runs}
    for seed in args.seeds:
        for name, opts in settings:
            if (name, seed) in done:  # rerunning the command resumes a stopped comparison
                continue
            run_dir = os.path.join(args.output, f"{name}_seed{seed}")
            metrics = run_one(args.config_file, [*args.common_opts, *opts], seed, run_dir)
            runs.append({"setting": name, "seed": seed, "opts": opts, "metrics": metrics})
            save_runs(runs, runs_file)
    summary = summarize(runs)
    table = markdown_table(summary, baseline=settings[0][0])
    with open(os.path.join(args.output, "results.md"), "w") as f:
        f.write(table)
    bar_plot(summary, os.path.join(args.output, "results.png"))
    print(table)


if __name__ == "__main__":
    main()
