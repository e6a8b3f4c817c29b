"""The log-structured store."""

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional

TOMBSTONE = "__deleted__"


@dataclass
class Record:
    """One line of the log."""

    key: str
    value: Any
    seq: int = 0

    def to_line(self) -> str:
        """Serializes the record as one JSON line."""
        return json.dumps({"k": self.key, "v": self.value, "s": self.seq}) + "\n"

    @classmethod
    def from_line(cls, line: str) -> "Record":
        """Parses a record written by `to_line`."""
        d = json.loads(line)
        return cls(d["k"], d["v"], d.get("s", 0))


class Store:
    """A key-value store backed by an append-only log file.

    Reads are served from an in-memory index rebuilt when the store opens.
    """

    def __init__(self, path: str, compact_ratio: float = 0.5):
        self.path = path
        self.compact_ratio = compact_ratio
        self._index: Dict[str, Any] = {}
        self._records = 0
        self._seq = 0
        if os.path.exists(path):
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                rec = Record.from_line(line)
                self._records += 1
                self._seq = max(self._seq, rec.seq)
                if rec.value == TOMBSTONE:
                    self._index.pop(rec.key, None)
                else:
                    self._index[rec.key] = rec.value

    def get(self, key: str, default: Optional[Any] = None) -> Any:
        """Returns the value stored under `key`, or `default`."""
        return self._index.get(key, default)

    def put(self, key: str, value: Any) -> None:
        """Stores `value` under `key` and appends it to the log."""
        self._append(Record(key, value))
        self._index[key] = value

    def delete(self, key: str) -> bool:
        """Removes `key`; returns whether it was present."""
        if key not in self._index:
            return False
        self._append(Record(key, TOMBSTONE))
        del self._index[key]
        return True

    def items(self) -> Iterator[tuple]:
        """Iterates over (key, value) pairs in key order."""
        for key in sorted(self._index):
            yield key, self._index[key]

    def _append(self, rec: Record) -> None:
        self._seq += 1
        rec.seq = self._seq
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(rec.to_line())
        self._records += 1
        if self._stale_fraction() > self.compact_ratio:
            self.compact()

    def _stale_fraction(self) -> float:
        if self._records == 0:
            return 0.0
        return 1.0 - len(self._index) / self._records

    def compact(self) -> None:
        """Rewrites the log with only the live records, atomically."""
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for seq, (key, value) in enumerate(self.items(), start=1):
                f.write(Record(key, value, seq).to_line())
        os.replace(tmp, self.path)
        self._records = len(self._index)

    class Snapshot:
        """A frozen copy of the index."""

        def __init__(self, data):
            self.data = dict(data)

        def keys(self):
            return list(self.data)

    def snapshot(self) -> "Store.Snapshot":
        """Returns a frozen copy of the current contents."""
        return Store.Snapshot(self._index)


def open_store(path: str, **kwargs) -> Store:
    """Opens (or creates) the store at `path`."""
    return Store(path, **kwargs)


@dataclass
class Config:
    """Store settings read from a JSON file."""

    path: str
    compact_ratio: float = 0.5
    extra: Dict[str, Any] = field(default_factory=dict)
