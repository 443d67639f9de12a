"""Run every benchmark, each in its own process, then print the headline numbers side by side.

    python -m bench [--quick] [--only worker_slots,triggerer_scale,...] [--summary-only]

Each benchmark prints its own tables and writes ``bench/results/<name>.json``; this writes
``bench/results/summary.json`` with the headline numbers below. Run on a quiet machine: the numbers are CPU
and timing measurements.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import common

BENCHMARKS = ("worker_slots", "triggerer_scale", "api_calls", "hook_overhead", "budget_polling", "budget_processes")
Row = list[Any]


def _worker_slots(data: dict[str, Any]) -> list[Row]:
    rows = []
    for duration, entry in data["by_duration"].items():
        rows.append(
            [
                f"worker slot s per pipeline, D = {float(duration):g} s",
                f"deferrable {entry['deferrable']['slot_seconds_median']:.3f}",
                f"non-deferrable {entry['worker']['slot_seconds_median']:.1f}, "
                f"SDK PythonOperator {entry['sdk']['slot_seconds_median']:.1f}",
                f"{entry['ratio_worker_to_deferrable']:,.0f}x / {entry['ratio_sdk_to_deferrable']:,.0f}x less",
                "yes" if entry["target_met"] else "NO",
            ]
        )
    return rows


def _triggerer_scale(data: dict[str, Any]) -> list[Row]:
    main = data["main"]
    n = main["triggers"]
    return [
        [
            f"{n} triggers: CPU s per 1,000 polls",
            f"{main['cpu_s_per_1000_polls']:.2f}",
            f"{main['cpu_s'] / main['elapsed_s']:.0%} of one core",
            "",
            "",
        ],
        [
            f"{n} triggers: RSS per trigger",
            f"{main['rss_per_trigger_kb']:.1f} KB",
            "target < 50 KB",
            "",
            _met(data, "memory_per_trigger"),
        ],
        [
            f"{n} triggers: event-loop lag p99 / max",
            f"{main['loop_lag_ms']['p99']:.1f} / {main['loop_lag_ms']['max']:.0f} ms",
            "target p99 < 100 ms",
            "",
            _met(data, "p99_loop_lag"),
        ],
        [
            f"{n} triggers: detection latency median / p99",
            f"{main['detection_latency_s']['median']:.1f} / {main['detection_latency_s']['p99']:.1f} s",
            f"poll interval {main['poll_interval_s']:g} s",
            "",
            "",
        ],
        [
            f"{n} triggers: TCP connections for {main['status_polls']} polls",
            main["tcp_connections_opened"],
            "",
            "",
            "",
        ],
        [
            "blocking callbacks (asyncio debug, > 50 ms)",
            data["debug_pass"]["slow_callbacks"],
            f"{data['debug_pass']['triggers']} triggers",
            "",
            "yes" if data["debug_pass"]["slow_callbacks"] == 0 else "see log",
        ],
    ]


def _met(data: dict[str, Any], key: str) -> str:
    return "yes" if data["met"][key] else "NO"


def _api_calls(data: dict[str, Any]) -> list[Row]:
    single = data["single"]
    duration = single["duration_seconds"]
    sdk = single["SDK 1 s"]["requests"]
    rows: list[Row] = [
        [
            f"API requests per pipeline, D = {duration:g} s",
            f"provider {single['provider 30 s']['requests']} (30 s) / {single['provider 10 s']['requests']} (10 s)",
            f"SDK 1 s loop {sdk}",
            f"{sdk / single['provider 30 s']['requests']:.1f}x / {sdk / single['provider 10 s']['requests']:.1f}x "
            "fewer",
            "",
        ]
    ]
    limited = data["rate_limited"]
    styles = (
        ("provider", "provider"),
        ("SDK", "sdk"),
        ("provider, over budget", "provider_over_budget"),
        ("provider, over budget, no shared cooldown", "provider_over_budget_no_shared_cooldown"),
    )
    for label, key in styles:
        if key not in limited:
            continue
        entry = limited[key]
        rows.append(
            [
                f"Free plan 40 reads/min: {label}",
                f"{entry['completion_detected']}/{entry['pipelines']} detected",
                f"{entry['http_429']} x 429, max {entry['max_requests_in_any_1s_after_first_429']} req/s after the "
                "first 429",
                "",
                "",
            ]
        )
    return rows


def _hook_overhead(data: dict[str, Any]) -> list[Row]:
    rows = []
    for comparison in data["comparisons"]:
        hook, bare = comparison["hook"], comparison["bare"]
        rows.append(
            [
                f"hook vs bare client, {comparison['mode']} C={comparison['concurrency']}",
                f"CPU x{comparison['cpu_ratio_hook_over_bare']:.2f} "
                f"({comparison['cpu_us_per_request_hook_minus_bare']:+.0f} us/request)",
                f"req/s x{comparison['rps_ratio_hook_over_bare']:.2f}",
                f"connections {hook['connections_max']} vs {bare['connections_max']}",
                "",
            ]
        )
    return rows


def _latency(entry: dict[str, Any]) -> str:
    latency = entry["detection_latency_s"]
    return f"latency median {latency.get('median', float('nan')):.1f} s (max {latency.get('max', float('nan')):.0f} s)"


def _budget_polling(data: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for part, title in (("free_plan", "Free plan, 20 pipelines at 10 s"), ("ten_minute_pipelines", "10-min pipeline")):
        entries = {entry["style"]: entry for entry in data.get(part, [])}
        fixed = entries.get("fixed, unpaced") or entries.get("fixed 10 s")
        for style, entry in entries.items():
            if entry is fixed:
                continue
            rows.append(
                [
                    f"{title}: {style}",
                    f"{entry['status_reads_per_pipeline']:.1f} reads/pipeline, {entry['http_429']} x 429, "
                    + _latency(entry),
                    f"{fixed['style']}: {fixed['status_reads_per_pipeline']:.1f} reads/pipeline, "
                    f"{fixed['http_429']} x 429, " + _latency(fixed)
                    if fixed
                    else "",
                    "",
                    "",
                ]
            )
    for style, entry in data.get("triggerer_scale", {}).items():
        rows.append(
            [
                f"{entry['triggers']} triggers, {style}",
                f"{entry['cpu_s_per_1000_polls'] or 0:.2f} CPU s/1,000 reads, {entry['rss_per_trigger_kb']:.1f} KB, "
                f"lag p99 {entry['loop_lag_ms'].get('p99', 0):.1f} ms",
                "",
                "",
                "yes" if entry["rss_per_trigger_kb"] < 50 and entry["loop_lag_ms"].get("p99", 0) < 100 else "NO",
            ]
        )
    return rows


def _budget_processes(data: dict[str, Any]) -> list[Row]:
    return [
        [entry["style"], f"{entry['http_429']} x 429, " + _latency(entry), f"{entry['status_reads']} reads", "", ""]
        for entry in data["styles"]
    ]


HEADLINES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "budget_polling": _budget_polling,
    "budget_processes": _budget_processes,
    "worker_slots": _worker_slots,
    "triggerer_scale": _triggerer_scale,
    "api_calls": _api_calls,
    "hook_overhead": _hook_overhead,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, to check the scripts work")
    p.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks to run")
    p.add_argument("--summary-only", action="store_true", help="only summarise the results already in bench/results")
    args = p.parse_args(argv)
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    failed, durations = [], {}
    for name in [] if args.summary_only else selected:
        print(f"\n=== bench.{name} ===", flush=True)
        began = time.monotonic()
        command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        if subprocess.run(command, cwd=common.REPO_ROOT, check=False).returncode != 0:
            failed.append(name)
        durations[name] = round(time.monotonic() - began, 1)

    rows: list[Row] = []
    results: dict[str, Any] = {}
    for name in selected:
        path = common.RESULTS_DIR / f"{name}.json"
        if name in failed or not path.exists():
            continue
        data = json.loads(path.read_text())
        results[name] = data
        rows += HEADLINES[name](data)
    common.print_table(
        "Summary (details above and in bench/results/)",
        ["measure", "provider", "alternative", "ratio", "target met"],
        rows,
    )
    summary = {"quick": args.quick, "seconds": durations, "failed": failed, "headlines": rows}
    if args.summary_only:
        summary["from"] = {name: data.get("machine", {}).get("measured_at") for name, data in results.items()}
    common.write_results("summary", summary)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
