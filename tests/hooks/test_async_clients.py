"""The per-event-loop pool of shared ``httpx.AsyncClient``s."""

from __future__ import annotations

import asyncio

import httpx

from airflow_provider_dune.hooks.async_clients import AsyncClientPool, ClientOptions

OPTIONS = ClientOptions(timeout=30.0, connect_timeout=10.0, user_agent="test-agent")


async def test_clients_are_shared_per_options_and_closed_by_their_last_user() -> None:
    pool = AsyncClientPool()
    first = pool.acquire(OPTIONS)
    assert pool.acquire(OPTIONS) is first
    other = pool.acquire(ClientOptions(timeout=5.0, connect_timeout=10.0, user_agent="test-agent"))
    assert other is not first
    assert pool.users(first) == 2
    assert first.headers["User-Agent"] == "test-agent"

    await pool.release(first)
    assert not first.is_closed
    await pool.release(first)
    assert first.is_closed
    assert pool.users(first) == 0
    replacement = pool.acquire(OPTIONS)
    assert replacement is not first
    await pool.release(replacement)
    await pool.release(other)
    assert other.is_closed


async def test_releasing_a_client_the_pool_does_not_hold_just_closes_it() -> None:
    pool = AsyncClientPool()
    stray = httpx.AsyncClient()
    await pool.release(stray)
    assert stray.is_closed


def test_each_event_loop_gets_its_own_client() -> None:
    # An httpx client is bound to the loop it first ran in: asyncio.run() twice must not share one.
    pool = AsyncClientPool()

    async def acquire() -> httpx.AsyncClient:
        return pool.acquire(OPTIONS)

    first, second = asyncio.run(acquire()), asyncio.run(acquire())
    assert first is not second
    assert pool.users(first) == pool.users(second) == 1
