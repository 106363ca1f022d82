"""
The command line of ``tools/ablate.py``: train + evaluate a config under a grid of settings
and/or named variants, several seeds each, resumably; writes results.md / .json / .png.
"""
import argparse
import os
import re
import sys
import time
from typing import List, Optional, Sequence, Tuple

from ...config import load_config
from .recipes import RECIPES, recipe_verdict, scaled_schedule
from .report import results_markdown, summarize, write_results
from .runner import run_sweep, worker
from .settings import AblationError, build_settings, parse_grid, parse_variant, prepare

__all__ = ["argument_parser", "main", "seed_list"]


def seed_list(text: str) -> List[int]:
    """
    ``--seeds``: ``"3"`` -> ``[0, 1, 2]``; ``"3,4"`` -> ``[3, 4]`` (a comma makes it a list).
    """
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise argparse.ArgumentTypeError(f"a count of runs must be >= 1, got {text!r}")
            return list(range(count))
        seeds = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count (3) or a list of seeds (3,4), got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct and >= 0, got {text!r}")
    return seeds


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train + evaluate a config under a grid of settings / named variants, several "
        "seeds each; write results.md, results.json and results.png. A killed sweep resumes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python tools/ablate.py --config-file configs/demo_R18_cpu.yaml \\\n"
        "    --grid MODEL.RETINANET.FOCAL_LOSS_GAMMA=0,1,2 MODEL.RETINANET.FOCAL_LOSS_ALPHA=.25,.75 \\\n"
        "    --seeds 2 --output output/ablation SOLVER.MAX_ITER 300\n"
        "  python tools/ablate.py --config-file my_config.yaml --compare-recipes --seeds 3 --jobs 2 \\\n"
        "    --schedule-fraction 0.5 --output output/recipes",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2",
                        help="config keys and their values; the sweep takes their cartesian product")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                        help="a named setting compared with the base config (repeatable; several keys allowed)")
    parser.add_argument("--compare-recipes", action="store_true",
                        help="compare the paper default (the config), v2 (configs/*_v2.yaml), v2 with ATSS and "
                        "AdamW (v2_adamw) and detectron2's RetinaNet on the config's data, with a verdict that "
                        "accounts for seed noise (use --seeds 3)")
    parser.add_argument("--schedule-fraction", type=float, default=1.0, metavar="F",
                        help="run F of the config's schedule (iterations, steps, warm-up), e.g. 0.25 for a cheap look")
    parser.add_argument("--no-base", action="store_true",
                        help="with --variant: do not also run the unchanged base config")
    parser.add_argument("--seeds", type=seed_list, default=[0], metavar="N|S1,S2,...",
                        help="runs per setting: N runs with SEED 0..N-1, or the seeds listed (e.g. 3,4 to add two "
                             "seeds to a finished sweep; --report then with --seeds 5 tables all five)")
    parser.add_argument("--output", default="output/ablation", metavar="DIR")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per run (detectron2's launch; on CPU: gloo processes)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once (e.g. several small runs on one GPU); each gets cpu_count / jobs threads")
    parser.add_argument("--dry-run", action="store_true", help="check and list the settings, train nothing")
    parser.add_argument("--report", action="store_true",
                        help="write results.md/json/png from the runs finished so far, train nothing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="overrides of the base config, as for train_net.py")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = argument_parser().parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    try:
        if args.jobs < 1:
            raise AblationError(f"--jobs must be >= 1, got {args.jobs}")
        # nargs="+" also swallows the trailing KEY VALUE overrides: they are the tokens
        # without "=" at the end of --grid / --variant.
        grid_items, trailing = _split_trailing_opts(args.grid)
        opts = trailing
        variant_tokens = []
        for tokens in args.variant:
            head, trailing = _split_trailing_opts(tokens[1:])
            variant_tokens.append(tokens[:1] + head)
            opts += trailing
        opts += list(args.opts)
        grid = parse_grid(grid_items)
        variants = [parse_variant(tokens) for tokens in variant_tokens]
        if args.compare_recipes:
            if args.no_base:
                raise AblationError("--compare-recipes compares with the paper default (the base config): drop --no-base")
            variants = [(name, list(overrides)) for name, overrides in RECIPES.items()] + variants
        if not grid and not variants:
            raise AblationError("nothing to compare: give --grid KEY=V1,V2, --variant NAME KEY=VALUE or "
                                "--compare-recipes")
        if args.schedule_fraction != 1.0:
            try:
                opts += scaled_schedule(load_config(args.config_file, opts), args.schedule_fraction)
            except ValueError as e:
                raise AblationError(str(e)) from None
        settings = build_settings(grid, variants, include_base=not args.no_base)
        base_opts = prepare(args.config_file, opts, settings)
    except AblationError as e:
        print(f"ablate: error: {e}", file=sys.stderr)
        return 2
    seeds = args.seeds
    print(f"{len(settings)} settings x {len(seeds)} seeds = {len(settings) * len(seeds)} runs in {args.output}/runs/")
    for s in settings:
        print(f"  {s.name}: {' '.join(s.opts) or '(base config)'}")
    if args.dry_run:
        return 0
    os.makedirs(args.output, exist_ok=True)
    start = time.perf_counter()
    try:
        results = run_sweep(
            args.config_file, settings, args.output, seeds, base_opts, args.num_gpus, train=not args.report,
            jobs=args.jobs,
        )
    except AblationError as e:
        print(f"ablate: error: {e}", file=sys.stderr)
        return 2
    rows = summarize(settings, results)
    info = {
        "config_file": args.config_file,
        "command": "python tools/ablate.py " + " ".join(_quote(a) for a in argv),
        "opts": base_opts,
        "grid": [[k, v] for k, v in grid],
        "variants": [[n, [list(p) for p in o]] for n, o in variants],
        "seeds": seeds,
        "wall_seconds_this_call": time.perf_counter() - start,
    }
    if args.compare_recipes:
        info["verdict"] = recipe_verdict(rows)
    paths = write_results(rows, args.output, info)
    print(results_markdown(rows))
    if args.compare_recipes:
        print(info["verdict"] + "\n")
    print(f"Wrote {paths['md']}, {paths['json']}, {paths['png']}")
    return 0


def _split_trailing_opts(tokens: Sequence[str]) -> Tuple[List[str], List[str]]:
    """
    ``["A=1,2", "B=3", "SOLVER.MAX_ITER", "300"]`` -> ``(["A=1,2", "B=3"], ["SOLVER.MAX_ITER", "300"])``.
    """
    tokens = list(tokens)
    for i, token in enumerate(tokens):
        if "=" not in token:
            return tokens[:i], tokens[i:]
    return tokens, []


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[A-Za-z0-9_./=,:+-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


