"""Two processes polling with one API key on the Free plan: no pacing, each pacing to the whole budget, and each
pacing to half of it (``[dune] budget_share = 0.5``), side by side in one run.

Each style has its own emulator (40 reads and 15 writes a minute per key, token buckets without
``Retry-After``). The parent starts 16 pipelines of 150-195 s (before the rate limit is switched on: only the
waiting is measured), then two child processes (two triggerers) each wait for 8 of them with
``DunePipelineTrigger`` (``poll_interval=10``, fixed reads: 96 reads a minute asked of a budget of 40).
Reported: status reads, 429s (all, and after the first minute), runs detected, detection latency.

    python -m bench.budget_processes [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench import common

NAME = "budget_processes"
PROCESSES = 2
PIPELINES = 16
POLL_INTERVAL = 10.0
STYLES = (
    ("2 processes, unpaced", 0, 1.0, 8100),
    ("2 processes, each paced to 40/min", 40, 1.0, 8200),
    ("2 processes, budget_share 0.5", 40, 0.5, 8300),
)


def _child(conn_json: str, ids: Sequence[str]) -> dict[str, float]:
    """Wait for ``ids`` with one trigger each in this process's event loop; return when each was seen ending."""
    os.environ["AIRFLOW_CONN_DUNE_DEFAULT"] = conn_json
    from airflow_provider_dune.triggers.pipeline import DunePipelineTrigger

    seen: dict[str, float] = {}

    async def wait(pipeline_execution_id: str) -> None:
        trigger = DunePipelineTrigger(
            pipeline_execution_id=pipeline_execution_id, poll_interval=POLL_INTERVAL, adaptive=False
        )
        async for event in trigger.run():
            if event.payload["status"] == "success":
                seen[pipeline_execution_id] = time.time()

    async def all_of_them() -> None:
        await asyncio.gather(*(wait(i) for i in ids))

    asyncio.run(all_of_them())
    return seen


def _style_outcome(label: str, requests: Sequence[Mapping[str, Any]], ends: Mapping[str, float]) -> dict[str, Any]:
    reads = [r for r in requests if r["endpoint"] == "get_pipeline_status"]
    first = min((float(r["at"]) for r in reads), default=0.0)
    detected: dict[str, float] = {}
    for request in reads:
        if request.get("status") == 200 and json.loads(request.get("response_body") or "{}").get("status") == (
            "completed"
        ):
            detected.setdefault(request["path"].rsplit("/", 2)[-2], float(request["at"]))
    latencies = [detected[p] - end for p, end in ends.items() if p in detected]
    return {
        "style": label,
        "pipelines": len(ends),
        "detected": len(latencies),
        "status_reads": len(reads),
        "http_429": sum(1 for r in reads if r.get("status") == 429),
        "http_429_after_first_minute": sum(1 for r in reads if r.get("status") == 429 and float(r["at"]) - first > 60),
        "detection_latency_s": common.summarize(latencies),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--child", help=None)
    args = p.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(_child(spec["conn"], spec["ids"])))
        return {}
    low, step = (40.0, 1.0) if args.quick else (150.0, 3.0)
    common.isolate_airflow()
    from airflow_provider_dune.hooks.dune import DuneHook

    results: dict[str, Any] = {"quick": args.quick}
    outcomes = []

    with contextlib.ExitStack() as stack:
        children: list[tuple[str, Any, dict[str, float], list[subprocess.Popen[str]]]] = []
        for label, reads_per_minute, share, query_base in STYLES:
            emulator = stack.enter_context(common.bench_emulator(f"{NAME}.{query_base}"))
            common.set_dune_connection(emulator.url)
            ends: dict[str, float] = {}
            with DuneHook() as hook:
                for index in range(PIPELINES):
                    duration = low + step * index
                    emulator.client.add_query(query_base + index, duration=duration)
                    ends[hook.execute_query_pipeline(query_base + index)] = time.time() + duration
            emulator.client.set_rate_limit(40, 15)
            conn = json.dumps(
                {
                    "conn_type": "dune",
                    "host": emulator.url,
                    "password": common.BENCH_API_KEY,
                    "extra": {"reads_per_minute": reads_per_minute, "writes_per_minute": 0},
                }
            )
            ids = list(ends)
            env = {**os.environ, "AIRFLOW__DUNE__BUDGET_SHARE": str(share)}
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.budget_processes",
                        "--child",
                        json.dumps({"conn": conn, "ids": ids[i::PROCESSES]}),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=env,
                    cwd=common.REPO_ROOT,
                )
                for i in range(PROCESSES)
            ]
            children.append((label, emulator, ends, procs))
        for label, emulator, ends, procs in children:
            for proc in procs:
                proc.wait(timeout=1800)
            outcomes.append(_style_outcome(label, emulator.client.requests(), ends))
    results["styles"] = outcomes
    rows = [
        [
            o["style"],
            f"{o['detected']}/{o['pipelines']}",
            o["status_reads"],
            o["http_429"],
            o["http_429_after_first_minute"],
            o["detection_latency_s"].get("median", float("nan")),
            o["detection_latency_s"].get("max", float("nan")),
        ]
        for o in outcomes
    ]
    common.print_table(
        f"{PROCESSES} processes, one key on the Free plan (40 reads a minute), {PIPELINES} pipelines polled every "
        f"{POLL_INTERVAL:g} s",
        ["style", "detected", "reads", "429s", "429s after 1st min", "latency med s", "max s"],
        rows,
    )
    common.write_results(NAME, results)
    return results


if __name__ == "__main__":
    main()
