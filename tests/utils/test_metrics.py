"""The provider's metrics, received on a local UDP listener through Airflow's own StatsD settings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.utils.metrics import metric_name
from tests.conftest import TEST_API_KEY, dune_connection_json

QUERY = 5301

# What a component does before any metric goes out: Airflow 3.2's and 3.3's task runner initialise the stats
# backend from [metrics] (each its own way); earlier releases configure it on first use.
_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    try:  # Airflow 3.3: the module-level stats
        from airflow.observability.metrics import stats_utils
        from airflow.sdk.observability import stats
        stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    except (ImportError, AttributeError):
        try:  # Airflow 3.2: the task SDK's Stats class
            from airflow.sdk.observability.metrics import stats_utils
            from airflow.sdk.observability.stats import Stats
            Stats.initialize(factory=stats_utils.get_stats_factory(Stats))
        except ImportError:  # earlier releases configure it on first use
            pass
    from airflow_provider_dune.hooks.dune import DuneHook
    from airflow_provider_dune.utils import metrics

    hook = DuneHook("dune_default")
    started = hook.execute_query(int(sys.argv[1]))
    for _ in range(6):  # paced at 300 reads a minute: some wait for the key's budget
        hook.get_execution_status(started.execution_id)
    metrics.run_started("query")
    metrics.run_finished("query", "success", credits=0.25, detection_lag=1.5)
    """
)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def received(sock: socket.socket, until: float) -> list[str]:
    lines: list[str] = []
    while time.monotonic() < until:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            continue
        lines.extend(line for line in data.decode().splitlines() if line)
    return lines


@pytest.mark.slow
def test_metrics_reach_statsd(dune_emulator: DuneEmulator, listener: socket.socket) -> None:
    dune_emulator.add_query(QUERY, duration=0.01)
    dune_emulator.inject("get_execution_status", Fault.status(429, retry_after=0.01))
    env = {
        **os.environ,
        "AIRFLOW_CONN_DUNE_DEFAULT": dune_connection_json(dune_emulator.url, reads_per_minute=300),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.getsockname()[1]),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(QUERY)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = received(listener, time.monotonic() + 1.5)
    names = {line.split(":", 1)[0] for line in lines}

    expected = {
        "airflow." + metric_name("requests", "execute_query", 200),
        "airflow." + metric_name("requests", "get_execution_status", 429),
        "airflow." + metric_name("requests", "get_execution_status", 200),
        "airflow." + metric_name("rate_limited", "get_execution_status"),
        "airflow." + metric_name("runs", "started", "query"),
        "airflow." + metric_name("runs", "finished", "query", "success"),
        "airflow." + metric_name("credits", "query"),
        "airflow." + metric_name("detection_lag"),
        "airflow." + metric_name("budget_wait", "read"),
    }
    assert expected <= names, f"missing {sorted(expected - names)}; received {sorted(names)}"
    assert "airflow.dune.credits.query:0.25|c" in lines
    assert any(line.startswith("airflow.dune.detection_lag:1500") and line.endswith("|ms") for line in lines)
    assert all(TEST_API_KEY not in line for line in lines)


def test_metric_names_are_statsd_safe() -> None:
    assert metric_name("requests", "GET /v1/x/{id}", None) == "dune.requests.GET_v1_x_id.None"
    assert metric_name("runs", "", "ok") == "dune.runs.unknown.ok"
