"""JSON records of a run (models, statistics, import summaries), read in one place; they are
written atomically by :func:`cryosnake.atomic.write_json`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

__all__ = ["read_json", "read_json_series"]


def read_json(path) -> dict:
    """The object stored in the JSON file ``path``."""
    return json.loads(Path(path).read_text())


def read_json_series(paths: Iterable) -> list[dict]:
    """The records of several JSON files (one per iteration), sorted by their ``iteration``
    key; files without one keep their order."""
    return sorted((read_json(p) for p in paths), key=lambda r: r.get("iteration", 0))
