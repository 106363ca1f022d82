"""
File helpers shared by the datasets, checkpoints, deployment engines and prediction: a file's
hash, and writes that survive a kill at any moment.
"""
import contextlib
import hashlib
import json
import os

__all__ = ["INCOMPLETE_SUFFIX", "atomic_write", "atomic_write_json", "file_sha256"]

INCOMPLETE_SUFFIX = ".incomplete"


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str, write_fn, mode: str = "wb", durable: bool = True) -> None:
    """
    Call ``write_fn(file)`` on ``path + INCOMPLETE_SUFFIX`` and rename it to ``path``: a kill at
    any moment leaves either the old or the new file. ``durable``: also fsync the file and the
    rename, so that a power loss does too. If ``write_fn`` raises, the temporary file is removed
    and ``path`` is untouched.
    """
    tmp = path + INCOMPLETE_SUFFIX
    try:
        with open(tmp, mode) as f:
            write_fn(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    if not durable:
        return
    # Make the rename itself durable (the directory entry).
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_json(path: str, data, durable: bool = True) -> None:
    """``data`` as json in ``path``, written with :func:`atomic_write`."""
    # json.dumps, not json.dump: dump always takes json's pure-Python encoder.
    text = json.dumps(data)
    atomic_write(path, lambda f: f.write(text), mode="w", durable=durable)
