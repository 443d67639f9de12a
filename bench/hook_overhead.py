"""Client-side cost of DuneHook per request, against a bare HTTP client doing the same GET.

One cheap read endpoint (``GET /v1/execution/{id}/status``) is called N times by:

* sync: ``DuneHook.get_execution_status`` in a loop vs a bare ``requests.Session`` (``get`` + ``json()``);
* async: ``DuneHook.aget_execution_status`` vs a bare ``httpx.AsyncClient``, with C concurrent callers.

For every variant it records requests/s, the CPU time of this process per request (the emulator runs in
another process, so its CPU is not counted; on a small machine it may cap the throughput, which would hide
the client's overhead in requests/s but not in CPU) and the TCP connections the emulator accepted. Variants
alternate inside each round; the medians over rounds are reported. When the hook needs clearly more CPU per
request than the bare client, the hook loop is profiled and the top functions are reported.

Run: ``python -m bench.hook_overhead [--quick] [--profile]``.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench import common

QUERY_ID = 4242
PROFILE_THRESHOLD = 1.5  # hook/bare CPU per request above which the hook loop is profiled
PROFILE_TOP = 15


@dataclass(frozen=True)
class Sizes:
    """Requests per variant and round, rounds, and the numbers of concurrent async callers."""

    requests: int
    rounds: int
    # sequential, a few and many concurrent callers (the hook shares one client and pool per event loop)
    concurrency: tuple[int, ...] = (1, 8, 20)


FULL = Sizes(requests=2_000, rounds=5)
QUICK = Sizes(requests=200, rounds=3)


@dataclass
class Sample:
    """One timed run of one variant."""

    requests: int
    wall_s: float
    cpu_s: float
    connections: int
    served: int

    @property
    def rps(self) -> float:
        """Requests per second (wall clock)."""
        return self.requests / self.wall_s

    @property
    def cpu_us(self) -> float:
        """Client CPU microseconds per request."""
        return self.cpu_s / self.requests * 1e6


class Bench:
    """The emulator child, one execution to poll, and how to measure a variant against it."""

    def __init__(self, child: Any) -> None:
        from airflow_provider_dune.hooks.dune import DuneHook

        self.child = child
        self.url = ""
        self.execution_id = ""
        self._setup_hook = DuneHook()

    def prepare(self) -> None:
        """Reset the emulator (it forgets runs and recorded requests) and start a fresh finished execution."""
        self.child.client.reset()
        execution_id = self._setup_hook.execute_query(QUERY_ID).execution_id
        deadline = time.monotonic() + 10
        while not self._setup_hook.get_execution_status(execution_id).is_execution_finished:
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark execution did not finish on the emulator")
            time.sleep(0.01)
        self.execution_id = execution_id
        self.url = f"{self.child.url}/v1/execution/{execution_id}/status"

    def _connections(self) -> int:
        return self.child.client.connections_opened()

    def _served(self) -> int:
        return int(self.child.client.counts().get("get_execution_status", 0))

    def measure(self, run: Callable[[_Timer], None], requests: int) -> Sample:
        """Time ``run`` (which sends ``requests`` GETs after its own untimed warm-up) on a fresh emulator."""
        self.prepare()
        served_before = self._served()
        before = self._connections()
        gc.collect()
        run_timed = _Timer()
        run(run_timed)
        after = self._connections()
        return Sample(
            requests=requests,
            wall_s=run_timed.wall,
            cpu_s=run_timed.cpu,
            # each control call is one connection: the `after` read itself is not the client's
            connections=after - before - 1,
            served=self._served() - served_before,
        )


class _Timer:
    """Wall and CPU time of the block between :meth:`start` and :meth:`stop`."""

    wall = 0.0
    cpu = 0.0

    def start(self) -> None:
        self._wall0 = time.perf_counter()
        self._cpu0 = common.cpu_seconds()

    def stop(self) -> None:
        self.cpu = common.cpu_seconds() - self._cpu0
        self.wall = time.perf_counter() - self._wall0


# -- variants: each creates its client, warms it up with one untimed request, then times n requests -----------


def sync_hook(bench: Bench, n: int) -> Callable[[_Timer], None]:
    """``DuneHook.get_execution_status`` in a loop."""
    from airflow_provider_dune.hooks.dune import DuneHook

    def run(timer: _Timer) -> None:
        with DuneHook() as hook:
            execution_id = bench.execution_id
            hook.get_execution_status(execution_id)
            timer.start()
            for _ in range(n):
                hook.get_execution_status(execution_id)
            timer.stop()

    return run


def sync_bare(bench: Bench, n: int) -> Callable[[_Timer], None]:
    """A bare ``requests.Session`` with the API key header: ``get`` + status check + ``json()``."""
    import requests

    def run(timer: _Timer) -> None:
        with requests.Session() as session:
            session.headers.update({"X-Dune-Api-Key": common.BENCH_API_KEY, "Accept": "application/json"})
            url = bench.url
            session.get(url, timeout=30).raise_for_status()
            timer.start()
            for _ in range(n):
                response = session.get(url, timeout=30)
                response.raise_for_status()
                response.json()
            timer.stop()

    return run


async def _callers(call: Callable[[], Awaitable[Any]], n: int, concurrency: int) -> None:
    """``n`` calls spread over ``concurrency`` tasks, each calling again as soon as its last call returned."""
    remaining = n

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    await asyncio.gather(*(caller() for _ in range(concurrency)))


def async_hook(bench: Bench, n: int, concurrency: int) -> Callable[[_Timer], None]:
    """``DuneHook.aget_execution_status`` from ``concurrency`` tasks sharing one hook."""
    from airflow_provider_dune.hooks.dune import DuneHook

    async def main(timer: _Timer) -> None:
        async with DuneHook() as hook:
            execution_id = bench.execution_id
            await hook.aget_execution_status(execution_id)
            timer.start()
            await _callers(lambda: hook.aget_execution_status(execution_id), n, concurrency)
            timer.stop()

    return lambda timer: asyncio.run(main(timer))


def async_bare(bench: Bench, n: int, concurrency: int) -> Callable[[_Timer], None]:
    """A bare ``httpx.AsyncClient`` (default limits) with the API key header, shared by ``concurrency`` tasks."""
    import httpx

    async def main(timer: _Timer) -> None:
        headers = {"X-Dune-Api-Key": common.BENCH_API_KEY, "Accept": "application/json"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            url = bench.url

            async def call() -> None:
                response = await client.get(url)
                response.raise_for_status()
                response.json()

            await call()
            timer.start()
            await _callers(call, n, concurrency)
            timer.stop()

    return lambda timer: asyncio.run(main(timer))


# -- profile ----------------------------------------------------------------------------------------------


def profile(run: Callable[[_Timer], None], bench: Bench, requests: int, entry: str) -> dict[str, Any]:
    """cProfile one hook run: top functions by own time, the hook's own layers, all in µs per request.

    ``entry`` is the hook method called per request; its cumulative time minus the HTTP client's
    ``request`` is the time spent in the hook itself (request building, tenacity, decoding, parsing).
    """
    bench.prepare()
    profiler = cProfile.Profile()
    timer = _Timer()

    class _ProfiledTimer(_Timer):
        def start(self) -> None:
            timer.start()
            profiler.enable()

        def stop(self) -> None:
            profiler.disable()
            timer.stop()

    run(_ProfiledTimer())
    entries: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = pstats.Stats(
        profiler, stream=io.StringIO()
    ).stats  # type: ignore[attr-defined]
    total = sum(value[2] for value in entries.values())

    def row(key: tuple[str, int, str], value: tuple[int, int, float, float, Any]) -> dict[str, Any]:
        return {
            "function": _function_name(key),
            "calls_per_request": round(value[1] / requests, 2),
            "own_us_per_request": round(value[2] / requests * 1e6, 1),
            "cumulative_us_per_request": round(value[3] / requests * 1e6, 1),
        }

    def top(index: int, keep: Callable[[str], bool] = lambda _: True) -> list[dict[str, Any]]:
        chosen = [(k, v) for k, v in entries.items() if keep(k[0])]
        chosen.sort(key=lambda item: item[1][index], reverse=True)
        return [row(k, v) for k, v in chosen[:PROFILE_TOP]]

    def cumulative(file_suffix: str, name: str) -> float:
        found = [v[3] for k, v in entries.items() if k[0].endswith(file_suffix) and k[2] == name]
        return max(found, default=0.0) / requests * 1e6

    hook_us = cumulative("hooks/dune.py", entry)
    transport_us = cumulative("requests/sessions.py", "request") or cumulative("httpx/_client.py", "request")
    return {
        "requests": requests,
        "entry": entry,
        "profiled_us_per_request": round(total / requests * 1e6, 1),
        "cpu_us_per_request_while_profiled": round(timer.cpu / requests * 1e6, 1),
        "hook_method_us_per_request": round(hook_us, 1),
        "http_client_request_us_per_request": round(transport_us, 1),
        "hook_own_us_per_request": round(hook_us - transport_us, 1),
        "hook_layers": top(3, lambda filename: "airflow_provider_dune" in filename or "/tenacity/" in filename),
        "by_own_time": top(2),
        "by_cumulative_time": top(3),
    }


def _function_name(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    else:
        filename = filename.rsplit("/", 2)[-1] if "/" in filename else filename
    return f"{filename}:{line}({name})"


# -- main -------------------------------------------------------------------------------------------------


def _summary(samples: Sequence[Sample]) -> dict[str, Any]:
    return {
        "rps": statistics.median(s.rps for s in samples),
        "cpu_us_per_request": statistics.median(s.cpu_us for s in samples),
        "connections_max": max(s.connections for s in samples),
        "served_ok": all(s.served == s.requests + 1 for s in samples),
        "rounds": [
            {"rps": s.rps, "cpu_us_per_request": s.cpu_us, "connections": s.connections, "served": s.served}
            for s in samples
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison, print the table, write ``bench/results/hook_overhead.json`` and return the results."""
    p = common.parser(__doc__.splitlines()[0] if __doc__ else "hook overhead")
    p.add_argument("--profile", action="store_true", help="profile the hook loops even if they are not slower")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    n, rounds, concurrencies = sizes.requests, sizes.rounds, sizes.concurrency
    common.isolate_airflow()

    comparisons: list[tuple[str, int | None, Callable[..., Any], Callable[..., Any]]] = [
        ("sync", None, sync_hook, sync_bare),
        *(("async", c, async_hook, async_bare) for c in concurrencies),
    ]
    samples: dict[tuple[str, int | None, str], list[Sample]] = {}
    profiles: dict[str, Any] = {}
    with common.bench_emulator("hook_overhead") as child:
        child.client.add_query(QUERY_ID, duration=0.001)
        common.set_dune_connection(child.url)
        bench = Bench(child)
        bench.prepare()
        for round_number in range(rounds):
            for mode, concurrency, hook_variant, bare_variant in comparisons:
                pair = [("hook", hook_variant), ("bare", bare_variant)]
                if round_number % 2:
                    pair.reverse()
                for client, variant in pair:
                    extra = () if concurrency is None else (concurrency,)
                    run = variant(bench, n, *extra)
                    samples.setdefault((mode, concurrency, client), []).append(bench.measure(run, n))

        summaries = {key: _summary(value) for key, value in samples.items()}
        rows = []
        results_rows = []
        for mode, concurrency, hook_variant, _ in comparisons:
            hook = summaries[(mode, concurrency, "hook")]
            bare = summaries[(mode, concurrency, "bare")]
            # ratios are paired per round (hook and bare ran back to back), then the median is taken
            pairs = list(zip(samples[(mode, concurrency, "hook")], samples[(mode, concurrency, "bare")], strict=True))
            cpu_ratio = statistics.median(h.cpu_us / b.cpu_us for h, b in pairs)
            rps_ratio = statistics.median(h.rps / b.rps for h, b in pairs)
            cpu_delta = statistics.median(h.cpu_us - b.cpu_us for h, b in pairs)
            label = mode if concurrency is None else f"{mode} C={concurrency}"
            rows.append(
                [
                    label,
                    hook["rps"],
                    bare["rps"],
                    rps_ratio,
                    hook["cpu_us_per_request"],
                    bare["cpu_us_per_request"],
                    cpu_ratio,
                    cpu_delta,
                    hook["connections_max"],
                    bare["connections_max"],
                ]
            )
            results_rows.append(
                {
                    "mode": mode,
                    "concurrency": concurrency if concurrency is not None else 1,
                    "hook": hook,
                    "bare": bare,
                    "rps_ratio_hook_over_bare": rps_ratio,
                    "cpu_ratio_hook_over_bare": cpu_ratio,
                    "cpu_us_per_request_hook_minus_bare": cpu_delta,
                }
            )
            if args.profile or cpu_ratio > PROFILE_THRESHOLD:
                extra = () if concurrency is None else (concurrency,)
                entry = "get_execution_status" if concurrency is None else "aget_execution_status"
                profiles[label] = profile(hook_variant(bench, n, *extra), bench, n, entry)

    common.print_table(
        f"DuneHook vs bare client, GET /v1/execution/{{id}}/status, {n} requests, median of {rounds} rounds "
        "(ratios and Δ paired per round; conns = most TCP connections opened in one round)",
        [
            "variant",
            "hook req/s",
            "bare req/s",
            "req/s ratio",
            "hook CPU µs/req",
            "bare CPU µs/req",
            "CPU ratio",
            "CPU Δ µs/req",
            "hook conns",
            "bare conns",
        ],
        rows,
    )
    for label, prof in profiles.items():
        common.print_table(
            f"profile of the hook loop ({label}), µs/request under cProfile: {prof['entry']} "
            f"{prof['hook_method_us_per_request']}, of which the HTTP client's request "
            f"{prof['http_client_request_us_per_request']} and the hook itself {prof['hook_own_us_per_request']}",
            ["function (hook and tenacity, by cumulative time)", "calls/req", "own µs/req", "cum µs/req"],
            [
                [r["function"], r["calls_per_request"], r["own_us_per_request"], r["cumulative_us_per_request"]]
                for r in prof["hook_layers"]
            ],
        )

    results = {
        "endpoint": "GET /v1/execution/{execution_id}/status",
        "config": {"requests": n, "rounds": rounds, "concurrency": list(concurrencies), "quick": args.quick},
        "comparisons": results_rows,
        "profiles": profiles,
    }
    common.write_results("hook_overhead", results)
    return results


if __name__ == "__main__":
    main()
