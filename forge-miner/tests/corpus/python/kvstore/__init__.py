"""A tiny persistent key-value store.

Values are JSON documents; the store keeps an append-only log and compacts it
when more than half of its records are stale.
"""

from .store import Store, open_store

__all__ = ["Store", "open_store"]
