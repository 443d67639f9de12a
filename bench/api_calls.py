"""API calls per pipeline vs the SDK's default polling, and behaviour under the Free plan's 40 reads/minute.

Part 1 (no rate limit): one pipeline of D seconds per client style, side by side against one emulator, and
the requests the emulator received for each (attributed by query id and pipeline execution id):

* ``provider 30 s``: ``DuneExecutePipelineOperator(deferrable=True)`` at its default ``poll_interval`` (30 s):
  ``execute()`` on the "worker", the trigger in an asyncio loop, then ``execute_complete()``.
* ``provider 10 s``: the same at ``poll_interval=10`` (the Free-plan recommendation).
* ``SDK 1 s``: dune-client's ``execute_query_pipeline`` then ``get_pipeline_status`` every
  ``POLL_FREQUENCY_SECONDS`` (1 s, the SDK's default for its own waiting loops) until a terminal state.

Part 2 (emulator rate limit 40 reads/minute and 15 writes/minute per key, Dune's Free plan; token buckets
without ``Retry-After``, as Dune documents none): N pipelines of D seconds started at once by each style, each
style against its own emulator so they do not share a budget. Provider: N deferrable operators whose triggers
run concurrently in one asyncio loop (the triggerer), poll_interval 10 s, the connection's default retry
settings (5 tries, backoff 1-60 s with jitter; the error backoff of the polling loop on top). SDK: N threads,
each the 1 s loop above with the SDK's own urllib3 retries (5 retries on 429, backoff factor 0.5). Reported:
requests, 429s, pipelines whose completion was detected (or the error that ended the client), detection
latency (pipeline end -> client saw the terminal state), and how bunched the requests were (most requests in
any 1-second window, and the gap between a 429 and the same client's next request). A third row runs the
provider with 4N pipelines, which at 6 reads/min each ask for three times the budget, to show its backoff; a
fourth runs the same with the shared per-key 429 cooldown switched off for its key (each client then waits
out a cooldown of its own after its 429s), for comparison.

    python -m bench.api_calls [--quick]
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench import common

NAME = "api_calls"
FREE_READS_PER_MINUTE = 40
FREE_WRITES_PER_MINUTE = 15
LIMITED_POLL_INTERVAL = 10.0
PIPELINES = 5
SINGLE_STYLES = (("provider 30 s", 30.0, 6101), ("provider 10 s", 10.0, 6102), ("SDK 1 s", None, 6103))
PROVIDER_QUERY_BASE = 6200
SDK_QUERY_BASE = 6300
OVER_QUERY_BASE = 6400
OVER_FACTOR = 4  # 4N pipelines x 6 reads/min each is three times the Free budget
LIMITED_CONN_ID = "dune_free_plan"
OVER_CONN_ID = "dune_free_plan_over"
UNSHARED_QUERY_BASE = 6500
UNSHARED_CONN_ID = "dune_free_plan_over_unshared"


def _provider_job(
    query_id: int, poll_interval: float, conn_id: str, timeout: float, triggers: Any
) -> Callable[[], Any]:
    from bench import _operator_harness as harness

    make = harness.pipeline_operator_factory(
        query_id, deferrable=True, poll_interval=poll_interval, timeout=timeout, conn_id=conn_id
    )
    return lambda: harness.run_deferrable(make, triggers, f"pipeline_{query_id}")


def _sdk_job(base_url: str, query_id: int, timeout: float) -> Callable[[], Any]:
    from dune_client.api.extensions import POLL_FREQUENCY_SECONDS

    from bench import _operator_harness as harness

    return lambda: harness.sdk_run_guarded(base_url, common.BENCH_API_KEY, query_id, POLL_FREQUENCY_SECONDS, timeout)


def _latency(run: Any, requests: Sequence[Mapping[str, Any]], duration: float) -> float | None:
    """Seconds from the pipeline's end (emulator start of the run + D) to the client seeing it ended."""
    from bench import _operator_harness as harness

    start = harness.started_at(requests, run.pipeline_execution_id)
    if start is None or run.detected_at is None:
        return None
    return run.detected_at - (start + duration)


def _request_stats(requests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    reads = [r for r in requests if r["endpoint"] != "execute_query_pipeline"]
    return {
        "requests": len(requests),
        "execute_calls": len(requests) - len(reads),
        "status_reads": len(reads),
        "http_429": sum(1 for r in requests if r.get("status") == 429),
        "statuses": dict(Counter(str(r.get("status")) for r in requests)),
    }


def _single(
    runs: Mapping[str, Any], requests: Sequence[Mapping[str, Any]], duration: float
) -> tuple[dict[str, Any], list[list[Any]]]:
    from bench import _operator_harness as harness

    out: dict[str, Any] = {}
    for label, poll, query_id in SINGLE_STYLES:
        run = runs[label]
        mine = harness.pipeline_requests(requests, query_id)
        stats = _request_stats(mine)
        out[label] = {
            "poll_seconds": poll if poll is not None else "SDK default",
            **stats,
            "status_reads_per_minute_of_pipeline": stats["status_reads"] / (duration / 60.0),
            "detection_latency_seconds": _latency(run, requests, duration),
            "error": run.error,
        }
    sdk = out["SDK 1 s"]["requests"]
    rows = []
    for label, _, _ in SINGLE_STYLES:
        entry = out[label]
        entry["sdk_requests_per_this"] = sdk / entry["requests"] if entry["requests"] else None
        latency = entry["detection_latency_seconds"]
        rows.append(
            [
                label,
                entry["requests"],
                entry["execute_calls"],
                entry["status_reads"],
                entry["status_reads_per_minute_of_pipeline"],
                latency if latency is not None else "not detected",
                entry["sdk_requests_per_this"] or 0.0,
            ]
        )
    return out, rows


def _limited(
    runs: Sequence[Any],
    query_ids: Sequence[int],
    requests: Sequence[Mapping[str, Any]],
    duration: float,
    started: float,
) -> dict[str, Any]:
    from bench import _operator_harness as harness

    times = [float(r["at"]) for r in requests]
    first_429 = min((float(r["at"]) for r in requests if r.get("status") == 429), default=None)
    gaps: list[float] = []
    per_client_burst = 0
    for query_id in query_ids:
        mine = harness.pipeline_requests(requests, query_id)
        gaps += harness.gaps_after_429(mine, key=lambda _r: "one client")
        per_client_burst = max(per_client_burst, harness.max_in_window([float(r["at"]) for r in mine]))
    latencies = [lat for lat in (_latency(run, requests, duration) for run in runs) if lat is not None]
    errors = Counter(_short_error(run.error) for run in runs if run.error)
    failed_after = [
        run.failed_at - started for run in runs if getattr(run, "failed_at", None) is not None and run.error
    ]
    detected = sum(1 for run in runs if run.detected_at is not None and not run.error)
    span = (max(times) - min(times)) / 60.0 if len(times) > 1 else 0.0
    accepted_reads = sum(1 for r in requests if r["endpoint"] != "execute_query_pipeline" and r.get("status") == 200)
    return {
        **_request_stats(requests),
        "pipelines": len(runs),
        "completion_detected": detected,
        "errors": dict(errors),
        "failed_after_seconds": failed_after,
        "detection_latency_seconds": common.summarize(latencies),
        "max_requests_in_any_1s": harness.max_in_window(times),
        "max_requests_in_any_1s_after_first_429": (
            harness.max_in_window([t for t in times if t >= first_429]) if first_429 is not None else 0
        ),
        "max_requests_in_any_1s_one_client": per_client_burst,
        "gap_after_429_seconds": common.summarize(gaps),
        "accepted_reads_per_minute": accepted_reads / span if span else None,
        "span_minutes": span,
    }


def _bypass_cooldown(api_url: str) -> None:
    """Give each client (a worker thread, a trigger's task) of the bench key at ``api_url`` a 429 cooldown of its
    own, instead of the one every client of the key shares."""
    import contextvars

    from airflow_provider_dune.api.budget import PACERS, Bucket, KeyPacer, KeyPacers

    bypassed = {KeyPacers.key_for(api_url, common.BENCH_API_KEY, bucket) for bucket in ("read", "write")}
    own: contextvars.ContextVar[dict[str, KeyPacer]] = contextvars.ContextVar("bench_own_pacers")
    shared = PACERS.get

    def get(base_url: str, api_key: str, bucket: Bucket) -> KeyPacer:
        key = KeyPacers.key_for(base_url, api_key, bucket)
        if key not in bypassed:
            return shared(base_url, api_key, bucket)
        pacers = own.get(None)
        if pacers is None:
            pacers = {}
            own.set(pacers)
        return pacers.setdefault(key, KeyPacer())

    PACERS.get = get  # type: ignore[method-assign]


def _short_error(error: str | None) -> str:
    """An error message without the parts that differ per pipeline (host, port, ids), so equal errors group."""
    text = re.sub(r"HTTPConnectionPool\(host='[^']*', port=\d+\): ", "", error or "")
    text = re.sub(r"executions/[0-9A-Za-z]+", "executions/<id>", text)
    return text[:300]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Count API calls per client style, then run N pipelines per style under the Free plan's rate limit."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--pipelines", type=int, default=PIPELINES, help="concurrent pipelines under the rate limit")
    args = p.parse_args(argv)
    single_d = 10.0 if args.quick else 60.0
    limited_d = 15.0 if args.quick else 60.0
    n = args.pipelines
    timeout = max(single_d, limited_d) * 3 + 120

    common.isolate_airflow()
    from dune_client.api.extensions import POLL_FREQUENCY_SECONDS

    from bench import _operator_harness as harness

    harness.install_in_memory_variables()
    results: dict[str, Any] = {
        "sdk_poll_seconds": POLL_FREQUENCY_SECONDS,
        "single": {"duration_seconds": single_d},
        "rate_limited": {
            "duration_seconds": limited_d,
            "pipelines": n,
            "read_per_minute": FREE_READS_PER_MINUTE,
            "write_per_minute": FREE_WRITES_PER_MINUTE,
            "provider_poll_interval_seconds": LIMITED_POLL_INTERVAL,
            "provider_retry": "connection defaults (max_retries=5, retry_min_wait=1, retry_max_wait=60)",
            "sdk_retry": "urllib3 Retry(total=5, backoff_factor=0.5, status_forcelist={429, 502, 503, 504})",
        },
    }
    with contextlib.ExitStack() as stack:
        single = stack.enter_context(common.bench_emulator(f"{NAME}.single"))
        provider_emu = stack.enter_context(common.bench_emulator(f"{NAME}.limited_provider"))
        sdk_emu = stack.enter_context(common.bench_emulator(f"{NAME}.limited_sdk"))
        over_emu = stack.enter_context(common.bench_emulator(f"{NAME}.limited_provider_over"))
        unshared_emu = stack.enter_context(common.bench_emulator(f"{NAME}.limited_provider_unshared"))
        _bypass_cooldown(unshared_emu.url)
        single_triggers = stack.enter_context(harness.TriggerLoop())
        limited_triggers = stack.enter_context(harness.TriggerLoop())
        common.set_dune_connection(single.url)
        common.set_dune_connection(provider_emu.url, conn_id=LIMITED_CONN_ID)
        common.set_dune_connection(over_emu.url, conn_id=OVER_CONN_ID)
        common.set_dune_connection(unshared_emu.url, conn_id=UNSHARED_CONN_ID)
        for emulator in (provider_emu, sdk_emu, over_emu, unshared_emu):
            emulator.client.set_rate_limit(FREE_READS_PER_MINUTE, FREE_WRITES_PER_MINUTE)

        jobs: list[Callable[[], Any]] = []
        for _, poll, query_id in SINGLE_STYLES:
            single.client.add_query(query_id, duration=single_d)
            if poll is None:
                jobs.append(_sdk_job(single.client.base_url, query_id, timeout))
            else:
                jobs.append(_provider_job(query_id, poll, "dune_default", timeout, single_triggers))
        provider_ids = [PROVIDER_QUERY_BASE + i for i in range(n)]
        sdk_ids = [SDK_QUERY_BASE + i for i in range(n)]
        for query_id in provider_ids:
            provider_emu.client.add_query(query_id, duration=limited_d)
            jobs.append(_provider_job(query_id, LIMITED_POLL_INTERVAL, LIMITED_CONN_ID, timeout, limited_triggers))
        for query_id in sdk_ids:
            sdk_emu.client.add_query(query_id, duration=limited_d)
            jobs.append(_sdk_job(sdk_emu.client.base_url, query_id, timeout))
        over_ids = [OVER_QUERY_BASE + i for i in range(OVER_FACTOR * n)]
        for query_id in over_ids:
            over_emu.client.add_query(query_id, duration=limited_d)
            jobs.append(_provider_job(query_id, LIMITED_POLL_INTERVAL, OVER_CONN_ID, timeout, limited_triggers))
        unshared_ids = [UNSHARED_QUERY_BASE + i for i in range(OVER_FACTOR * n)]
        for query_id in unshared_ids:
            unshared_emu.client.add_query(query_id, duration=limited_d)
            jobs.append(_provider_job(query_id, LIMITED_POLL_INTERVAL, UNSHARED_CONN_ID, timeout, limited_triggers))

        started = time.time()
        runs = harness.run_in_threads(jobs)
        results["wall_seconds"] = time.time() - started
        single_requests = single.client.requests()
        provider_requests = provider_emu.client.requests()
        sdk_requests = sdk_emu.client.requests()
        over_requests = over_emu.client.requests()
        unshared_requests = unshared_emu.client.requests()

    crashed = [r for r in runs if isinstance(r, BaseException)]
    if crashed:
        raise RuntimeError(f"a benchmark job crashed: {crashed[0]!r}")
    single_runs = {label: runs[i] for i, (label, _, _) in enumerate(SINGLE_STYLES)}
    provider_runs = runs[len(SINGLE_STYLES) : len(SINGLE_STYLES) + n]
    sdk_runs = runs[len(SINGLE_STYLES) + n : len(SINGLE_STYLES) + 2 * n]
    over_start = len(SINGLE_STYLES) + 2 * n
    over_runs = runs[over_start : over_start + OVER_FACTOR * n]
    unshared_runs = runs[over_start + OVER_FACTOR * n :]

    single_out, single_rows = _single(single_runs, single_requests, single_d)
    results["single"].update(single_out)
    limited = {
        "provider": _limited(provider_runs, provider_ids, provider_requests, limited_d, started),
        "sdk": _limited(sdk_runs, sdk_ids, sdk_requests, limited_d, started),
        "provider_over_budget": _limited(over_runs, over_ids, over_requests, limited_d, started),
        "provider_over_budget_no_shared_cooldown": _limited(
            unshared_runs, unshared_ids, unshared_requests, limited_d, started
        ),
    }
    results["rate_limited"].update(limited)

    aligned = all(poll is None or single_d % poll == 0 for _, poll, _ in SINGLE_STYLES)
    note = (
        "D is a multiple of the provider's poll intervals, so its polls land just after the end (best-case "
        "latency; for arbitrary D expect poll_interval/2 on average)"
        if aligned
        else "provider latency depends on where the end falls between two polls (at most poll_interval)"
    )
    common.print_table(
        f"1. Requests for one pipeline of D = {single_d:g} s (no rate limit). Provider polls from the triggerer; "
        + note,
        ["client", "requests", "execute", "status reads", "reads/min", "end -> detected (s)", "SDK requests / this"],
        single_rows,
    )
    rows = []
    styles = (
        (f"provider deferrable, 10 s, {n} pipelines", limited["provider"]),
        (f"SDK 1 s loop, {n} pipelines", limited["sdk"]),
        (f"provider deferrable, 10 s, {OVER_FACTOR * n} pipelines (over budget)", limited["provider_over_budget"]),
        (
            f"same, {OVER_FACTOR * n} pipelines, shared 429 cooldown off",
            limited["provider_over_budget_no_shared_cooldown"],
        ),
    )
    for label, entry in styles:
        latency = entry["detection_latency_seconds"]
        gap = entry["gap_after_429_seconds"]
        rows.append(
            [
                label,
                entry["requests"],
                entry["http_429"],
                f"{entry['completion_detected']}/{entry['pipelines']}",
                latency.get("median", "-") if latency.get("n") else "-",
                latency.get("max", "-") if latency.get("n") else "-",
                entry["max_requests_in_any_1s"],
                entry["max_requests_in_any_1s_after_first_429"],
                entry["max_requests_in_any_1s_one_client"],
                gap.get("min", "-") if gap.get("n") else "-",
                gap.get("median", "-") if gap.get("n") else "-",
            ]
        )
    common.print_table(
        f"2. Concurrent pipelines of D = {limited_d:g} s under {FREE_READS_PER_MINUTE} reads/min and "
        f"{FREE_WRITES_PER_MINUTE} writes/min (Free plan), each style against its own emulator",
        [
            "client",
            "requests",
            "429s",
            "detected",
            "latency med (s)",
            "latency max (s)",
            "max req/1s",
            "max req/1s after 1st 429",
            "max req/1s one client",
            "gap after 429 min (s)",
            "gap after 429 med (s)",
        ],
        rows,
    )
    for label, entry in limited.items():
        for error, count in entry["errors"].items():
            print(f"{label}: {count} pipeline(s) ended with: {error}")
        if entry["failed_after_seconds"]:
            print(f"{label}: failures after {', '.join(f'{s:.0f}' for s in entry['failed_after_seconds'])} s")
    common.write_results(NAME, results)
    return results


if __name__ == "__main__":
    main()
