"""Worker-slot seconds per pipeline: deferrable vs non-deferrable operator vs a PythonOperator using the SDK.

A worker slot is held while the worker runs the task's code. For each pipeline duration D (one query node
executing for D seconds in the emulator) three task styles wait for the same kind of pipeline, side by side
in one run (threads; the emulator is a child process):

* ``deferrable``: ``DuneExecutePipelineOperator(deferrable=True)``. Slot time = ``execute()`` until it
  raises ``TaskDeferred`` + ``execute_complete()`` on a fresh operator. The trigger runs meanwhile in one
  shared asyncio loop (standing in for the triggerer); its wall time is reported apart, it holds no slot.
* ``worker``: the same operator with ``deferrable=False``. Slot time = the whole ``execute()``.
* ``sdk``: a ``PythonOperator`` whose callable uses the dune-client SDK (``execute_query_pipeline``, then
  ``get_pipeline_status`` every ``POLL_FREQUENCY_SECONDS`` until a terminal state). Slot = whole ``execute()``.

The provider operators poll every 10 s (the value recommended for Dune's Free plan, 40 reads/minute; the
operator's default is 30 s). Each code path runs once on a tiny pipeline first, so imports and first-connection
setup are not counted. Airflow's own task start-up cost (process start, DAG parse), which the deferrable
path pays twice, is outside what is measured here.

    python -m bench.worker_slots [--quick]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import common

NAME = "worker_slots"
POLL_INTERVAL = 10.0
TARGET_DEFERRABLE_SLOT_SECONDS = 2.0
STYLES = ("deferrable", "worker", "sdk")
WARMUP_QUERY_ID = 8999


def _operator_factory(query_id: int, deferrable: bool, timeout: float, poll_interval: float) -> Callable[[], Any]:
    from bench import _operator_harness as harness

    return harness.pipeline_operator_factory(
        query_id, deferrable=deferrable, poll_interval=poll_interval, timeout=timeout
    )


def _sdk_python_operator(base_url: str, query_id: int, timeout: float) -> Any:
    from airflow.providers.standard.operators.python import PythonOperator
    from dune_client.api.extensions import POLL_FREQUENCY_SECONDS

    from bench import _operator_harness as harness

    def run_pipeline_with_sdk(query_id: int) -> dict[str, Any]:
        run = harness.SdkRun()
        return harness.sdk_run_pipeline(base_url, common.BENCH_API_KEY, query_id, POLL_FREQUENCY_SECONDS, timeout, run)

    return PythonOperator(
        task_id=f"sdk_{query_id}", python_callable=run_pipeline_with_sdk, op_kwargs={"query_id": query_id}
    )


def _job(
    style: str, base_url: str, query_id: int, timeout: float, triggers: Any, poll_interval: float = POLL_INTERVAL
) -> Callable[[], dict[str, Any]]:
    """One task of ``style`` waiting for one pipeline of ``query_id``; returns its timings."""
    from bench import _operator_harness as harness

    def deferrable() -> dict[str, Any]:
        run = harness.run_deferrable(
            _operator_factory(query_id, True, timeout, poll_interval), triggers, f"deferrable_{query_id}"
        )
        return {
            "slot_seconds": run.slot_seconds,
            "execute_seconds": run.execute_seconds,
            "execute_complete_seconds": run.complete_seconds,
            "triggerer_seconds": run.trigger_seconds,
            "deferred": run.deferred,
            "outcome": run.outcome,
            "error": run.error,
        }

    def timed(call: Callable[[], Any]) -> dict[str, Any]:
        started = time.perf_counter()
        outcome, error = None, None
        try:
            result = call()
            outcome = result.get("outcome") or result.get("status")
        except Exception as err:
            error = f"{type(err).__name__}: {err}"
        return {"slot_seconds": time.perf_counter() - started, "outcome": outcome, "error": error}

    def worker() -> dict[str, Any]:
        return timed(
            lambda: _operator_factory(query_id, False, timeout, poll_interval)().execute(
                harness.make_context(f"worker_{query_id}")
            )
        )

    def sdk() -> dict[str, Any]:
        return timed(
            lambda: _sdk_python_operator(base_url, query_id, timeout).execute(harness.make_context(f"sdk_{query_id}"))
        )

    return {"deferrable": deferrable, "worker": worker, "sdk": sdk}[style]


def _query_id(style: str, duration_index: int, copy: int) -> int:
    return 7000 + 100 * STYLES.index(style) + 10 * duration_index + copy


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, print and save worker-slot seconds per pipeline for each task style and duration."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=None, help="pipelines per style and duration (median reported)")
    args = p.parse_args(argv)
    durations: Sequence[float] = (5.0, 2.0) if args.quick else (60.0, 10.0)
    copies = args.copies or (1 if args.quick else 3)

    common.isolate_airflow()
    from dune_client.api.extensions import POLL_FREQUENCY_SECONDS

    from bench import _operator_harness as harness

    harness.install_in_memory_variables()
    results: dict[str, Any] = {
        "poll_interval_seconds": POLL_INTERVAL,
        "sdk_poll_seconds": POLL_FREQUENCY_SECONDS,
        "durations_seconds": list(durations),
        "copies": copies,
        "target_deferrable_slot_seconds": TARGET_DEFERRABLE_SLOT_SECONDS,
    }
    with common.bench_emulator(NAME) as child, harness.TriggerLoop() as triggers:
        common.set_dune_connection(child.url)
        base_url = child.client.base_url
        child.client.add_query(WARMUP_QUERY_ID, duration=0.2)
        for style in STYLES:  # warm-up: imports, first connection; not measured
            _job(style, base_url, WARMUP_QUERY_ID, 30.0, triggers, poll_interval=0.1)()

        jobs: list[Callable[[], dict[str, Any]]] = []
        keys: list[tuple[float, str]] = []
        for d_index, duration in enumerate(durations):
            for copy in range(copies):
                for style in STYLES:
                    query_id = _query_id(style, d_index, copy)
                    child.client.add_query(query_id, duration=duration)
                    jobs.append(_job(style, base_url, query_id, duration * 3 + 120, triggers))
                    keys.append((duration, style))
        started = time.perf_counter()
        # Staggered starts keep the short worker-side phases of different tasks from contending for the GIL.
        outputs = harness.run_in_threads(jobs, stagger=0.2)
        results["wall_seconds"] = time.perf_counter() - started
        counts = child.client.counts()

    per_duration: dict[str, Any] = {}
    rows = []
    for duration in durations:
        entry: dict[str, Any] = {}
        for style in STYLES:
            samples: list[dict[str, Any]] = [
                out if isinstance(out, dict) else {"error": repr(out)}
                for (d, s), out in zip(keys, outputs, strict=True)
                if d == duration and s == style
            ]
            slots = [s["slot_seconds"] for s in samples if "slot_seconds" in s]
            entry[style] = {
                "slot_seconds_median": statistics.median(slots) if slots else None,
                "slot_seconds": slots,
                "runs": samples,
                "errors": [s["error"] for s in samples if s.get("error")],
            }
            if style == "deferrable":
                entry[style]["triggerer_seconds_median"] = statistics.median(
                    [s.get("triggerer_seconds", 0.0) for s in samples]
                )
        deferrable = entry["deferrable"]["slot_seconds_median"] or float("nan")
        worker = entry["worker"]["slot_seconds_median"] or float("nan")
        sdk = entry["sdk"]["slot_seconds_median"] or float("nan")
        entry["ratio_worker_to_deferrable"] = worker / deferrable
        entry["ratio_sdk_to_deferrable"] = sdk / deferrable
        entry["target_met"] = deferrable < TARGET_DEFERRABLE_SLOT_SECONDS and not entry["deferrable"]["errors"]
        per_duration[f"{duration:g}"] = entry
        rows.append(
            [
                f"{duration:g}",
                deferrable,
                entry["deferrable"]["triggerer_seconds_median"],
                worker,
                sdk,
                entry["ratio_worker_to_deferrable"],
                entry["ratio_sdk_to_deferrable"],
                "yes" if entry["target_met"] else "NO",
            ]
        )
    results["by_duration"] = per_duration
    results["emulator_counts"] = counts
    results["target_met"] = all(e["target_met"] for e in per_duration.values())

    common.print_table(
        f"Worker-slot seconds per pipeline (median of {copies}; provider poll_interval={POLL_INTERVAL:g} s, "
        f"the Free-plan recommendation; SDK polls every {POLL_FREQUENCY_SECONDS} s)",
        [
            "D (s)",
            "deferrable slot",
            "triggerer (no slot)",
            "non-deferrable slot",
            "SDK PythonOperator slot",
            "non-def/def",
            "SDK/def",
            f"def < {TARGET_DEFERRABLE_SLOT_SECONDS:g} s",
        ],
        rows,
    )
    errors = [(key, e) for key, entry in per_duration.items() for s in STYLES for e in entry[s]["errors"]]
    for key, error in errors:
        print(f"error (D={key} s): {error}")
    print(
        f"\nTarget (deferrable holds a slot < {TARGET_DEFERRABLE_SLOT_SECONDS:g} s per pipeline, for every D): "
        f"{'met' if results['target_met'] else 'NOT met'}. Slot time excludes Airflow's task start-up, which "
        "the deferrable path pays twice (start and resume)."
    )
    common.write_results(NAME, results)
    return results


if __name__ == "__main__":
    main()
