"""A resumable, append-only cache of per-query model outputs.

Each line is {"key": sha256, "value": ...}. The key hashes everything the value depends on (the model's
identity, the whole prompt, the candidates, the scoring rule and its options), so an interrupted run
resumes without recomputing finished queries and a changed configuration never reuses a stale value.
Lines are flushed and fsynced per batch; a line cut short by a kill is ignored on the next load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ResultCache:
    """Values by key, loaded from `path` and from the per-process files beside it (`<stem>.<shard>.jsonl`,
    written when several processes evaluate together); written to `path`, or with `shard` to that
    process's own file, so that no two processes ever append to the same file."""

    def __init__(self, path: str | Path, shard: str | None = None):
        self.path = Path(path)
        self.write_path = self.path.with_name(f"{self.path.stem}.{shard}{self.path.suffix}") if shard else self.path
        self.values: dict[str, object] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.refresh()

    def files(self) -> list[Path]:
        shards = sorted(self.path.parent.glob(f"{self.path.stem}.*{self.path.suffix}"))
        return [p for p in [self.path, *shards] if p.exists()]

    def refresh(self) -> None:
        """(Re)read every file: what other processes have written since is seen too."""
        for path in self.files():
            self._load(path, own=path == self.write_path)

    def _load(self, path: Path, own: bool) -> None:
        with path.open("rb") as f:
            data = f.read()
        good = 0
        for line in data.splitlines(keepends=True):
            try:
                rec = json.loads(line)
                self.values[rec["key"]] = rec["value"]
            except (ValueError, KeyError, TypeError):
                break  # a torn last line: drop it and everything after
            if not line.endswith(b"\n"):
                break
            good += len(line)
        if own and good != len(data):  # only the file's writer cuts it (another process may be appending)
            with path.open("r+b") as f:
                f.truncate(good)

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __len__(self) -> int:
        return len(self.values)

    def get(self, key: str):
        return self.values.get(key)

    def put_many(self, items: dict[str, object]) -> None:
        if not items:
            return
        with self.write_path.open("a", encoding="utf-8") as f:
            for k, v in items.items():
                f.write(json.dumps({"key": k, "value": v}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.values.update(items)

