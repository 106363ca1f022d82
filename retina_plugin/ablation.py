"""
Ablation harness (the paper's Table 1 as a tool): train and evaluate one config under many
settings of its keys, several seeds each, and tabulate / plot COCO AP.

A *setting* is a set of config overrides: a point of the cartesian product of ``--grid``
(``KEY=v1,v2,...``), optionally combined with a named ``--variant`` (``NAME KEY=VALUE ...``,
compared with the unchanged base config). Each (setting, seed) is one run: ``train + COCOEvaluator
on cfg.DATASETS.TEST`` with the project's :class:`~retina_plugin.trainer.Trainer`, in a
subprocess (``python -m retina_plugin.ablation``), in its own folder
``OUTPUT/runs/<setting>/seed<k>/``, which ends with a ``result.json``. A run whose
``result.json`` exists is skipped, so a killed sweep resumes where it stopped.

Values are strings decoded exactly like ``cfg.merge_from_list`` (Python/yaml literals, so lists
work: ``MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS=[[1.0]],[[0.5,1.0,2.0]]``); an integer given for a
float key is taken as that float. Every setting is merged into the config before anything
trains, so a bad key, value or grid syntax stops the sweep at once with an error naming it.
"""
import argparse
import ast
import hashlib
import itertools
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.config import CfgNode, get_cfg

from .config import add_retina_config

__all__ = [
    "AblationError",
    "Setting",
    "parse_grid",
    "parse_variant",
    "build_settings",
    "load_config",
    "run_sweep",
    "summarize",
    "write_results",
    "main",
]

logger = logging.getLogger(__name__)

# COCOEvaluator's box metrics kept per run; the first four are tabulated.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
TABLE_METRICS = ("AP", "AP50", "AP75", "APs")
RESULT_FILE = "result.json"


class AblationError(ValueError):
    """
    A sweep that cannot start: bad grid / variant syntax, unknown key, bad value.
    """


@dataclass
class Setting:
    """
    One point of the sweep: a name and the config overrides ``[(KEY, VALUE-string), ...]``.
    ``labels`` maps each grid key to its value (for tables and plots); ``variant`` is the
    variant's name ("base" for the unchanged config).
    """

    name: str
    overrides: List[Tuple[str, str]]
    labels: Dict[str, str] = field(default_factory=dict)
    variant: str = "base"

    @property
    def opts(self) -> List[str]:
        return [x for pair in self.overrides for x in pair]

    @property
    def folder(self) -> str:
        # Readable, and a hash so that two settings never share a folder.
        digest = hashlib.sha1(json.dumps(self.overrides).encode()).hexdigest()[:8]
        readable = re.sub(r"[^A-Za-z0-9_.=-]+", "", self.name.replace(" ", "_"))[:80]
        return f"{readable}-{digest}"


# --------------------------------------------------------------------------- parsing
def _split_top_level(text: str, where: str) -> List[str]:
    """
    Split at commas outside brackets / parentheses / quotes: "1,[2,3],'a,b'" -> 3 items.
    """
    items, depth, quote, current = [], 0, None, []
    pairs = {"[": "]", "(": ")", "{": "}"}
    stack = []
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in pairs:
            stack.append(pairs[ch])
        elif ch in ")]}":
            if not stack or stack.pop() != ch:
                raise AblationError(f"{where}: unbalanced {ch!r} in {text!r}")
        elif ch == "," and not stack:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if stack or quote:
        raise AblationError(f"{where}: unclosed bracket or quote in {text!r}")
    items.append("".join(current).strip())
    return items


def _split_assignment(item: str, where: str) -> Tuple[str, str]:
    key, sep, value = item.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value:
        raise AblationError(f"{where}: expected KEY=VALUE, got {item!r}")
    if not re.fullmatch(r"[A-Z0-9_]+(\.[A-Z0-9_]+)*", key):
        raise AblationError(f"{where}: {key!r} does not look like a config key (e.g. MODEL.RETINANET.FOCAL_LOSS_GAMMA)")
    return key, value


def parse_grid(items: Sequence[str]) -> List[Tuple[str, List[str]]]:
    """
    ``["KEY=v1,v2", "KEY2=a,b,c"]`` -> ``[("KEY", ["v1", "v2"]), ("KEY2", ["a", "b", "c"])]``.
    Commas inside brackets, parentheses or quotes do not split values.
    """
    grid, seen = [], set()
    for item in items:
        key, values_text = _split_assignment(item, "--grid")
        if key in seen:
            raise AblationError(f"--grid: {key} is given twice")
        seen.add(key)
        values = _split_values(values_text, key)
        grid.append((key, values))
    return grid


def _split_values(values_text: str, key: str) -> List[str]:
    values = _split_top_level(values_text, f"--grid {key}")
    if any(v == "" for v in values):
        raise AblationError(f"--grid {key}: empty value in {values_text!r}")
    if len(set(values)) != len(values):
        raise AblationError(f"--grid {key}: repeated value in {values_text!r}")
    return values


def parse_variant(tokens: Sequence[str]) -> Tuple[str, List[Tuple[str, str]]]:
    """
    ``["ohem", "KEY=VALUE", ...]`` -> ``("ohem", [("KEY", "VALUE"), ...])``. A value is one
    value (commas included).
    """
    if len(tokens) < 2:
        raise AblationError(f"--variant {' '.join(tokens)}: expected NAME KEY=VALUE [KEY=VALUE ...]")
    name = tokens[0]
    if "=" in name or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise AblationError(f"--variant: {name!r} is not a name (letters, digits, _ . + -), give it first")
    overrides = [_split_assignment(t, f"--variant {name}") for t in tokens[1:]]
    keys = [k for k, _ in overrides]
    if len(set(keys)) != len(keys):
        raise AblationError(f"--variant {name}: a key is given twice in {keys}")
    return name, overrides


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def build_settings(
    grid: Sequence[Tuple[str, List[str]]],
    variants: Sequence[Tuple[str, List[Tuple[str, str]]]] = (),
    include_base: bool = True,
) -> List[Setting]:
    """
    Every variant (and the base config, when variants are given and ``include_base``) crossed
    with every point of the grid, in order.
    """
    names = [n for n, _ in variants]
    if len(set(names)) != len(names):
        raise AblationError(f"--variant: a name is used twice in {names}")
    if "base" in names:
        raise AblationError("--variant: 'base' is the name of the unchanged config; pick another")
    chosen = ([("base", [])] if include_base or not variants else []) + list(variants)
    grid_keys = [k for k, _ in grid]
    settings = []
    for variant, variant_overrides in chosen:
        clash = [k for k, _ in variant_overrides if k in grid_keys]
        if clash:
            raise AblationError(f"--variant {variant}: {clash} also on the --grid")
        for point in itertools.product(*[values for _, values in grid]):
            labels = OrderedDict(zip(grid_keys, point))
            parts = [] if (variant == "base" and not variants and grid) else [variant]
            parts += [f"{_short(k)}={v}" for k, v in labels.items()]
            settings.append(
                Setting(
                    name=" ".join(parts) if parts else "base",
                    overrides=list(variant_overrides) + list(labels.items()),
                    labels=dict(labels),
                    variant=variant,
                )
            )
    return settings


# --------------------------------------------------------------------------- configs
def load_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """
    ``get_cfg()`` + our keys + ``config_file`` + ``opts`` (``merge_from_list`` strings), with
    errors that name the file / key / value.
    """
    if not os.path.isfile(config_file):
        raise AblationError(f"--config-file {config_file}: no such file")
    cfg = get_cfg()
    add_retina_config(cfg)
    cfg.merge_from_file(config_file)
    merge_opts(cfg, opts, "command line")
    return cfg


def _coerce(cfg: CfgNode, key: str, value: str) -> str:
    """
    An int given for a float key (GAMMA=0) becomes that float ("0.0"), as a user means it;
    yacs would reject the type.
    """
    node = cfg
    for part in key.split(".")[:-1]:
        node = node.get(part) if isinstance(node, CfgNode) else None
        if node is None:
            return value
    original = node.get(key.split(".")[-1]) if isinstance(node, CfgNode) else None
    if isinstance(original, float):
        try:
            decoded = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        if isinstance(decoded, int) and not isinstance(decoded, bool):
            return repr(float(decoded))
    return value


def merge_opts(cfg: CfgNode, opts: Sequence[str], where: str) -> List[str]:
    """
    ``cfg.merge_from_list(opts)`` pair by pair; returns the opts as merged (ints for float keys
    coerced). Raises AblationError naming ``where``, the key and the value.
    """
    if len(opts) % 2:
        raise AblationError(f"{where}: overrides must be KEY VALUE pairs, got {list(opts)}")
    merged = []
    for key, value in zip(opts[0::2], opts[1::2]):
        value = _coerce(cfg, key, str(value))
        try:
            cfg.merge_from_list([key, value])
        except (AssertionError, KeyError) as e:
            raise AblationError(f"{where}: unknown config key {key!r} ({e})") from None
        except (ValueError, TypeError, SyntaxError) as e:
            raise AblationError(f"{where}: bad value {value!r} for {key}: {e}") from None
        merged += [key, value]
    return merged


def check_setting(cfg: CfgNode, where: str) -> None:
    """
    What can be checked without training: registry names the model is built from.
    """
    from .modeling.head import FOCAL_RETINANET_HEAD_REGISTRY
    from .modeling.losses import BOX_LOSS_REGISTRY, BOX_LOSS_TYPE_ALIASES, CLASSIFICATION_LOSS_REGISTRY
    from detectron2.modeling import META_ARCH_REGISTRY

    checks = [
        (META_ARCH_REGISTRY, cfg.MODEL.META_ARCHITECTURE, "MODEL.META_ARCHITECTURE"),
    ]
    if "FOCAL_RETINANET" in cfg.MODEL:
        box = cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE
        checks += [
            (FOCAL_RETINANET_HEAD_REGISTRY, cfg.MODEL.FOCAL_RETINANET.HEAD_NAME, "MODEL.FOCAL_RETINANET.HEAD_NAME"),
            (CLASSIFICATION_LOSS_REGISTRY, cfg.MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS,
             "MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS"),
            (BOX_LOSS_REGISTRY, BOX_LOSS_TYPE_ALIASES.get(box, box), "MODEL.RETINANET.BBOX_REG_LOSS_TYPE"),
        ]
    for registry, name, key in checks:
        if name not in registry:
            known = sorted(n for n, _ in registry)
            raise AblationError(f"{where}: {key}={name!r} is not one of the registered names {known}")
    if not cfg.DATASETS.TEST:
        raise AblationError(f"{where}: DATASETS.TEST is empty; the sweep evaluates on it")


def prepare(config_file: str, opts: Sequence[str], settings: Sequence[Setting]) -> List[str]:
    """
    Merge every setting into the config and check it, before anything trains. Returns the
    base opts as merged.
    """
    base_opts = merge_opts(load_config(config_file), opts, "command line")
    for setting in settings:
        cfg = load_config(config_file, base_opts)
        setting.overrides = [
            (k, v) for k, v in zip(*[iter(merge_opts(cfg, setting.opts, f"setting '{setting.name}'"))] * 2)
        ]
        check_setting(cfg, f"setting '{setting.name}'")
    return base_opts


# --------------------------------------------------------------------------- running
def run_one(
    config_file: str,
    opts: Sequence[str],
    output_dir: str,
    seed: int,
    num_gpus: int = 1,
    log_file: Optional[str] = None,
    threads: Optional[int] = None,
) -> Dict:
    """
    Train + evaluate one (setting, seed) in a subprocess; returns its result.json content.
    A subprocess keeps runs independent (memory, registries, global seeds) and lets a sweep
    survive a run that crashes. ``threads`` caps its CPU threads (OMP_NUM_THREADS).
    """
    os.makedirs(output_dir, exist_ok=True)
    command = [
        sys.executable, "-m", "retina_plugin.ablation", "--worker",
        "--config-file", config_file, "--num-gpus", str(num_gpus),
        *opts, "SEED", str(seed), "OUTPUT_DIR", output_dir,
    ]
    log_file = log_file or os.path.join(output_dir, "stdout.log")
    # The subprocess imports this very package, also where it is not pip-installed.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    result_path = os.path.join(output_dir, RESULT_FILE)
    if proc.returncode != 0 or not os.path.isfile(result_path):
        with open(log_file) as f:
            tail = "".join(f.readlines()[-25:])
        raise RuntimeError(
            f"run in {output_dir} failed (exit code {proc.returncode}); log {log_file}:\n{tail}"
        )
    with open(result_path) as f:
        result = json.load(f)
    result.setdefault("seconds", time.perf_counter() - start)
    return result


def _train_and_evaluate(args) -> None:
    """
    One run, in each process that ``launch`` starts: train with the project's Trainer (its
    final evaluation is COCOEvaluator on DATASETS.TEST), write result.json. A run whose loss
    becomes NaN/inf (e.g. no prior init) is a result too: "diverged".
    """
    from detectron2.engine import default_setup
    from detectron2.utils import comm

    from .data import check_num_classes, register_datasets_from_config
    from .trainer import Trainer

    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, argparse.Namespace(config_file=args.config_file, eval_only=False, opts=args.opts))
    register_datasets_from_config(cfg)
    check_num_classes(cfg)
    # The opts without SEED / OUTPUT_DIR: what identifies the setting when resuming.
    result = {"status": "finished", "seed": cfg.SEED, "opts": list(args.opts[:-4])}
    start = time.perf_counter()
    try:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=True)
        trainer.train()
        # DefaultTrainer's EvalHook evaluates after the last iteration and keeps the results.
        evaluation = getattr(trainer, "_last_eval_results", None) or Trainer.test(cfg, trainer.model)
        evaluation = evaluation or {}
        # DefaultTrainer.test drops the dataset level when there is one test dataset.
        bbox = evaluation.get("bbox") or evaluation.get(cfg.DATASETS.TEST[0], {}).get("bbox", {})
        result["metrics"] = {m: float(bbox.get(m, float("nan"))) for m in METRICS}
        result["iterations"] = cfg.SOLVER.MAX_ITER
    except FloatingPointError as e:
        # detectron2's trainer stops on a non-finite loss; record where.
        match = re.search(r"iteration=(\d+)", str(e))
        result["status"] = "diverged"
        result["diverged_at"] = int(match.group(1)) if match else None
        result["metrics"] = {m: float("nan") for m in METRICS}
    result["seconds"] = time.perf_counter() - start
    if comm.is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, RESULT_FILE), "w") as f:
            json.dump(result, f, indent=1)


def _worker(args) -> None:
    from detectron2.engine import launch

    launch(_train_and_evaluate, args.num_gpus, args=(args,))


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def run_sweep(
    config_file: str,
    settings: Sequence[Setting],
    output_dir: str,
    seeds: Sequence[int] = (0,),
    opts: Sequence[str] = (),
    num_gpus: int = 1,
    stream=None,
    train: bool = True,
    jobs: int = 1,
) -> Dict[str, List[Dict]]:
    """
    Every (setting, seed), skipping runs that already have a result.json; a progress line with
    an ETA after each. ``jobs`` runs go at once (a GPU or a many-core machine has room for
    several small runs); each then gets ``cpu_count // jobs`` threads. A failed run lets the
    runs in flight finish, starts no other, then raises. With ``train=False`` only the
    finished runs are collected. Returns {setting name: [result per seed]}.
    """
    stream = stream or sys.stdout
    jobs_list = [(s, seed) for s in settings for seed in seeds]
    found: Dict[Tuple[str, int], Dict] = {}
    pending = []
    for number, (setting, seed) in enumerate(jobs_list, 1):
        run_dir = os.path.join(output_dir, "runs", setting.folder, f"seed{seed}")
        run_opts = list(opts) + setting.opts
        result_path = os.path.join(run_dir, RESULT_FILE)
        if os.path.isfile(result_path):
            with open(result_path) as f:
                result = json.load(f)
            if result.get("opts") != run_opts:
                raise AblationError(
                    f"{result_path} was made with other overrides ({result.get('opts')}) than "
                    f"setting '{setting.name}' now ({run_opts}); use another --output"
                )
            found[(setting.name, seed)] = result
            print(f"[{number}/{len(jobs_list)}] {setting.name} seed {seed}: done before, skipped", file=stream, flush=True)
        elif not train:
            print(f"[{number}/{len(jobs_list)}] {setting.name} seed {seed}: not run yet", file=stream, flush=True)
        else:
            pending.append((setting, seed, run_opts, run_dir))

    durations: List[float] = []
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def report(setting: Setting, seed: int, result: Dict) -> None:
        found[(setting.name, seed)] = result
        durations.append(result["seconds"])
        remaining = len(jobs_list) - len(found)
        eta = math.ceil(remaining / jobs) * sum(durations) / len(durations)
        outcome = (
            f"AP {result['metrics']['AP']:.1f}" if result["status"] == "finished"
            else f"diverged at iteration {result.get('diverged_at')}"
        )
        print(
            f"[{len(found)}/{len(jobs_list)}] {setting.name} seed {seed}: {outcome} in "
            f"{_format_duration(result['seconds'])}; ETA {_format_duration(eta)}",
            file=stream, flush=True,
        )

    if jobs <= 1:
        for setting, seed, run_opts, run_dir in pending:
            report(setting, seed, run_one(config_file, run_opts, run_dir, seed, num_gpus=num_gpus))
    elif pending:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(run_one, config_file, run_opts, run_dir, seed, num_gpus=num_gpus, threads=threads):
                (setting, seed)
                for setting, seed, run_opts, run_dir in pending
            }
            try:
                for future in as_completed(futures):
                    report(*futures[future], future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    results: Dict[str, List[Dict]] = OrderedDict((s.name, []) for s in settings)
    for setting, seed in jobs_list:
        if (setting.name, seed) in found:
            results[setting.name].append(found[(setting.name, seed)])
    return results


# --------------------------------------------------------------------------- results
def _mean_std(values: List[float]) -> Tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    # Sample standard deviation over seeds.
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(settings: Sequence[Setting], results: Dict[str, List[Dict]]) -> List[Dict]:
    """
    Per setting: overrides, labels, per-seed metrics, mean and std of each metric over the
    seeds that finished, number of diverged runs, total seconds.
    """
    rows = []
    for setting in settings:
        runs = results.get(setting.name, [])
        finished = [r for r in runs if r["status"] == "finished"]
        stats = {m: _mean_std([r["metrics"][m] for r in finished]) for m in METRICS}
        rows.append(
            {
                "name": setting.name,
                "variant": setting.variant,
                "labels": setting.labels,
                "overrides": [list(p) for p in setting.overrides],
                "runs": runs,
                "num_runs": len(runs),
                "num_diverged": len(runs) - len(finished),
                "mean": {m: s[0] for m, s in stats.items()},
                "std": {m: s[1] for m, s in stats.items()},
                "seconds": sum(r.get("seconds", 0.0) for r in runs),
            }
        )
    return rows


def _no_value(row: Dict, not_run: str) -> str:
    """What stands in for a setting's missing AP: why there is none."""
    if row["num_runs"] > row["num_diverged"]:
        # Finished, but COCOEvaluator had no detection to score.
        return "no detections"
    return "diverged" if row["num_diverged"] else not_run


def _cell(row: Dict, metric: str) -> str:
    mean, std = row["mean"][metric], row["std"][metric]
    if math.isnan(mean):
        return _no_value(row, "–")
    if row["num_runs"] - row["num_diverged"] > 1:
        return f"{mean:.1f} ± {std:.1f}"
    return f"{mean:.1f}"


def results_markdown(rows: List[Dict], header: str = "") -> str:
    grid_keys = list(rows[0]["labels"]) if rows else []
    with_variants = any(r["variant"] != "base" for r in rows)
    columns = (["variant"] if with_variants else []) + [_short(k) for k in grid_keys]
    if not columns:
        columns = ["setting"]
    columns += list(TABLE_METRICS) + ["runs", "time"]
    lines = [header] if header else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    best = max((r for r in rows if not math.isnan(r["mean"]["AP"])), key=lambda r: r["mean"]["AP"], default=None)
    for row in rows:
        cells = ([row["variant"]] if with_variants else []) + [row["labels"][k] for k in grid_keys]
        if not (with_variants or grid_keys):
            cells = [row["name"]]
        metrics = [_cell(row, m) for m in TABLE_METRICS]
        if row is best:
            metrics[0] = f"**{metrics[0]}**"
        runs = f"{row['num_runs']}" + (f" ({row['num_diverged']} diverged)" if row["num_diverged"] else "")
        cells += metrics + [runs, _format_duration(row["seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    if any(r["variant"] != "base" for r in rows):
        lines.append("")
        for row in rows:
            if row["variant"] != "base" and not row["labels"]:
                lines.append(f"- `{row['variant']}`: " + " ".join(f"`{k}={v}`" for k, v in row["overrides"]))
    lines.append("")
    lines.append("COCO box AP on DATASETS.TEST; mean ± sample std over seeds (finished runs only); **best AP** in bold.")
    return "\n".join(lines) + "\n"


def _is_number(text: str) -> bool:
    try:
        float(ast.literal_eval(text))
        return True
    except (ValueError, SyntaxError, TypeError):
        return False


def plot_results(rows: List[Dict], path: str, title: str = "") -> None:
    """
    AP against the first grid key, one line per value of the other keys (error bars: std over
    seeds); a bar chart when there is no numeric grid key (variants, or non-numeric values).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid_keys = list(rows[0]["labels"]) if rows else []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    numeric = grid_keys and all(_is_number(r["labels"][grid_keys[0]]) for r in rows)
    if numeric:
        first = grid_keys[0]
        lines = OrderedDict()
        for row in rows:
            rest = [row["variant"]] if row["variant"] != "base" else []
            rest += [f"{_short(k)}={row['labels'][k]}" for k in grid_keys[1:]]
            lines.setdefault(" ".join(rest), []).append(row)
        for label, line_rows in lines.items():
            xs = [float(ast.literal_eval(r["labels"][first])) for r in line_rows]
            ys = [r["mean"]["AP"] for r in line_rows]
            errs = [r["std"]["AP"] for r in line_rows]
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label or None)
            for x, y, r in zip(xs, ys, line_rows):
                if r["num_diverged"] and math.isnan(y):
                    ax.annotate("diverged", (x, 0), ha="center")
        ax.set_xlabel(first)
        if any(lines):
            ax.legend(fontsize=8)
    else:
        names = [r["name"] for r in rows]
        means = [0.0 if math.isnan(r["mean"]["AP"]) else r["mean"]["AP"] for r in rows]
        errs = [0.0 if math.isnan(r["std"]["AP"]) else r["std"]["AP"] for r in rows]
        bars = ax.bar(range(len(rows)), means, yerr=errs, capsize=3, color="tab:blue")
        for bar, r in zip(bars, rows):
            text = f"{r['mean']['AP']:.1f}" if not math.isnan(r["mean"]["AP"]) else _no_value(r, "not run")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("COCO box AP")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(rows: List[Dict], output_dir: str, info: Dict) -> Dict[str, str]:
    """
    results.json (everything), results.md (the table) and results.png (the plot) in
    ``output_dir``; returns their paths.
    """
    paths = {
        "json": os.path.join(output_dir, "results.json"),
        "md": os.path.join(output_dir, "results.md"),
        "png": os.path.join(output_dir, "results.png"),
    }
    with open(paths["json"], "w") as f:
        json.dump({**info, "settings": rows}, f, indent=1)
    header = f"# Ablation of `{info['config_file']}`\n\n```\n{info['command']}\n```\n"
    with open(paths["md"], "w") as f:
        f.write(results_markdown(rows, header))
    plot_results(rows, paths["png"], title=os.path.basename(info["config_file"]))
    return paths


# --------------------------------------------------------------------------- command line
def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train + evaluate a config under a grid of settings / named variants, several "
        "seeds each; write results.md, results.json and results.png. A killed sweep resumes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python tools/ablate.py --config-file configs/demo_R18_cpu.yaml \\\n"
        "    --grid MODEL.RETINANET.FOCAL_LOSS_GAMMA=0,1,2 MODEL.RETINANET.FOCAL_LOSS_ALPHA=.25,.75 \\\n"
        "    --seeds 2 --output output/ablation SOLVER.MAX_ITER 300",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2",
                        help="config keys and their values; the sweep takes their cartesian product")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                        help="a named setting compared with the base config (repeatable; several keys allowed)")
    parser.add_argument("--no-base", action="store_true",
                        help="with --variant: do not also run the unchanged base config")
    parser.add_argument("--seeds", type=int, default=1, help="runs per setting, with SEED 0..N-1")
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
        _worker(args)
        return 0
    try:
        if args.seeds < 1:
            raise AblationError(f"--seeds must be >= 1, got {args.seeds}")
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
        if not grid and not variants:
            raise AblationError("nothing to compare: give --grid KEY=V1,V2 and/or --variant NAME KEY=VALUE")
        settings = build_settings(grid, variants, include_base=not args.no_base)
        base_opts = prepare(args.config_file, opts, settings)
    except AblationError as e:
        print(f"ablate: error: {e}", file=sys.stderr)
        return 2
    seeds = list(range(args.seeds))
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
    paths = write_results(rows, args.output, info)
    print(results_markdown(rows))
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


if __name__ == "__main__":
    sys.exit(main())
