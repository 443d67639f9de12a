"""The API key stays out of Airflow's output while the connection is read, in tasks and in triggers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.utils import log_safety
from airflow_provider_dune.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS

AIRFLOW_3_0 = AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_1_PLUS
KEY = "key-from-the-extra-1234"


class SupervisorChannel:
    """Stands in for the task runner's channel to its supervisor. Like Airflow 3.0's trigger channel (and the
    other synchronous ones), ``send`` cannot run in a thread whose event loop is running."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.sent.append(msg)
            return
        raise RuntimeError("You cannot use AsyncToSync in the same thread as an async event loop")

    async def asend(self, msg: Any) -> None:
        self.sent.append(msg)

    def masked(self) -> list[Any]:
        return [getattr(m, "value", None) for m in self.sent if type(m).__name__ == "MaskSecret"]


@pytest.fixture
def structlog_untouched() -> Iterator[Any]:
    """structlog (Airflow 3 logs with it); whatever a test does to its configuration is undone after it."""
    if not AIRFLOW_V_3_0_PLUS:
        pytest.skip("Airflow 2.11 does not log through structlog (not installed with it)")
    import structlog

    saved = structlog.get_config()
    was_configured = structlog.is_configured()
    try:
        yield structlog
    finally:
        structlog.reset_defaults()
        if was_configured:
            structlog.configure(**saved)


@pytest.fixture
def channel(monkeypatch: pytest.MonkeyPatch) -> SupervisorChannel:
    if not AIRFLOW_V_3_0_PLUS:
        pytest.skip("Airflow 2.11 has no task runner channel (airflow.sdk.execution_time.task_runner)")
    from airflow.sdk.execution_time import task_runner

    fake = SupervisorChannel()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", fake, raising=False)
    return fake


@pytest.fixture
def key_in_extra(dune_emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "dune", "host": dune_emulator.url, "extra": {"api_key": KEY, "timeout": 5}}
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", json.dumps(conn))


def test_a_trigger_reading_a_key_from_the_extra_masks_it_without_failing(
    channel: SupervisorChannel, key_in_extra: None, structlog_untouched: Any
) -> None:
    """Airflow 3.0's ``mask_secret`` called in the triggerer's event loop failed every such trigger."""

    async def read() -> str:
        return (await DuneHook().aget_settings()).api_key

    assert asyncio.run(read()) == KEY
    assert KEY in channel.masked()  # the supervisor, which writes the trigger's log, was told


def test_a_task_reading_a_key_from_the_extra_masks_it(
    channel: SupervisorChannel, key_in_extra: None, structlog_untouched: Any
) -> None:
    assert DuneHook().settings.api_key == KEY
    assert KEY in channel.masked()


@pytest.mark.parametrize("where", ["task", "trigger"])
def test_the_key_from_the_extra_is_redacted_on_every_version(key_in_extra: None, where: str) -> None:
    hook = DuneHook()
    settings = hook.settings if where == "task" else asyncio.run(hook.aget_settings())
    assert settings.api_key == KEY
    if AIRFLOW_V_3_0_PLUS:
        try:
            from airflow.sdk.execution_time.secrets_masker import redact
        except ImportError:  # Airflow 3.1+ moved it
            from airflow.sdk._shared.secrets_masker import redact  # type: ignore[no-redef]
    else:
        from airflow.utils.log.secrets_masker import redact  # type: ignore[no-redef]
    assert KEY not in str(redact(f"request with key {KEY}"))


def test_unconfigured_debug_output_is_quieted_on_airflow_3_0_only(
    channel: SupervisorChannel, structlog_untouched: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Airflow 3.0's ``dags test`` leaves structlog unconfigured: its debug lines, the channel's
    ``Sending request msg=MaskSecret(value=...)`` among them, would print every password read."""
    structlog = structlog_untouched
    structlog.reset_defaults()
    assert log_safety.quiet_debug_lines_that_echo_secrets() is AIRFLOW_3_0
    structlog.get_logger().debug("Sending request", msg="MaskSecret(value='a-secret-value')")
    printed = capsys.readouterr().out
    assert ("a-secret-value" in printed) is not AIRFLOW_3_0


def test_configured_logging_and_chosen_debug_output_are_left_alone(
    channel: SupervisorChannel, structlog_untouched: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    structlog = structlog_untouched
    structlog.reset_defaults()
    structlog.configure(cache_logger_on_first_use=False)
    assert log_safety.quiet_debug_lines_that_echo_secrets() is False
    structlog.reset_defaults()
    monkeypatch.setenv("AIRFLOW__LOGGING__LOGGING_LEVEL", "DEBUG")
    assert log_safety.quiet_debug_lines_that_echo_secrets() is False


def test_nothing_changes_without_a_supervisor_channel(structlog_untouched: Any) -> None:
    """A script or a unit test reads connections without sending anything anywhere."""
    structlog = structlog_untouched
    structlog.reset_defaults()
    assert log_safety.quiet_debug_lines_that_echo_secrets() is False
    assert not structlog.is_configured()
