"""Whole-or-nothing file writing and image reading with errors that name the file.

Every output of the pipeline goes through ``atomic_path`` (a file) or ``atomic_folder`` (a folder
written whole): the data is written under a temporary name in the same folder and renamed into
place only once complete, so a killed job never leaves a half-written output under the final
name, and ``remove_stale_temporaries`` clears what a killed writer left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Container, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np


class DataError(ValueError):
    """Bad input data; the message names the file or value at fault."""


# A temporary of ``atomic_path`` or ``atomic_folder``: "." + the final name's stem + "." + 8
# random characters (mkstemp's, mkdtemp's) + ".tmp" + the final suffix.
_TEMPORARY = r"\.{stem}\.[a-z0-9_]{{8}}\.tmp{suffix}"


def temporary_name(path: Path, suffix: str | None = None) -> tuple[str, str]:
    """The (prefix, suffix) of ``path``'s temporaries, as ``tempfile.mkstemp`` takes them."""
    return f".{path.stem}.", f".tmp{path.suffix if suffix is None else suffix}"


def remove_stale_temporaries(place: str | os.PathLike) -> list[Path]:
    """Delete the temporaries (files or folders) a killed writer left behind (``atomic_path``'s
    and ``atomic_folder``'s names only).

    ``place`` is a folder the caller owns (every temporary in it goes) or a file path (only that
    file's temporaries go: a folder shared with other jobs keeps theirs, which may be live).
    Returns what was removed.
    """
    place = Path(place)
    if place.is_dir():
        return _remove_temporaries(place, ".+", ".*")
    return _remove_temporaries(place.parent, re.escape(place.stem), re.escape(place.suffix))


def _remove_temporaries(folder: Path, stem: str, suffix: str) -> list[Path]:
    if not folder.is_dir():
        return []
    match = re.compile(_TEMPORARY.format(stem=stem, suffix=suffix)).fullmatch
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") and match(entry.name):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed


def _plain_permissions(path: Path, mode: int) -> None:
    """``mode`` less the umask: mkstemp and mkdtemp create owner-only entries, open() does not."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, suffix: str | None = None, *, clear_stale: bool = True
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary name keeps the final suffix (so writers that pick a format from the extension
    work). On an exception the temporary file is removed and ``path`` is left untouched. The
    temporaries of ``path`` that a killed earlier writer left behind are removed first (each
    path has one writer at a time, so any that exist are stale); a writer of thousands of files
    in one folder clears the folder once instead (``clear_stale=False``: no scan per file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clear_stale:
        remove_stale_temporaries(path)
    prefix, tmp_suffix = temporary_name(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=tmp_suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if os.stat(tmp_path).st_nlink == 1:  # a hard link keeps its file's own permissions
            _plain_permissions(tmp_path, 0o666)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it replaces ``path`` (a folder) when the
    block succeeds, and is deleted, leaving ``path`` as it was, when the block fails.

    Its name is one of ``path``'s temporaries (``temporary_name``), so that the next writer's
    ``remove_stale_temporaries`` clears a folder a killed writer left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(path.parent, re.escape(path.stem), re.escape(path.suffix))
    prefix, suffix = temporary_name(path)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
    try:
        yield tmp
        _plain_permissions(tmp, 0o777)
        if path.exists():
            # A rename cannot replace a non-empty folder: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_unlisted(folder: Path, keep: Container[Path]) -> list[Path]:
    """Delete the files under ``folder`` that are not in ``keep`` (what a run has just written
    there), then the folders left empty: an output folder holds exactly its run's files."""
    removed = []
    for path in sorted(folder.rglob("*"), reverse=True) if folder.is_dir() else ():
        if path.is_file() and path not in keep:
            path.unlink()
            removed.append(path)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return removed


@contextlib.contextmanager
def opencv_single_threaded() -> Iterator[None]:
    """OpenCV on one thread inside the block, on as many as before afterwards.

    Wrap every fork of worker processes in it. A child forked while OpenCV's thread pool is
    running inherits the pool's bookkeeping but none of its threads, and its first
    ``cv2.setNumThreads`` then waits for those threads forever; stopping the pool before the
    fork leaves the child nothing to wait for.
    """
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_csv(path: str | os.PathLike, frame: Any) -> None:
    """Write a pandas DataFrame as CSV, whole or not at all."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB (H, W, 3) or single-channel (H, W) uint8 array as PNG/JPEG, atomically."""
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 image, got {image.dtype}")
    arr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), arr):
            raise OSError(f"could not write image {path}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a colour image as RGB uint8 (H, W, 3); raise DataError naming the file if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    arr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if arr is None:
        raise DataError(f"unreadable or truncated image: {path}")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as its raw indices (H, W) uint8.

    Palettized PNGs (GTA5, Mapillary) are read as palette indices, not colours: PIL is used
    because OpenCV would expand the palette to RGB.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"label file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "L"):
                arr = np.asarray(im, dtype=np.uint8)
            elif im.mode in ("I", "I;16"):
                arr = np.asarray(im)
                if arr.max(initial=0) > 255:
                    raise DataError(f"label ids above 255 in {path}")
                arr = arr.astype(np.uint8)
            else:
                raise DataError(
                    f"label {path} has image mode {im.mode!r}; expected a single-channel or "
                    "palettized PNG of class ids"
                )
    except DataError:
        raise
    except (OSError, SyntaxError) as err:
        raise DataError(f"unreadable or truncated label: {path} ({err})") from err
    return arr


def write_label(
    path: str | os.PathLike, label: np.ndarray, palette: np.ndarray | None = None
) -> None:
    """Write a uint8 id map as PNG, optionally palettized (as GTA5 and Mapillary ship theirs)."""
    from PIL import Image

    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D uint8 label, got {label.dtype} {label.shape}")
    im = Image.fromarray(label)
    if palette is not None:
        pal = np.zeros((256, 3), dtype=np.uint8)
        pal[: len(palette)] = palette
        im.putpalette(pal.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def git_revision(cwd: str | os.PathLike | None = None) -> str:
    """The current git commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")
