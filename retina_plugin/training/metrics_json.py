"""
detectron2's ``metrics.json`` (one JSON dict per line, with an "iteration") after restarts.

A run killed after its last checkpoint and resumed repeats the iterations in between: the
file then holds them twice. :func:`drop_records_from` removes them when training resumes;
:func:`latest_records` reads old files that already have them.
"""
import json
import os
from typing import Dict, List

__all__ = ["drop_records_from", "latest_records"]


def drop_records_from(path: str, start_iter: int) -> int:
    """
    Remove the lines of ``path`` whose iteration is >= ``start_iter`` (in place, so that a
    writer that already opened the file for appending keeps writing to it). Lines that are not
    JSON dicts with an iteration are kept, except a cut-off last line (a kill mid-write).
    Returns the number of lines removed.
    """
    if not os.path.isfile(path):
        return 0
    with open(path, "r+") as f:
        lines = f.readlines()
        if lines and not lines[-1].endswith("\n"):
            lines_to_check = lines[:-1]
        else:
            lines_to_check = lines
        kept = [
            line for line in lines_to_check
            if _iteration(line) is None or _iteration(line) < start_iter
        ]
        if len(kept) == len(lines):
            return 0
        f.seek(0)
        f.writelines(kept)
        f.truncate()
    return len(lines) - len(kept)


def _iteration(line: str):
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record.get("iteration") if isinstance(record, dict) else None


def latest_records(records: List[Dict]) -> List[Dict]:
    """
    Records in file order, where a record whose iteration is lower than one before it (a
    restart) supersedes every earlier record at that iteration or later.
    """
    kept: List[Dict] = []
    highest = None
    for record in records:
        it = record["iteration"]
        if highest is not None and it < highest:
            kept = [r for r in kept if r["iteration"] < it]
            highest = it
        kept.append(record)
        highest = it if highest is None else max(highest, it)
    return kept
