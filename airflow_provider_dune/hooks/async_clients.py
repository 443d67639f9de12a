"""``httpx.AsyncClient``s shared by every hook running in the same event loop (the triggerer's case).

A triggerer runs one hook per trigger. With a client per hook, each poll of each trigger found its keep-alive
connection expired (poll interval > keep-alive) and opened a new TCP + TLS connection: 1,000 triggers at 10 s
meant ~100 handshakes a second. One client per loop keeps a small pool of warm connections for all of them.
The API key is not part of the client: hooks send it per request, so triggers on different connections can
share a client as long as their timeouts match.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
from dataclasses import dataclass

import httpx

#: Connections per shared client. Keep-alive must equal the maximum: httpcore closes a connection that goes idle
#: whenever the pool holds more than ``max_keepalive_connections`` in total, so a smaller value made every
#: request above that concurrency open a new connection.
MAX_CONNECTIONS = 32


@dataclass(frozen=True)
class ClientOptions:
    """What a shared client is keyed on, besides the event loop."""

    timeout: float
    connect_timeout: float
    user_agent: str
    #: Honour HTTP(S)_PROXY and friends; off for a loopback API, where a plain-http proxy would see the key.
    use_environment_proxies: bool = True


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context (CA bundle loaded once) for every async client in the process.

    Building one costs about 50 ms of CPU and 0.8 MB, which a client per trigger paid again and again.
    """
    return httpx.create_ssl_context()


class AsyncClientPool:
    """Reference-counted clients per (running event loop, options); a client closes when its last user leaves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[asyncio.AbstractEventLoop, ClientOptions], tuple[httpx.AsyncClient, int]] = {}

    def acquire(self, options: ClientOptions) -> httpx.AsyncClient:
        """The shared client for the running loop and ``options``; call :meth:`release` with it when done."""
        key = (asyncio.get_running_loop(), options)
        with self._lock:
            client, users = self._clients.get(key, (None, 0))
            if client is None or client.is_closed:
                client, users = _new_client(options), 0
            self._clients[key] = (client, users + 1)
            return client

    async def release(self, client: httpx.AsyncClient) -> None:
        """Give ``client`` back; the last user of a client closes it."""
        to_close = None
        with self._lock:
            for key, (shared, users) in list(self._clients.items()):
                if shared is client:
                    if users <= 1:
                        del self._clients[key]
                        to_close = shared
                    else:
                        self._clients[key] = (shared, users - 1)
                    break
            else:
                to_close = client  # not (or no longer) shared: just close it
        if to_close is not None:
            await to_close.aclose()

    def users(self, client: httpx.AsyncClient) -> int:
        """How many hooks hold ``client`` (0 once it was released by all of them)."""
        with self._lock:
            return next((users for shared, users in self._clients.values() if shared is client), 0)


def _new_client(options: ClientOptions) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=shared_ssl_context(),
        headers={"User-Agent": options.user_agent, "Accept": "application/json"},
        timeout=httpx.Timeout(options.timeout, connect=options.connect_timeout),
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS),
        follow_redirects=False,
        trust_env=options.use_environment_proxies,
    )


#: The process-wide pool used by :class:`~airflow_provider_dune.hooks.dune.DuneHook`.
ASYNC_CLIENTS = AsyncClientPool()
