"""What a result needs to be reproduced: content hashes of the files it read and the versions of the packages
that made it. One helper each, used by the mixture, tuning, evaluation and model identities."""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path

from . import __version__

PACKAGES = ("torch", "transformers", "datasets", "trl", "peft", "accelerate", "gguf", "wordfreq")
_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks, cached in memory by (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def package_versions() -> dict[str, str]:
    """symtune, Python and the installed versions of the packages symtune builds on (read from their
    metadata, so nothing is imported); absent packages are left out."""
    out = {"symtune": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


__all__ = ["file_sha256", "package_versions"]
