"""Source files for the upload tests: CSV (with a header) and NDJSON with the pool_volume table's columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_csv(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("day,pool,volume\n" + "".join(f"{r['day']},{r['pool']},{r['volume']}\n" for r in records))
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
