"""Shared pieces of the benchmarks: the emulator child, the Airflow environment, tables and JSON results."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
BENCH_API_KEY = "bench-key"


def isolate_airflow() -> None:
    """Point Airflow at a throw-away home before it is imported (no DB is needed: connections come from env)."""
    home = os.environ.get("DUNE_BENCH_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="dune-bench-airflow-")
    os.environ["AIRFLOW_HOME"] = home
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")


def set_dune_connection(api_url: str, api_key: str = BENCH_API_KEY, conn_id: str = "dune_default", **extra: Any) -> str:
    """Define an Airflow connection of type ``dune`` through ``AIRFLOW_CONN_<ID>``; return its id.

    Budget pacing is off unless ``extra`` sets ``reads_per_minute``: the benchmarks measure the provider against
    an emulator that enforces no budget (or its own, in the rate-limited part of ``api_calls``).
    """
    extra = {"reads_per_minute": 0, "writes_per_minute": 0, **extra}
    value = {"conn_type": "dune", "host": api_url, "password": api_key, "extra": extra}
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(value)
    return conn_id


@contextmanager
def bench_emulator(log_name: str, *extra_args: str) -> Iterator[Any]:
    """The emulator in its own process (so its CPU is not counted as the client's), empty catalog."""
    from airflow_provider_dune.testing.process import emulator_process

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with emulator_process(
        BENCH_API_KEY, log_path=RESULTS_DIR / f"{log_name}.emulator.log", seed=False, extra_args=extra_args
    ) as child:
        yield child


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    airflow_version: str | None
    try:
        from airflow import __version__ as airflow_version
    except ImportError:  # pragma: no cover - the bench always runs in the project venv
        airflow_version = None
    return {
        "python": platform.python_version(),
        "airflow": airflow_version,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - non-Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) by the nearest-rank method; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """min / median / p99 / max of a sample."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table: numbers right-aligned, everything else left-aligned."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text_rows)) if text_rows else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) if rows else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        cells = zip(values, widths, numeric, strict=True)
        return "  ".join(v.rjust(w) if right else v.ljust(w) for v, w, right in cells)

    print(f"\n{title}")
    print(line(list(headers)))
    print("  ".join("-" * w for w in widths))
    for row in text_rows:
        print(line(row))
    sys.stdout.flush()


def write_results(name: str, results: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (with the machine facts) and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **results}, indent=2, default=str) + "\n")
    print(f"\nresults written to {path.relative_to(REPO_ROOT)}")
    return path


def parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the options every benchmark has."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller sizes, for checking the script works")
    return p
