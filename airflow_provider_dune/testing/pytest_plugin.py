"""pytest fixtures that serve the Dune API emulator.

Load with ``pytest_plugins = ["airflow_provider_dune.testing.pytest_plugin"]`` (in a top-level
``conftest.py``), or import the fixtures into a ``conftest.py``.

``dune_emulator`` (per test) and ``dune_emulator_session`` (per session; call ``reset()`` between uses)
are started :class:`~airflow_provider_dune.testing.emulator.DuneEmulator` instances on an ephemeral loopback
port, accepting ``test-key`` (read/write) and ``read-key`` (read only), loaded with the bundled demo seed
(``default_seed.json``) with every duration multiplied by :data:`FIXTURE_TIME_SCALE` (0.05)::

    views   dune.demo.result_dex_trades_daily     query 1000  pending 0.05 s, executing 0.15 s
            dune.demo.result_token_prices_hourly  query 1002  0.025 s + 0.1 s
            dune.demo.result_dex_volume_usd       query 1004  0.025 s + 0.15 s (reads the two above)
            dune.demo.result_wallet_balances      query 1006  0.025 s + 0.1 s, FAILS
    queries 1001 daily_dex_volume     params: date        lineage: result_dex_trades_daily, 7 rows
            1003 token_prices_latest  params: symbol      no lineage, 3 rows
            1005 weekly_dex_summary   params: week_start  lineage: trades_daily + token_prices -> volume_usd
            1007 whale_wallets                            lineage: result_wallet_balances (pipeline fails)
            1010 long_running_backfill                    0.05 s + 1.0 s (for cancellation)
            1099 broken_query                             FAILS ("line 3:8: Column 'amount_usdd' ...")

Every emulator answers with the ``realistic`` response profile unless ``DUNE_EMULATOR_PROFILE=strict`` is set.
The plugin picks one seed per test session (or takes ``DUNE_EMULATOR_SEED``), exports it so emulators in
child processes use it too, prints it in the report header and under every failed test: rerun with
``DUNE_EMULATOR_SEED=<seed>`` to replay the same shapes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_dune.testing._profiles import (
    PROFILE_ENV,
    SEED_ENV,
    ResponseProfile,
    new_profile_seed,
)
from airflow_provider_dune.testing.emulator import DEFAULT_SEED_PATH, DuneEmulator

TEST_API_KEY = "test-key"
READ_API_KEY = "read-key"
#: Every duration of the seed catalog is multiplied by this in the fixtures.
FIXTURE_TIME_SCALE = 0.05

__all__ = [
    "FIXTURE_TIME_SCALE",
    "READ_API_KEY",
    "TEST_API_KEY",
    "dune_emulator",
    "dune_emulator_session",
    "make_test_emulator",
]


def pytest_configure(config: pytest.Config) -> None:
    """Fix the session's profile seed before any emulator (or child process) starts."""
    os.environ.setdefault(SEED_ENV, str(new_profile_seed()))


def session_profile() -> str:
    """``profile realistic, seed N`` (or ``profile strict``): what this session's emulators answer with."""
    return ResponseProfile().describe()


def pytest_report_header(config: pytest.Config) -> str:
    return f"dune emulator: {session_profile()} (replay with {SEED_ENV}={os.environ.get(SEED_ENV)})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        report.sections.append(
            (
                "dune emulator",
                f"{session_profile()}: replay with {SEED_ENV}={os.environ.get(SEED_ENV)} "
                f"({PROFILE_ENV}=strict for the spec's ideal shapes)",
            )
        )


def make_test_emulator(**kwargs: Any) -> DuneEmulator:
    """A (not yet started) emulator configured like the fixtures; ``kwargs`` go to ``DuneEmulator``."""
    kwargs.setdefault("api_keys", {TEST_API_KEY: "write", READ_API_KEY: "read"})
    emulator = DuneEmulator(**kwargs)
    emulator.load_seed(DEFAULT_SEED_PATH, time_scale=FIXTURE_TIME_SCALE)
    return emulator


@pytest.fixture
def dune_emulator() -> Iterator[DuneEmulator]:
    """A started Dune API emulator with the demo catalog and short durations, stopped after the test."""
    emulator = make_test_emulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def dune_emulator_session() -> Iterator[DuneEmulator]:
    """A started Dune API emulator shared by the session; resetting it between tests is the caller's job."""
    emulator = make_test_emulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()
