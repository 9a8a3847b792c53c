"""Writing outputs whole or not at all: a temporary path beside the target, renamed into place.

A rename within one directory is atomic, so a reader (or a later command) sees either nothing,
the previous complete output, or the new complete one, never a half-written file or folder; a
failure removes the temporary path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid


def _temporary_sibling(path: str, tag: str = "tmp") -> str:
    path = os.path.abspath(path)
    # Hidden and unique, in the target's own directory: same filesystem, so rename is atomic.
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{tag}-{uuid.uuid4().hex[:8]}")


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically (creating the parent directories)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def replace_dir(source: str, target: str) -> None:
    """Moves the complete directory `source` to `target`, replacing an existing `target`.

    The old target is renamed aside first and deleted only after the new one is in place, so
    at every moment `target` is absent or complete.
    """
    old = None
    if os.path.exists(target):
        old = _temporary_sibling(target, "old")
        os.rename(target, old)
    try:
        os.rename(source, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def new_dir(target: str, replace: bool = False):
    """Yields a temporary directory that becomes `target` when the block succeeds.

    Without `replace`, an existing `target` is an error (checked before and after the block);
    on any failure the temporary directory is deleted and `target` is untouched.
    """
    target = os.path.abspath(target)
    if os.path.exists(target) and not replace:
        raise FileExistsError(f"{target} already exists (pass --force to replace it)")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = _temporary_sibling(target)
    os.makedirs(tmp)
    try:
        yield tmp
        if replace:
            replace_dir(tmp, target)
        else:
            os.rename(tmp, target)  # fails if a directory appeared there in the meantime
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: str, what: str = "JSON"):
    """A JSON file's value; a file that is not UTF-8 text or not valid JSON is a one-line
    ValueError naming the file (and the line of a syntax error)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file (byte {err.start} is not UTF-8); expected {what}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg}, column {err.colno}); "
                         f"expected {what}") from None


def finite_json(value):
    """`value` with every NaN or infinite number as None, and numpy values as Python ones: what
    `json.dumps(..., allow_nan=False)` accepts, since strict JSON has no NaN or Infinity (a
    decile with no observed watch time has an infinite ratio: null says "not measured")."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {key: finite_json(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
