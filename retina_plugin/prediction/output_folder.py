"""
The output folder of tools/predict.py before any rank writes to it: every rank sees the same
folder, a new run starts only in a folder without earlier results, and ``--resume`` checks the
inputs against the list the first run recorded (``inputs.json``).

The recorded list gives each input its key (for files: the path relative to the input root, so
that resuming from another working directory finds the same keys) and its image id. On resume,
each known input keeps its id, new inputs get new ids after the largest one, and inputs no longer
found are left out of the merged results (their chunks stay on disk). A dataset or video whose
known items changed ids, or another kind of input, is refused. Every decision is taken on rank 0
and reaches every rank in one collective call, so a refusal stops all ranks at once.
"""
import json
import logging
import os
import socket
import uuid
from typing import Dict, List, Optional, Tuple

from detectron2.utils import comm

from ..utils.files import atomic_write, atomic_write_json
from .shards import SHARDS, remove_orphan_chunks
from .sources import PredictionSource

__all__ = [
    "INPUTS_FILE",
    "PredictionFolderError",
    "check_shared_output_folder",
    "reconcile_inputs",
    "prepare_output_folder",
]

INPUTS_FILE = "inputs.json"
_TOKEN_FILE = ".rank0_token"

logger = logging.getLogger(__name__)


class PredictionFolderError(RuntimeError):
    """The output folder cannot take this run; the message says why and what to do."""


def _raise_on_every_rank(problem: str) -> None:
    """``problem`` is rank 0's ("" for none): every rank raises it, or none does."""
    problem = comm.all_gather(problem)[0] if comm.get_world_size() > 1 else problem
    if problem:
        raise PredictionFolderError(problem)


def check_shared_output_folder(output_dir: str) -> None:
    """
    Collective: every rank must see the file rank 0 writes into ``output_dir`` (on several
    machines, one shared folder). Raises on every rank, naming the ranks and hosts that don't.
    """
    if comm.get_world_size() == 1:
        return
    path = os.path.join(output_dir, _TOKEN_FILE)
    token = uuid.uuid4().hex if comm.is_main_process() else ""
    if comm.is_main_process():
        atomic_write(path, lambda f: f.write(token), mode="w")
    token = comm.all_gather(token)[0]
    try:
        with open(path) as f:
            seen = f.read() == token
    except OSError:
        seen = False
    views = comm.all_gather((comm.get_rank(), socket.gethostname(), os.path.abspath(output_dir), seen))
    blind = [f"rank {rank} on {host} ({folder})" for rank, host, folder, ok in views if not ok]
    if blind:
        raise PredictionFolderError(
            f"--output {output_dir}: " + ", ".join(blind) + " cannot see what rank 0 writes there. "
            "Every process of a run writes into one folder that all machines share (a network file "
            "system mounted at the same path on each): give such a folder as --output")


def _has_earlier_results(output_dir: str) -> bool:
    shards = os.path.join(output_dir, SHARDS)
    return os.path.isfile(os.path.join(output_dir, INPUTS_FILE)) or (
        os.path.isdir(shards) and bool(os.listdir(shards)))


def _read_inputs(output_dir: str) -> Optional[Dict]:
    path = os.path.join(output_dir, INPUTS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError as e:
            raise PredictionFolderError(f"{path}: not valid json ({e}); it is written atomically, "
                                        "so something else changed it: use another --output") from None


def reconcile_inputs(recorded: Dict, source: PredictionSource) -> Tuple[List[Dict], str]:
    """
    ``source``'s items with the ids ``recorded`` (an earlier ``inputs.json``) gave them: known
    keys keep their ids, new keys get new ids after the largest. Returns (items, a sentence on
    what changed, "" when nothing did). Raises PredictionFolderError when the inputs cannot be
    the same collection (another kind, or a dataset / video whose ids moved).
    """
    if recorded["kind"] != source.kind:
        raise PredictionFolderError(
            f"the earlier run predicted a {recorded['kind']} input, this one is a {source.kind}: "
            "give the same --input to resume, or another --output")
    known = {item["key"]: item["image_id"] for item in recorded["items"]}
    current = {item["key"] for item in source.items}
    added = [item for item in source.items if item["key"] not in known]
    removed = [key for key in known if key not in current]
    if source.kind != "images":
        moved = [item["key"] for item in source.items
                 if item["key"] in known and known[item["key"]] != item["image_id"]]
        if moved:
            raise PredictionFolderError(
                f"{len(moved)} inputs have other ids than in the earlier run (e.g. {moved[0]}): "
                "the dataset or video changed; predict it into another --output")
        items = list(source.items)
    else:
        next_id = max(known.values(), default=0) + 1
        new_ids = {item["key"]: next_id + i for i, item in enumerate(added)}
        items = [dict(item, image_id=known.get(item["key"], new_ids.get(item["key"]))) for item in source.items]
    change = ""
    if added or removed:
        change = f"the inputs changed since the earlier run: {len(added)} added"
        change += " (given new ids)" if added and source.kind == "images" else ""
        change += (f", {len(removed)} no longer found (e.g. {removed[0]}; their results stay in {SHARDS}/ "
                   "and are left out of the merged files)" if removed else ", none removed")
    return items, change


def _record(output_dir: str, source: PredictionSource, items: List[Dict]) -> None:
    record = {"kind": source.kind, "root": source.root,
              "items": [{k: item[k] for k in ("key", "image_id", "file_name", "frame") if k in item}
                        for item in items]}
    atomic_write_json(os.path.join(output_dir, INPUTS_FILE), record)


def _prepare_on_rank0(output_dir: str, source: PredictionSource, resume: bool) -> str:
    """Rank 0's part: refuse, or repair and record. Returns the problem ("" for none)."""
    try:
        if not resume:
            if _has_earlier_results(output_dir):
                return (f"{output_dir} holds results of an earlier run ({INPUTS_FILE} or {SHARDS}/): "
                        "give --resume to finish it, or another --output")
            _record(output_dir, source, source.items)
            return ""
        recorded = _read_inputs(output_dir)
        if recorded is None:
            if _has_earlier_results(output_dir):
                return (f"{output_dir} holds chunks but no {INPUTS_FILE} (a run of an older version, or "
                        "it was deleted): the inputs cannot be checked; predict into another --output")
            _record(output_dir, source, source.items)
            return ""
        items, change = reconcile_inputs(recorded, source)
        if change:
            logger.warning(f"Resuming {output_dir}: {change}")
        removed = remove_orphan_chunks(output_dir)
        if removed:
            logger.info(f"Resuming: removed {len(removed)} chunk(s) written after the last manifest update")
        _record(output_dir, source, items)
        return ""
    except PredictionFolderError as e:
        return str(e)


def prepare_output_folder(output_dir: str, source: PredictionSource, resume: bool) -> List[Dict]:
    """
    Collective, before any rank writes: checks the folder is shared, refuses or repairs it on
    rank 0, and returns the items of this run on every rank: the recorded input list, so that
    all ranks share one list and its ids.
    """
    check_shared_output_folder(output_dir)
    problem = _prepare_on_rank0(output_dir, source, resume) if comm.is_main_process() else ""
    _raise_on_every_rank(problem)
    return _read_inputs(output_dir)["items"]
