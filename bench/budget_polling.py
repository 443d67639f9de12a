"""Budget-aware polling against fixed-interval polling, side by side in one run.

Part 1, the Free plan (the emulator enforces 40 reads and 15 writes a minute per key, token buckets without
``Retry-After``): 20 deferrable pipeline operators started at once, ``poll_interval=10`` (three times the read
budget), pipelines of 60-117 s (3 s apart), their triggers in one asyncio loop per style, each style against its
own emulator (its own key budget):

* ``fixed, unpaced``: reads exactly every 10 s, no pacing (``reads_per_minute=0``, ``adaptive_polling=False``),
  only the shared per-key 429 cooldown: the provider before budget-aware polling;
* ``fixed, paced``: the same reads, paced to the key's budget (``reads_per_minute=40``, ``writes_per_minute=15``);
* ``adaptive, paced``: paced, reads placed by the forecast: first runs (no history; a pipeline of one node
  has no progress to extrapolate);
* ``adaptive, paced, history``: the same with 5 previous durations of each request recorded (each within
  +-3% of its true duration, seeded), as after a few nightly runs.

Part 2, reads per 10-minute pipeline (no rate limit, pacing off: only the polling policy is measured): 10
pipelines of 600-627 s per style, started at once:

* ``fixed 10 s``, ``fixed 120 s``, ``fixed 300 s``: reads every ``poll_interval``;
* ``adaptive 300 s, history`` and ``adaptive 120 s, history``: ``poll_interval`` (the longest the user accepts
  to wait before the end is noticed) 300 s or 120 s, with 5 previous durations;
* ``adaptive 300 s, 4 nodes``: no history, a pipeline of a query and three materialized views (150 s each
  node) whose progress (nodes done) is extrapolated.

Part 3, 1,000 triggers in one loop (``bench.triggerer_scale``'s measurement, pipelines of 30-60 s, poll interval
10 s), fixed and unpaced as before, then adaptive with history, paced to 3,000 reads a minute (half of what the
fixed polling asks, so reads queue in the budget): CPU, memory, loop lag and detection latency against the
same targets.

Reported for every style: status reads, 429s (and after the first minute), runs detected, detection latency
(the run's end in the emulator -> the operator seeing the final status).

    python -m bench.budget_polling [--quick]
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import common

NAME = "budget_polling"
FREE_READS_PER_MINUTE = 40
FREE_WRITES_PER_MINUTE = 15
HISTORY_RUNS = 5
HISTORY_JITTER = 0.03


@dataclass(frozen=True)
class Style:
    label: str
    poll_interval: float
    adaptive: bool
    paced: bool
    history: bool
    query_base: int
    nodes: int = 1


PART1 = (
    Style("fixed, unpaced", 10, adaptive=False, paced=False, history=False, query_base=7100),
    Style("fixed, paced", 10, adaptive=False, paced=True, history=False, query_base=7200),
    Style("adaptive, paced", 10, adaptive=True, paced=True, history=False, query_base=7300),
    Style("adaptive, paced, history", 10, adaptive=True, paced=True, history=True, query_base=7400),
)
PART2 = (
    Style("fixed 10 s", 10, adaptive=False, paced=False, history=False, query_base=7500),
    Style("fixed 120 s", 120, adaptive=False, paced=False, history=False, query_base=7600),
    Style("fixed 300 s", 300, adaptive=False, paced=False, history=False, query_base=7650),
    Style("adaptive 300 s, history", 300, adaptive=True, paced=False, history=True, query_base=7700),
    Style("adaptive 120 s, history", 120, adaptive=True, paced=False, history=True, query_base=7750),
    Style("adaptive 300 s, 4 nodes", 300, adaptive=True, paced=False, history=False, query_base=7800, nodes=4),
)


def _conn_id(style: Style) -> str:
    return "bench_" + "".join(c if c.isalnum() else "_" for c in style.label)


def _seed_history(make: Callable[[], Any], duration: float, rng: random.Random) -> None:
    from airflow_provider_dune.utils import run_durations

    op = make()
    fingerprint = op.request_fingerprint(op.build_request(allow_templates=False))
    for _ in range(HISTORY_RUNS):
        run_durations.record(fingerprint, duration * rng.uniform(1 - HISTORY_JITTER, 1 + HISTORY_JITTER))


def _factory(style: Style, query_id: int, timeout: float) -> Callable[[], Any]:
    from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator

    def make() -> DuneExecutePipelineOperator:
        return DuneExecutePipelineOperator(
            task_id=f"pipeline_{query_id}",
            query_id=query_id,
            dune_conn_id=_conn_id(style),
            deferrable=True,
            poll_interval=style.poll_interval,
            adaptive_polling=style.adaptive,
            timeout=timeout,
        )

    return make


def _add_pipeline(emulator: Any, style: Style, query_id: int, duration: float) -> None:
    """A query of ``duration`` s, or a chain of ``style.nodes`` nodes sharing it (views, then the query)."""
    if style.nodes == 1:
        emulator.client.add_query(query_id, duration=duration)
        return
    step = duration / style.nodes
    views: list[str] = []
    for index in range(style.nodes - 1):
        name = f"dune.bench.view_{query_id}_{index}"
        emulator.client.add_materialized_view(
            name, query_id=query_id + 50_000 + index, duration=step, depends_on=views[-1:]
        )
        views.append(name)
    emulator.client.add_query(query_id, duration=step, depends_on=views[-1:])


def _outcome(
    style: Style, runs: Sequence[Any], requests: Sequence[Mapping[str, Any]], durations: Sequence[float]
) -> dict[str, Any]:
    from bench import _operator_harness as harness

    first = min((float(r["at"]) for r in requests), default=0.0)
    latencies = []
    for run, duration in zip(runs, durations, strict=True):
        start = harness.started_at(requests, getattr(run, "pipeline_execution_id", None))
        if start is not None and getattr(run, "detected_at", None) is not None:
            latencies.append(run.detected_at - (start + duration))
    reads = [r for r in requests if r["endpoint"] == "get_pipeline_status"]
    detected = sum(1 for run in runs if getattr(run, "outcome", None) == "success")
    errors = sorted({str(getattr(run, "error", run))[:200] for run in runs if getattr(run, "error", None)})
    return {
        "style": style.label,
        "poll_interval_s": style.poll_interval,
        "pipelines": len(runs),
        "detected": detected,
        "status_reads": len(reads),
        "status_reads_per_pipeline": len(reads) / len(runs) if runs else 0.0,
        "requests": len(requests),
        "http_429": sum(1 for r in requests if r.get("status") == 429),
        "http_429_after_first_minute": sum(
            1 for r in requests if r.get("status") == 429 and float(r["at"]) - first > 60
        ),
        "detection_latency_s": common.summarize(latencies),
        "errors": errors[:3],
    }


def _run_styles(
    stack: contextlib.ExitStack, styles: Sequence[Style], durations: Sequence[float], *, limited: bool, scale: float
) -> tuple[list[Callable[[], Any]], Callable[[list[Any]], list[dict[str, Any]]]]:
    """Set up one emulator and trigger loop per style; return the jobs and how to read their outcome."""
    from bench import _operator_harness as harness

    rng = random.Random(17)
    jobs: list[Callable[[], Any]] = []
    emulators = []
    timeout = max(durations) * 3 + 300
    for style in styles:
        emulator = stack.enter_context(common.bench_emulator(f"{NAME}.{_conn_id(style)}"))
        emulators.append(emulator)
        triggers = stack.enter_context(harness.TriggerLoop())
        pacing: dict[str, Any] = (
            {"reads_per_minute": FREE_READS_PER_MINUTE, "writes_per_minute": FREE_WRITES_PER_MINUTE}
            if style.paced
            else {}
        )
        common.set_dune_connection(emulator.url, conn_id=_conn_id(style), **pacing)
        if limited:
            emulator.client.set_rate_limit(FREE_READS_PER_MINUTE, FREE_WRITES_PER_MINUTE)
        for index, duration in enumerate(durations):
            query_id = style.query_base + index
            _add_pipeline(emulator, style, query_id, duration)
            make = _factory(style, query_id, timeout)
            if style.history:
                _seed_history(make, duration, rng)
            jobs.append(functools.partial(harness.run_deferrable, make, triggers, f"pipeline_{query_id}"))

    def outcomes(runs: list[Any]) -> list[dict[str, Any]]:
        out = []
        for position, (style, emulator) in enumerate(zip(styles, emulators, strict=True)):
            mine = runs[position * len(durations) : (position + 1) * len(durations)]
            out.append({**_outcome(style, mine, emulator.client.requests(), durations), "time_scale": scale})
        return out

    return jobs, outcomes


def _rows(outcomes: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for entry in outcomes:
        latency = entry["detection_latency_s"]
        rows.append(
            [
                entry["style"],
                f"{entry['detected']}/{entry['pipelines']}",
                entry["status_reads"],
                entry["status_reads_per_pipeline"],
                entry["http_429"],
                entry["http_429_after_first_minute"],
                latency.get("median", float("nan")),
                latency.get("p99", float("nan")),
                latency.get("max", float("nan")),
            ]
        )
    return rows


HEADERS = [
    "style",
    "detected",
    "reads",
    "reads/pipeline",
    "429s",
    "429s after 1st min",
    "latency med s",
    "p99 s",
    "max s",
]


def _scale_part3(args: Any) -> dict[str, Any]:
    """1,000 triggers: fixed and unpaced, then adaptive with history and paced, with triggerer_scale's measures."""
    from bench import triggerer_scale

    triggers = 100 if args.quick else 1000
    poll = 2.0 if args.quick else 10.0
    low, high = (4.0, 8.0) if args.quick else (30.0, 60.0)
    settings = type("Settings", (), {"poll_interval": poll})()
    out: dict[str, Any] = {}
    with common.bench_emulator(f"{NAME}.scale") as child:
        common.set_dune_connection(child.url, timeout=30)
        durations = {}
        for i in range(triggerer_scale.QUERY_COUNT):
            duration = low + i / (triggerer_scale.QUERY_COUNT - 1) * (high - low)
            durations[triggerer_scale.QUERY_ID_BASE + i] = duration + 0.5  # + pending
            child.client.add_query(triggerer_scale.QUERY_ID_BASE + i, name=f"bench_{i}", duration=duration, pending=0.5)
        triggerer_scale._measure(child, 3, settings, debug=False)  # warm-up
        out["fixed, unpaced"] = triggerer_scale._measure(child, triggers, settings, debug=False)
        reads_per_minute = triggers * 60 / poll / 2
        common.set_dune_connection(child.url, timeout=30, reads_per_minute=reads_per_minute)

        def forecast_kwargs(index: int, started_at: float) -> dict[str, Any]:
            duration = durations[triggerer_scale.QUERY_ID_BASE + index % triggerer_scale.QUERY_COUNT]
            return {"started_at": started_at, "expected_durations": [duration] * HISTORY_RUNS}

        out["adaptive, history, paced"] = triggerer_scale._measure(
            child, triggers, settings, debug=False, trigger_kwargs=forecast_kwargs
        )
        out["adaptive, history, paced"]["reads_per_minute"] = reads_per_minute
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parts 1 and 2 run concurrently (each style on its own emulator and loop); part 3 runs alone after them."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--parts", default="1,2,3", help="comma-separated parts to run (1, 2, 3)")
    args = p.parse_args(argv)
    parts = {part.strip() for part in args.parts.split(",")}
    scale = 0.1 if args.quick else 1.0
    part1_durations = [(60 + 3 * i) * (0.5 if args.quick else 1.0) for i in range(10 if args.quick else 20)]
    part2_durations = [(600 + 3 * i) * scale for i in range(10)]
    part2 = tuple(
        Style(s.label, max(1.0, s.poll_interval * scale), s.adaptive, s.paced, s.history, s.query_base, s.nodes)
        for s in PART2
    )

    common.isolate_airflow()
    from airflow_provider_dune.utils import run_durations, task_records
    from bench import _operator_harness as harness

    harness.install_in_memory_variables()
    run_durations.Variable = task_records.Variable  # type: ignore[misc]
    results: dict[str, Any] = {"quick": args.quick}
    started = time.time()
    with contextlib.ExitStack() as stack:
        jobs1, outcomes1 = (
            _run_styles(stack, PART1, part1_durations, limited=True, scale=1.0) if "1" in parts else ([], None)
        )
        jobs2, outcomes2 = (
            _run_styles(stack, part2, part2_durations, limited=False, scale=scale) if "2" in parts else ([], None)
        )
        runs = harness.run_in_threads([*jobs1, *jobs2])
        results["wall_seconds_parts_1_2"] = time.time() - started
        if outcomes1:
            results["free_plan"] = outcomes1(runs[: len(jobs1)])
        if outcomes2:
            results["ten_minute_pipelines"] = outcomes2(runs[len(jobs1) :])

    if "free_plan" in results:
        common.print_table(
            f"Part 1: {len(part1_durations)} pipelines at poll_interval 10 s on the Free plan "
            f"({FREE_READS_PER_MINUTE} reads, {FREE_WRITES_PER_MINUTE} writes a minute per key)",
            HEADERS,
            _rows(results["free_plan"]),
        )
    if "ten_minute_pipelines" in results:
        common.print_table(
            f"Part 2: reads per {part2_durations[0] / 60:g}-minute pipeline ({len(part2_durations)} pipelines a "
            "style, no rate limit)",
            HEADERS,
            _rows(results["ten_minute_pipelines"]),
        )
    if "3" in parts:
        scale_results = _scale_part3(args)
        results["triggerer_scale"] = scale_results
        rows = []
        for label, entry in scale_results.items():
            rows.append(
                [
                    label,
                    f"{sum(entry['events'].values())}/{entry['triggers']}",
                    entry["status_polls"],
                    entry["cpu_s_per_1000_polls"] or 0.0,
                    entry["rss_per_trigger_kb"],
                    entry["loop_lag_ms"].get("p99", 0.0),
                    entry["loop_lag_ms"].get("max", 0.0),
                    entry["detection_latency_s"].get("median", 0.0),
                    entry["detection_latency_s"].get("p99", 0.0),
                ]
            )
        common.print_table(
            "Part 3: triggers in one event loop (targets: RSS < 50 KB a trigger, loop lag p99 < 100 ms)",
            [
                "style",
                "events",
                "reads",
                "CPU s/1,000 reads",
                "KB/trigger",
                "lag p99 ms",
                "lag max ms",
                "latency s",
                "p99 s",
            ],
            rows,
        )
    common.write_results(NAME, results)
    return results


if __name__ == "__main__":
    main()
