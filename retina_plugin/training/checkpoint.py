"""
Checkpoints that survive a kill at any moment: each file is written to a temporary name beside
its target, flushed to disk and renamed over it (``os.replace`` is atomic on POSIX), and
``last_checkpoint`` is tagged the same way only after the checkpoint itself is complete.
A kill mid-save therefore leaves the previous ``model_*.pth`` and ``last_checkpoint`` as they
were; the stray ``*.incomplete`` file it leaves is removed by the next run.
"""
import contextlib
import glob
import logging
import os
from typing import Any, Dict

import torch

from detectron2.checkpoint import DetectionCheckpointer

from ..utils.files import INCOMPLETE_SUFFIX, atomic_write

__all__ = ["AtomicDetectionCheckpointer"]

logger = logging.getLogger(__name__)


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """
    DetectionCheckpointer whose ``save`` and ``tag_last_checkpoint`` are atomic (see module
    docstring) for local folders, and whose load errors name the file and what to do.
    Remote save dirs (``s3://`` etc.) are written as detectron2 does.
    """

    def __init__(self, model, save_dir: str = "", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        if self.save_dir and self.save_to_disk and self._is_local(self.save_dir):
            self.remove_incomplete_files()

    @staticmethod
    def _is_local(path: str) -> bool:
        return "://" not in path

    def remove_incomplete_files(self) -> None:
        """
        Delete ``*.incomplete`` files a killed save left in ``save_dir``.
        """
        for stale in glob.glob(os.path.join(self.save_dir, "*" + INCOMPLETE_SUFFIX)):
            logger.warning(f"Removing {stale}, left by a save that was interrupted")
            with contextlib.suppress(OSError):
                os.remove(stale)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._is_local(self.save_dir):
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        os.makedirs(self.save_dir, exist_ok=True)
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename),
            mode="w",
        )

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            return super()._load_file(filename)
        except Exception as e:
            others = sorted(
                p for p in glob.glob(os.path.join(os.path.dirname(filename) or ".", "*.pth"))
                if os.path.abspath(p) != os.path.abspath(filename)
            )
            hint = (
                f"other checkpoints there: {', '.join(os.path.basename(p) for p in others)}; "
                "resume from one by writing its name into last_checkpoint, or load it with "
                "MODEL.WEIGHTS"
                if others
                else "no other checkpoint in that folder"
            )
            raise RuntimeError(
                f"Cannot read checkpoint {filename} ({type(e).__name__}: {e}). The file is "
                f"truncated or corrupt (written by a run killed mid-save before retina_plugin "
                f"saved atomically, or damaged on disk); {hint}."
            ) from e

