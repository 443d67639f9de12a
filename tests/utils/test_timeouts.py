"""wait_within: a time limit that never loses the caller's cancellation (python/cpython#86296 on 3.10/3.11)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

import airflow_provider_dune
from airflow_provider_dune.utils.timeouts import wait_within


async def test_returns_the_result_in_time() -> None:
    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 42

    assert await wait_within(answer(), 5) == 42


async def test_an_error_of_the_awaited_call_propagates() -> None:
    async def broken() -> None:
        raise ValueError("bad answer")

    with pytest.raises(ValueError, match="bad answer"):
        await wait_within(broken(), 5)


async def test_past_the_limit_the_call_is_cancelled_and_timeout_raised() -> None:
    cleaned_up = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned_up.set()

    with pytest.raises(asyncio.TimeoutError):
        await wait_within(hangs(), 0.05)
    assert cleaned_up.is_set()


async def test_a_cancel_in_the_step_the_answer_arrives_is_not_lost() -> None:
    """The caller is cancelled in the same loop step as the awaited answer arrives: ``asyncio.wait_for`` on
    Python 3.10/3.11 returns the answer and the caller goes on as if never cancelled."""
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    went_on: list[str] = []

    async def caller() -> None:
        went_on.append(await wait_within(answer, 5))

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0)  # the caller now waits for the answer
    answer.set_result("status")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert went_on == []


async def test_a_cancel_while_waiting_cancels_the_call_and_waits_for_its_cleanup() -> None:
    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself awaits (closing a connection)
            cleaned_up.set()

    task = asyncio.ensure_future(wait_within(slow(), 30))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned_up.is_set()


def test_the_package_uses_no_other_time_limit() -> None:
    """``asyncio.wait_for`` loses cancellations on Python 3.10/3.11: a trigger the triggerer cancels would go on."""
    package = Path(airflow_provider_dune.__file__).parent
    found = [
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        if "testing" not in path.relative_to(package).parts and path.name != "timeouts.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bwait_for\(", line)
    ]
    assert found == [], f"use airflow_provider_dune.utils.timeouts.wait_within instead: {found}"
