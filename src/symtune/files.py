"""Writing files and directories so that a reader, or a run resumed after a kill, never sees half of one.

Every output symtune publishes goes through these two: a file through a temporary sibling and a rename
(`write_atomic`), a directory written in full under a temporary name and then put in place by renames
(`publish_dir`: checkpoints, mixtures, a study's saved results, the tokenizer cache).
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write a file (text, or bytes as they are) through a temporary sibling and a rename: readers never see half
    of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def fsync_tree(path: str | Path) -> None:
    """Flush every file under `path`, and the directory itself, to disk."""
    path = Path(path)
    for f in sorted(path.rglob("*")):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_dir(tmp: str | Path, dest: str | Path, replace: bool = True, durable: bool = False) -> bool:
    """Put the fully written directory `tmp` at `dest` (same filesystem) by renames: `dest` is always either
    the old directory or the new one, never a mixture or a half. An existing `dest` is first renamed aside
    (`.<name>.old-<pid>`, a name no reader looks for) and removed once the new one is in place. With
    `replace=False` an existing `dest` wins instead (a concurrent writer finished the same content first):
    `tmp` is removed and False returned. `durable` flushes every file to disk before the rename, for outputs a
    power cut must not leave renamed but empty (checkpoints)."""
    tmp, dest = Path(tmp), Path(dest)
    if durable:
        fsync_tree(tmp)
    if not replace:
        try:
            os.rename(tmp, dest)  # refused when dest exists and is not empty
            return True
        except OSError:
            if not dest.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return False
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
    try:
        tmp.rename(dest)
    except OSError:
        if old.exists() and not dest.exists():
            old.rename(dest)  # the old one back in place
        raise
    shutil.rmtree(old, ignore_errors=True)
    return True


def gzip_in_place(path: str | Path) -> Path:
    """Replace `path` by `path.gz` (deterministic: no name or time in the header, so the same bytes give the same
    file) and return the new path. Saved results keep their per-query samples this way at a fraction of the size."""
    path = Path(path)
    gz = path.with_name(path.name + ".gz")
    write_atomic(gz, gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
    path.unlink()
    return gz


def read_text_maybe_gz(path: str | Path) -> str:
    """The text of `path`, or of `path.gz` when only the compressed copy exists."""
    path = Path(path)
    if path.is_file():
        return path.read_text()
    return gzip.decompress(path.with_name(path.name + ".gz").read_bytes()).decode("utf-8")
