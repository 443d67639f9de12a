"""Triggerer scale: many ``DunePipelineTrigger``s in one asyncio loop, as Airflow's triggerer runs them.

Starts N pipelines in the emulator (a child process, so its CPU is not counted), then runs N triggers in this
process's event loop and measures: CPU seconds per 1,000 status polls, RSS per trigger, event-loop lag (a
monitor coroutine that asks to sleep 50 ms and records how late it wakes), and detection latency (a node's
``execution_ended_at`` from Dune -> the trigger's event). Triggers start spread over one poll interval, as
tasks defer at different times in a real triggerer. A second, smaller pass runs with asyncio debug mode to
list callbacks that held the loop longer than 50 ms (blocking calls).

    python -m bench.triggerer_scale [--quick] [--triggers 1000] [--poll-interval 10]
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from bench import common

TARGET_P99_LAG_MS = 100.0
TARGET_KB_PER_TRIGGER = 50.0
LAG_PROBE_SECONDS = 0.05
SLOW_CALLBACK_SECONDS = 0.05
QUERY_ID_BASE = 9000
QUERY_COUNT = 20
#: When each pipeline was started (for triggers given a forecast: ``bench.budget_polling``).
STARTED_AT: dict[str, float] = {}
TriggerKwargs = Callable[[int, float], dict[str, Any]]


class _SlowCallbacks(logging.Handler):
    """Collects asyncio debug mode's 'Executing <...> took N seconds' warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "took" in message and "seconds" in message:
            self.messages.append(message)


class _GcPauses:
    """Times every garbage collection while installed (a full collection of Airflow's heap stalls the loop)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((int(info.get("generation", 0)), time.perf_counter() - self._started))

    def __enter__(self) -> _GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self)

    def summary(self) -> dict[str, Any]:
        full = [seconds for generation, seconds in self.pauses if generation == 2]
        return {
            "collections": len(self.pauses),
            "full_collections": len(full),
            "longest_ms": max((seconds for _, seconds in self.pauses), default=0.0) * 1000,
            "longest_full_ms": max(full, default=0.0) * 1000,
        }


def _parse_ts(value: str | None) -> float | None:
    if not value:
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    return stamp + (float("0." + frac) if frac else 0.0)


def _start_pipelines(api_url: str, count: int) -> list[str]:
    """Start ``count`` pipelines (setup, not measured) through the provider's sync hook."""
    from concurrent.futures import ThreadPoolExecutor

    from airflow_provider_dune.hooks.dune import DuneHook

    hook = DuneHook()

    def start(i: int) -> str:
        began = time.time()
        pipeline_execution_id = hook.execute_query_pipeline(QUERY_ID_BASE + i % QUERY_COUNT)
        STARTED_AT[pipeline_execution_id] = began
        return pipeline_execution_id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(start, range(count)))
    hook.close()
    return ids


async def _monitor_lag(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        began = loop.time()
        await asyncio.sleep(LAG_PROBE_SECONDS)
        lags.append(max(0.0, loop.time() - began - LAG_PROBE_SECONDS))


async def _run_one(trigger: Any, delay: float, events: dict[str, tuple[float, dict[str, Any]]]) -> None:
    await asyncio.sleep(delay)
    async for event in trigger.run():
        events[trigger.pipeline_execution_id] = (time.time(), event.payload)


async def _run_triggers(
    ids: Sequence[str], poll_interval: float, *, debug: bool, trigger_kwargs: TriggerKwargs | None = None
) -> dict[str, Any]:
    from airflow_provider_dune.triggers.pipeline import DunePipelineTrigger

    loop = asyncio.get_running_loop()
    slow = _SlowCallbacks()
    if debug:
        loop.set_debug(True)
        loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
        logging.getLogger("asyncio").addHandler(slow)
    rng = random.Random(7)
    events: dict[str, tuple[float, dict[str, Any]]] = {}
    lags: list[float] = []
    stop = asyncio.Event()
    monitor = asyncio.create_task(_monitor_lag(stop, lags))

    gc.collect()
    rss_before = common.rss_bytes()
    cpu_before = common.cpu_seconds()
    began = time.monotonic()
    triggers = [
        DunePipelineTrigger(
            pipeline_execution_id=pipeline_id,
            poll_interval=poll_interval,
            **(trigger_kwargs(index, STARTED_AT[pipeline_id]) if trigger_kwargs else {}),
        )
        for index, pipeline_id in enumerate(ids)
    ]
    tasks = [asyncio.create_task(_run_one(t, rng.uniform(0, poll_interval), events)) for t in triggers]

    rss_peak = rss_before
    with _GcPauses() as gc_pauses:
        while not all(task.done() for task in tasks):
            await asyncio.sleep(0.5)
            rss_peak = max(rss_peak, common.rss_bytes())
    elapsed = time.monotonic() - began
    cpu_used = common.cpu_seconds() - cpu_before
    stop.set()
    await monitor
    errors = [task.exception() for task in tasks if task.exception() is not None]
    if debug:
        logging.getLogger("asyncio").removeHandler(slow)
    return {
        "events": events,
        "elapsed_s": elapsed,
        "cpu_s": cpu_used,
        "rss_before": rss_before,
        "rss_peak": rss_peak,
        "lags_ms": [lag * 1000 for lag in lags],
        "errors": [repr(e) for e in errors],
        "slow_callbacks": slow.messages,
        "gc": gc_pauses.summary(),
    }


def _end_times(ids: Sequence[str]) -> dict[str, float]:
    """When Dune says each pipeline's last node ended (read after the measured window)."""
    from airflow_provider_dune.hooks.dune import DuneHook

    ended: dict[str, float] = {}
    with DuneHook() as hook:
        for pipeline_id in ids:
            for node in hook.get_pipeline_status(pipeline_id).nodes:
                if node.execution_id:
                    body = hook.get_execution_status(node.execution_id).to_dict()
                    stamp = _parse_ts(body.get("execution_ended_at"))
                    if stamp is not None:
                        ended[pipeline_id] = max(ended.get(pipeline_id, 0.0), stamp)
    return ended


def _measure(
    child: Any, count: int, args: Any, *, debug: bool, trigger_kwargs: TriggerKwargs | None = None
) -> dict[str, Any]:
    before = child.client.counts()
    ids = _start_pipelines(child.url, count)
    started = child.client.counts()
    connections_before = child.client.connections_opened()
    run = asyncio.run(_run_triggers(ids, args.poll_interval, debug=debug, trigger_kwargs=trigger_kwargs))
    after = child.client.counts()
    connections = child.client.connections_opened() - connections_before
    polls = after.get("get_pipeline_status", 0) - started.get("get_pipeline_status", 0)
    other_reads = sum(after.values()) - sum(started.values()) - polls
    del before
    ended = _end_times(ids) if not debug else {}
    latencies = [run["events"][i][0] - ended[i] for i in ids if i in run["events"] and i in ended]
    statuses: dict[str, int] = {}
    for _, payload in run["events"].values():
        statuses[payload["status"]] = statuses.get(payload["status"], 0) + 1
    return {
        "triggers": count,
        "poll_interval_s": args.poll_interval,
        "elapsed_s": run["elapsed_s"],
        "events": statuses,
        "missing_events": count - len(run["events"]),
        "errors": run["errors"][:5],
        "status_polls": polls,
        "other_requests": other_reads,
        "tcp_connections_opened": connections,
        "cpu_s": run["cpu_s"],
        "cpu_s_per_1000_polls": run["cpu_s"] / polls * 1000 if polls else None,
        "rss_per_trigger_kb": (run["rss_peak"] - run["rss_before"]) / count / 1024,
        "rss_before_mb": run["rss_before"] / 2**20,
        "rss_peak_mb": run["rss_peak"] / 2**20,
        "loop_lag_ms": common.summarize(run["lags_ms"]),
        "detection_latency_s": common.summarize(latencies),
        "slow_callbacks": len(run["slow_callbacks"]),
        "slow_callback_examples": run["slow_callbacks"][:5],
        "gc_pauses": run["gc"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser(__doc__ or "")
    p.add_argument("--triggers", type=int, default=1000)
    p.add_argument("--poll-interval", type=float, default=10.0)
    p.add_argument("--min-duration", type=float, default=30.0, help="shortest pipeline, seconds")
    p.add_argument("--max-duration", type=float, default=60.0, help="longest pipeline, seconds")
    p.add_argument("--debug-triggers", type=int, default=200, help="triggers in the asyncio debug-mode pass")
    p.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after start-up, so full collections skip the objects of Airflow's imports",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.triggers, args.debug_triggers = min(args.triggers, 100), 20
        args.poll_interval, args.min_duration, args.max_duration = 2.0, 4.0, 8.0

    common.isolate_airflow()
    with common.bench_emulator("triggerer_scale") as child:
        common.set_dune_connection(child.url, timeout=30)
        for i in range(QUERY_COUNT):
            share = i / max(1, QUERY_COUNT - 1)
            duration = args.min_duration + share * (args.max_duration - args.min_duration)
            child.client.add_query(QUERY_ID_BASE + i, name=f"bench_{i}", duration=duration, pending=0.5)
        _measure(child, 3, args, debug=False)  # warm-up: imports, first connection lookup
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
        main_pass = _measure(child, args.triggers, args, debug=False)
        debug_pass = _measure(child, args.debug_triggers, args, debug=True)

    lag = main_pass["loop_lag_ms"]
    latency = main_pass["detection_latency_s"]
    met_lag = lag.get("p99", 0.0) < TARGET_P99_LAG_MS
    met_memory = main_pass["rss_per_trigger_kb"] < TARGET_KB_PER_TRIGGER
    common.print_table(
        f"Triggerer scale: {main_pass['triggers']} DunePipelineTriggers in one event loop, poll interval "
        f"{args.poll_interval:g} s, pipelines of {args.min_duration:g}-{args.max_duration:g} s",
        ["measure", "value", "target", "met"],
        [
            ["events received (status: count)", str(main_pass["events"]), f"{main_pass['triggers']}", ""],
            ["status polls", main_pass["status_polls"], "", ""],
            ["CPU seconds per 1,000 polls", main_pass["cpu_s_per_1000_polls"] or 0.0, "", ""],
            ["CPU share of one core", main_pass["cpu_s"] / main_pass["elapsed_s"], "< 1", ""],
            ["RSS per trigger (KB)", main_pass["rss_per_trigger_kb"], TARGET_KB_PER_TRIGGER, met_memory],
            ["TCP connections opened", main_pass["tcp_connections_opened"], "", ""],
            ["event-loop lag p99 (ms)", lag.get("p99", 0.0), TARGET_P99_LAG_MS, met_lag],
            ["event-loop lag max (ms)", lag.get("max", 0.0), "", ""],
            ["longest garbage collection (ms)", main_pass["gc_pauses"]["longest_ms"], "", ""],
            ["detection latency median (s)", latency.get("median", 0.0), f"<= {args.poll_interval:g}", ""],
            ["detection latency p99 (s)", latency.get("p99", 0.0), f"<= {args.poll_interval:g}", ""],
            [
                f"callbacks > {SLOW_CALLBACK_SECONDS * 1000:g} ms (debug pass, {debug_pass['triggers']} triggers)",
                debug_pass["slow_callbacks"],
                0,
                debug_pass["slow_callbacks"] == 0,
            ],
        ],
    )
    for example in debug_pass["slow_callback_examples"]:
        print(f"  slow callback: {example[:200]}")
    gc_debug = debug_pass["gc_pauses"]
    print(
        f"  garbage collections during the debug pass: {gc_debug['collections']} "
        f"({gc_debug['full_collections']} full), longest {gc_debug['longest_ms']:.0f} ms"
    )
    results = {
        "settings": vars(args),
        "main": main_pass,
        "debug_pass": debug_pass,
        "targets": {"p99_loop_lag_ms": TARGET_P99_LAG_MS, "kb_per_trigger": TARGET_KB_PER_TRIGGER},
        "met": {"p99_loop_lag": met_lag, "memory_per_trigger": met_memory},
    }
    common.write_results("triggerer_scale", results)
    return results


if __name__ == "__main__":
    main()
