"""Awaiting with a time limit without ever losing a cancellation.

On Python 3.10 and 3.11, ``asyncio.wait_for`` returns the awaited result when the caller is cancelled in the
same loop step as that result arrives (python/cpython#86296, fixed in 3.12): the cancellation is lost. A trigger
the triggerer cancelled would then go on polling Dune. :func:`wait_within` is the one time limit the provider's
async code uses, with the same behaviour on every Python version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_within(awaitable: Awaitable[T], seconds: float) -> T:
    """The result of ``awaitable``, or ``asyncio.TimeoutError`` after ``seconds`` (it is then cancelled).

    A cancellation of the caller always propagates, also when the awaited result arrives in the same loop step;
    the awaited task is cancelled and waited for first, so nothing it holds outlives the caller.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        await _cancel_and_wait(task)
        raise
    if not done:
        await _cancel_and_wait(task)
        if task.cancelled() or task.exception() is not None:
            raise asyncio.TimeoutError
    return task.result()


async def _cancel_and_wait(task: asyncio.Future[T]) -> None:
    """Cancel ``task`` and wait until it has ended (its cleanup included); an error it ended with is marked
    retrieved, so asyncio does not log it: the caller's cancellation or timeout supersedes it."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()
