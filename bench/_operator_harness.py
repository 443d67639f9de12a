"""Driving the provider's operators and triggers, and a dune-client SDK polling loop, inside one process.

Shared by ``bench.worker_slots`` and ``bench.api_calls``. Airflow must be isolated (``common.isolate_airflow``)
before this module is imported. A task instance is faked (XCom and the run registry's Variables are in-memory,
as in the unit tests); every Dune call is real HTTP to the emulator.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 2
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.utils import task_records

#: Pipeline states after which the SDK loop stops polling (what a user of ``get_pipeline_status`` checks).
SDK_TERMINAL_STATES = frozenset({"completed", "failed", "cancelled", "canceled"})


class InMemoryVariables:
    """Thread-safe stand-in for Airflow Variables (the run registry's storage; not Dune)."""

    def __init__(self) -> None:
        self._store: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._store.get(key, default)

    def set(self, key: str, value: str, description: str | None = None) -> None:
        with self._lock:
            self._store[key] = value

    def delete(self, key: str) -> None:
        with self._lock:
            self._store.pop(key, None)


def install_in_memory_variables() -> None:
    """Point the run registry at in-memory Variables (no metadata database in the benchmarks)."""
    task_records.Variable = InMemoryVariables()  # type: ignore[assignment, misc]


class BenchTaskInstance:
    """The few task-instance attributes the operators use (ids for the run registry, XCom push)."""

    def __init__(self, task_id: str, run_id: str = "bench__2024-06-01") -> None:
        self.dag_id = "dune_bench"
        self.task_id = task_id
        self.run_id = run_id
        self.map_index = -1
        self.try_number = 1
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def make_context(task_id: str) -> Any:
    """A minimal task context for calling ``execute`` directly."""
    return {"ti": BenchTaskInstance(task_id), "ds": "2024-06-01", "params": {}, "outlet_events": {}}


class TriggerLoop:
    """One asyncio loop in a background thread that runs triggers side by side, like Airflow's triggerer."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bench-triggerer", daemon=True)

    def __enter__(self) -> TriggerLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def submit(self, trigger: Any) -> Future[tuple[list[dict[str, Any]], float]]:
        """Run ``trigger.run()`` to its end in the loop; the future gives its event payloads and wall seconds."""

        async def drain() -> tuple[list[dict[str, Any]], float]:
            started = time.perf_counter()
            events = [event.payload async for event in trigger.run()]
            return events, time.perf_counter() - started

        return asyncio.run_coroutine_threadsafe(drain(), self.loop)


def pipeline_operator_factory(
    query_id: int, *, deferrable: bool, poll_interval: float, timeout: float, conn_id: str = "dune_default"
) -> Callable[[], DuneExecutePipelineOperator]:
    """Builds a fresh pipeline operator per call (as Airflow does for each try and for the resumed task)."""

    def make() -> DuneExecutePipelineOperator:
        return DuneExecutePipelineOperator(
            task_id=f"pipeline_{query_id}",
            query_id=query_id,
            dune_conn_id=conn_id,
            deferrable=deferrable,
            poll_interval=poll_interval,
            timeout=timeout,
        )

    return make


def rebuild_trigger(trigger: Any) -> Any:
    """Serialise and re-create a trigger, as Airflow does when it hands it to the triggerer."""
    classpath, kwargs = trigger.serialize()
    module_name, _, class_name = classpath.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**kwargs)


@dataclass
class DeferrableRun:
    """One run of a deferrable operator: worker time (execute + execute_complete) and triggerer time."""

    execute_seconds: float = 0.0
    complete_seconds: float = 0.0
    trigger_seconds: float = 0.0
    deferred: bool = False
    pipeline_execution_id: str | None = None
    detected_at: float | None = None
    outcome: str | None = None
    error: str | None = None

    @property
    def slot_seconds(self) -> float:
        return self.execute_seconds + self.complete_seconds


def run_deferrable(
    make_operator: Callable[[], DuneExecutePipelineOperator], triggers: TriggerLoop, task_id: str
) -> DeferrableRun:
    """execute() until TaskDeferred, the trigger in the shared loop, then execute_complete() on a new operator."""
    run = DeferrableRun()
    context = make_context(task_id)
    started = time.perf_counter()
    try:
        result = make_operator().execute(context)
    except TaskDeferred as deferral:
        run.execute_seconds = time.perf_counter() - started
        run.deferred = True
        run.pipeline_execution_id = getattr(deferral.trigger, "pipeline_execution_id", None)
        try:
            events, run.trigger_seconds = triggers.submit(rebuild_trigger(deferral.trigger)).result()
        except Exception as err:
            run.error = f"trigger: {type(err).__name__}: {err}"
            return run
        run.detected_at = time.time()
        started = time.perf_counter()
        try:
            result = make_operator().execute_complete(context, events[0] if events else None)
        except Exception as err:
            run.complete_seconds = time.perf_counter() - started
            run.error = f"{type(err).__name__}: {err}"
            run.outcome = (events[0] if events else {}).get("status")
            return run
        run.complete_seconds = time.perf_counter() - started
    except Exception as err:
        run.execute_seconds = time.perf_counter() - started
        run.error = f"{type(err).__name__}: {err}"
        return run
    else:
        run.execute_seconds = time.perf_counter() - started
        run.detected_at = time.time()
    run.outcome = result.get("outcome") if isinstance(result, Mapping) else None
    run.pipeline_execution_id = run.pipeline_execution_id or (
        result.get("pipeline_execution_id") if isinstance(result, Mapping) else None
    )
    return run


@dataclass
class SdkRun:
    """One pipeline started and awaited with the dune-client SDK."""

    pipeline_execution_id: str | None = None
    state: str | None = None
    polls: int = 0
    detected_at: float | None = None
    failed_at: float | None = None
    error: str | None = None


def sdk_run_pipeline(
    base_url: str, api_key: str, query_id: int, poll_seconds: float, deadline_seconds: float, run: SdkRun
) -> dict[str, Any]:
    """What a user writes with the SDK: start the pipeline, then poll its status every ``poll_seconds``.

    Errors are not caught: as in a task callable, they end the task. ``run`` is filled in as it goes.
    """
    from dune_client.client import DuneClient

    client = DuneClient(api_key=api_key, base_url=base_url)
    run.pipeline_execution_id = client.execute_query_pipeline(query_id, performance="medium").pipeline_execution_id
    deadline = time.monotonic() + deadline_seconds
    while True:
        status = client.get_pipeline_status(run.pipeline_execution_id)
        run.polls += 1
        run.state = status.status
        if status.status.lower() in SDK_TERMINAL_STATES:
            run.detected_at = time.time()
            return {"pipeline_execution_id": run.pipeline_execution_id, "status": status.status}
        if time.monotonic() > deadline:
            raise TimeoutError(f"pipeline {run.pipeline_execution_id} still {status.status} after the deadline")
        time.sleep(poll_seconds)


def sdk_run_guarded(base_url: str, api_key: str, query_id: int, poll_seconds: float, deadline_seconds: float) -> SdkRun:
    """:func:`sdk_run_pipeline`, recording (instead of raising) the error that would fail the task."""
    run = SdkRun()
    try:
        sdk_run_pipeline(base_url, api_key, query_id, poll_seconds, deadline_seconds, run)
    except Exception as err:
        run.failed_at = time.time()
        run.error = f"{type(err).__module__}.{type(err).__name__}: {err}"
    return run


def run_in_threads(jobs: Sequence[Callable[[], Any]], stagger: float = 0.0) -> list[Any]:
    """Run each job in its own thread (started ``stagger`` seconds apart); return results in order."""
    results: list[Any] = [None] * len(jobs)

    def work(index: int, job: Callable[[], Any]) -> None:
        try:
            results[index] = job()
        except BaseException as err:  # a job is expected to record its own errors; keep the others going
            results[index] = err

    threads = [threading.Thread(target=work, args=(i, job), name=f"bench-job-{i}") for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
        if stagger:
            time.sleep(stagger)
    for thread in threads:
        thread.join()
    return results


# -- reading the emulator's request log ------------------------------------------------------------------------


def pipeline_requests(requests: Iterable[Mapping[str, Any]], query_id: int) -> list[Mapping[str, Any]]:
    """The requests that started pipelines of ``query_id`` plus every status read of those pipelines."""
    requests = list(requests)
    ids: set[str] = set()
    mine: list[Mapping[str, Any]] = []
    for request in requests:
        if request["endpoint"] == "execute_query_pipeline" and f"/query/{query_id}/" in request["path"]:
            mine.append(request)
            try:
                body = json.loads(request.get("response_body") or "{}")
            except ValueError:
                body = {}
            if isinstance(body, dict) and body.get("pipeline_execution_id"):
                ids.add(body["pipeline_execution_id"])
    for request in requests:
        if request["endpoint"] != "execute_query_pipeline" and any(pid in request["path"] for pid in ids):
            mine.append(request)
    return sorted(mine, key=lambda r: r["at"])


def started_at(requests: Iterable[Mapping[str, Any]], pipeline_execution_id: str | None) -> float | None:
    """When the emulator accepted the execute call that created ``pipeline_execution_id``."""
    if not pipeline_execution_id:
        return None
    for request in requests:
        if (
            request["endpoint"] == "execute_query_pipeline"
            and request.get("status") == 200
            and pipeline_execution_id in (request.get("response_body") or "")
        ):
            return float(request["at"])
    return None


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """Most requests that arrived within any ``window`` seconds."""
    ordered = sorted(times)
    best = 0
    low = 0
    for high, value in enumerate(ordered):
        while value - ordered[low] >= window:
            low += 1
        best = max(best, high - low + 1)
    return best


def gaps_after_429(requests: Sequence[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], str]) -> list[float]:
    """Seconds from each 429 to the same client's next request (``key`` names the client of a request)."""
    by_client: dict[str, list[Mapping[str, Any]]] = {}
    for request in sorted(requests, key=lambda r: r["at"]):
        by_client.setdefault(key(request), []).append(request)
    gaps: list[float] = []
    for sequence in by_client.values():
        for current, following in itertools.pairwise(sequence):
            if current.get("status") == 429:
                gaps.append(float(following["at"]) - float(current["at"]))
    return gaps
