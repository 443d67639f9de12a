"""Peak memory of DuneUploadOperator reading a source whose one line is huge (300 MiB by default).

Each case runs ``DuneUploadOperator(mode="replace").execute()`` in a child process against the emulator (in its
own process) and reports the child's peak RSS (``ru_maxrss`` from ``wait4``) and how the task ended. The cases:

* ``tiny CSV``: three rows, loaded: the cost of Python, Airflow and the provider themselves;
* ``NDJSON, one 300 MiB line`` and ``CSV, one 300 MiB line``: a single row far larger than ``chunk_bytes``
  (8 MiB), which no insert request could carry; the task should refuse it without reading it whole.

``--code DIR`` measures the ``airflow_provider_dune`` package found in ``DIR`` instead of this checkout, e.g. an
older version exported with ``git archive <commit> airflow_provider_dune | tar -x -C /tmp/before``; giving it
prints that version's figures next to this checkout's.

    python -m bench.upload_memory [--quick] [--code /tmp/before]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common

NAME = "upload_memory"
MIB = 1024 * 1024

_CHILD = """
import json, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from bench import common
common.isolate_airflow()
common.set_dune_connection(sys.argv[3])
from airflow_provider_dune.operators.uploads import DuneUploadOperator
schema = [{"name": "day", "type": "date"}, {"name": "pool", "type": "varchar"}, {"name": "volume", "type": "double"}]
task = DuneUploadOperator(task_id="bench", namespace="bench", table_name="memory", schema=schema, source=sys.argv[4])
class TI:
    dag_id = task_id = run_id = "bench"
    map_index, try_number = -1, 1
started = time.perf_counter()
try:
    result = task.execute({"ti": TI()})
    outcome = f"loaded {result['rows_written']} row(s)"
except BaseException as err:
    outcome = f"{type(err).__name__}: {' '.join(str(err).split())[:110]}"
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - started}))
"""


def _write_sources(directory: Path, size: int) -> dict[str, Path]:
    """The sources: a tiny CSV, and NDJSON and CSV files whose one data line holds ``size`` bytes."""
    block = b"x" * MIB
    tiny = directory / "tiny.csv"
    tiny.write_text("day,pool,volume\n2024-06-01,a,1\n2024-06-02,b,2\n2024-06-03,c,3\n")
    ndjson = directory / "one_line.jsonl"
    with ndjson.open("wb") as out:
        out.write(b'{"day": "2024-06-01", "volume": 1, "pool": "')
        for _ in range(size // MIB):
            out.write(block)
        out.write(b'"}\n')
    csv = directory / "one_line.csv"
    with csv.open("wb") as out:
        out.write(b"day,pool,volume\n2024-06-01,")
        for _ in range(size // MIB):
            out.write(block)
        out.write(b",1\n")
    return {"tiny CSV": tiny, f"NDJSON, one {size // MIB} MiB line": ndjson, f"CSV, one {size // MIB} MiB line": csv}


def _measure(code: Path, url: str, source: Path) -> dict[str, Any]:
    """Run one upload in a child process; its peak RSS, wall time and outcome."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(code), str(common.REPO_ROOT), url, str(source)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=common.REPO_ROOT,
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _, _, usage = os.wait4(child.pid, 0)
    child.returncode = 0  # reaped by wait4
    try:
        lines = output.decode().strip().splitlines()
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"outcome": f"child printed no result: {output[-200:]!r}", "seconds": float("nan")}
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def main() -> None:
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, help="measure the airflow_provider_dune package in this directory too")
    parser.add_argument("--mib", type=int, default=300, help="size of the one long line (MiB)")
    args = parser.parse_args()
    size = (16 if args.quick else args.mib) * MIB
    versions = {"this checkout": common.REPO_ROOT}
    if args.code:
        versions = {f"{args.code}": args.code.resolve(), **versions}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dune-bench-upload-") as tmp:
        sources = _write_sources(Path(tmp), size)
        with common.bench_emulator(NAME) as emulator:
            for case, path in sources.items():
                for version, code in versions.items():
                    results.setdefault(case, {})[version] = _measure(code, emulator.url, path)
    rows = []
    for case, by_version in results.items():
        for version, entry in by_version.items():
            rows.append([case, version, entry["peak_rss_mb"], entry["seconds"], entry["outcome"]])
    common.print_table(
        f"Peak RSS of one DuneUploadOperator(mode='replace') task (chunk_bytes = 8 MiB), {size // MIB} MiB line",
        ["source", "code", "peak RSS MB", "s", "how the task ended"],
        rows,
    )
    common.write_results(NAME, {"line_bytes": size, "cases": results})


if __name__ == "__main__":
    main()
