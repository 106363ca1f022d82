"""
Settings of an ablation sweep: parsing ``--grid KEY=v1,v2`` and ``--variant NAME KEY=VALUE``,
their cartesian product, and the check of every setting's config before anything trains.

Values are strings decoded exactly like ``cfg.merge_from_list`` (Python/yaml literals, so lists
work: ``MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS=[[1.0]],[[0.5,1.0,2.0]]``); an integer given for a
float key is taken as that float.
"""
import hashlib
import itertools
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from ...config import ConfigError, load_config, merge_overrides
from ...config_checks import config_errors

__all__ = [
    "AblationError",
    "Setting",
    "parse_grid",
    "parse_variant",
    "build_settings",
    "prepare",
    "short_key",
]


class AblationError(ConfigError):
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



def _split_top_level(text: str, where: str) -> List[str]:
    """
    Split at commas outside brackets / parentheses / quotes: "1,[2,3],'a,b'" -> 3 items.
    """
    items, quote, current = [], None, []
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


def short_key(key: str) -> str:
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
            parts += [f"{short_key(k)}={v}" for k, v in labels.items()]
            settings.append(
                Setting(
                    name=" ".join(parts) if parts else "base",
                    overrides=list(variant_overrides) + list(labels.items()),
                    labels=dict(labels),
                    variant=variant,
                )
            )
    return settings


def prepare(config_file: str, opts: Sequence[str], settings: Sequence[Setting]) -> List[str]:
    """
    Merge every setting into the config and check it with the project's config checks
    (values, registry names, contradicting keys), before anything trains: a bad setting stops
    the sweep at once, naming it. Returns the base opts as merged.
    """
    try:
        base_opts = merge_overrides(load_config(config_file), opts, "command line")
        for setting in settings:
            where = f"setting '{setting.name}'"
            cfg = load_config(config_file, base_opts)
            merged = merge_overrides(cfg, setting.opts, where)
            setting.overrides = list(zip(merged[0::2], merged[1::2]))
            errors = config_errors(cfg)
            if not cfg.DATASETS.TEST:
                errors.append("DATASETS.TEST is empty; the sweep evaluates on it")
            if errors:
                raise AblationError(f"{where}: " + "; ".join(errors))
    except AblationError:
        raise
    except ConfigError as e:
        raise AblationError(str(e)) from None
    return base_opts
