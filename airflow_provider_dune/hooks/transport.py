"""Sending one request to Dune with an overall deadline and a cap on the answer's size, sync and async.

Read timeouts apply to each socket read, so a server that drips a byte a second never trips them; and a body
read whole can exhaust memory. Here every request has a wall-clock deadline (connect, send, headers and body
together) and its answer is read in chunks up to a size limit. The sync side enforces the deadline with a
watchdog thread that shuts the request's socket down, which wakes a read blocked in another thread; the async
side cancels the request. Transport failures become :class:`~airflow_provider_dune.api.errors.DuneConnectionError`
(``request_sent`` says whether Dune may have acted on the request), certificate failures
:class:`~airflow_provider_dune.api.errors.DuneTLSError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from airflow_provider_dune.api.connection import RequestLimits
from airflow_provider_dune.api.connection_fields import BASE_URL_LABEL, form_field
from airflow_provider_dune.api.endpoints import DuneRequest
from airflow_provider_dune.api.errors import DuneConfigurationError, DuneConnectionError, DuneTLSError
from airflow_provider_dune.api.responses import response_too_large
from airflow_provider_dune.utils.timeouts import wait_within

_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer read to the end (within the size limit)."""

    status_code: int
    content: bytes
    headers: Mapping[str, str]


def connect_failure(request: DuneRequest, message: str) -> DuneConnectionError:
    """Nothing reached Dune: safe to retry, even for a request that starts a run."""
    return DuneConnectionError(message, endpoint=request.description, request_sent=False)


def ambiguous_failure(request: DuneRequest, message: str) -> DuneConnectionError:
    """The request may have reached Dune, but no complete answer came back."""
    return DuneConnectionError(message, endpoint=request.description, request_sent=True)


def _tls_failure(request: DuneRequest, url: str, reason: object) -> DuneTLSError:
    host = httpx.URL(url).host
    return DuneTLSError(
        f"the TLS certificate of {host} could not be verified ({reason})",
        endpoint=request.description,
        request_sent=False,
    )


def _is_certificate_failure(error: BaseException) -> bool:
    """Whether ``error`` (or anything it wraps) is a failed certificate verification."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(current):
            return True
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__, *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return False


def _deadline_failure(request: DuneRequest, limits: RequestLimits) -> DuneConnectionError:
    return ambiguous_failure(request, f"no complete answer within {limits.deadline:g} s")


# -- sync: requests with a watchdog ----------------------------------------------------------------------


class _Watchdog:
    """Shuts the socket of the request in flight down when the deadline passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.fired = False

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                _shutdown(sock)

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            _shutdown(self._sock)


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_ACTIVE = threading.local()


def _watch(sock: Any) -> None:
    watchdog = getattr(_ACTIVE, "watchdog", None)
    if watchdog is not None and sock is not None:
        watchdog.attach(sock)


class _Watched:
    """Hands its socket to the watchdog of the request in flight (reused keep-alive sockets included)."""

    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOL_CLASSES = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(HTTPAdapter):
    """A ``requests`` adapter whose connections report their sockets to the deadline watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager


def new_session(*, use_environment_proxies: bool) -> requests.Session:
    """A session for the hook: our retries only (urllib3 must never resend an execute POST), no redirects.

    :param use_environment_proxies: honour ``HTTP(S)_PROXY``/``NO_PROXY`` and the environment's CA bundle; off
        for a loopback base URL, where a plain-http proxy would see the API key in clear.
    """
    session = requests.Session()
    session.trust_env = use_environment_proxies
    adapter = WatchedAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[_Watchdog]:
    watchdog = _Watchdog()
    _ACTIVE.watchdog = watchdog
    timer = threading.Timer(seconds, watchdog.fire)
    timer.daemon = True
    timer.start()
    try:
        yield watchdog
    finally:
        timer.cancel()
        _ACTIVE.watchdog = None


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length") or headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_type(request: DuneRequest) -> dict[str, str]:
    return {"Content-Type": request.content_type} if request.content is not None and request.content_type else {}


def send(
    session: requests.Session,
    request: DuneRequest,
    url: str,
    limits: RequestLimits,
    headers: Mapping[str, str] | None = None,
) -> RawResponse:
    """Send ``request`` with ``session``; raise a provider error for any transport failure."""
    response: requests.Response | None = None
    with _deadline(limits.deadline) as watchdog:
        try:
            response = session.request(
                request.method,
                url,
                params=dict(request.params) if request.params else None,
                json=request.json_body if request.content is None else None,
                data=request.content,
                headers={**dict(headers or {}), **_content_type(request)},
                timeout=(limits.connect_timeout, limits.read_timeout),
                allow_redirects=False,
                stream=True,
            )
            declared = _content_length(response.headers)
            if declared is not None and declared > request.max_response_bytes:
                raise response_too_large(request, request.max_response_bytes, response.status_code)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(_CHUNK_BYTES):
                size += len(chunk)
                if size > request.max_response_bytes:
                    raise response_too_large(request, request.max_response_bytes, response.status_code)
                chunks.append(chunk)
            return RawResponse(response.status_code, b"".join(chunks), response.headers)
        except requests.exceptions.SSLError as err:
            if _is_certificate_failure(err):
                raise _tls_failure(request, url, _ssl_reason(err)) from None
            raise connect_failure(request, f"the TLS handshake with {httpx.URL(url).host} failed") from None
        except requests.exceptions.ConnectTimeout:
            if watchdog.fired:
                raise _deadline_failure(request, limits) from None
            raise connect_failure(request, f"could not connect within {limits.connect_timeout:g} s") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, ValueError) as err:
            raise DuneConfigurationError(f"cannot send a request to {form_field(BASE_URL_LABEL)}: {err}") from None
        except (requests.exceptions.RequestException, OSError) as err:
            if watchdog.fired:
                raise _deadline_failure(request, limits) from None
            if isinstance(err, requests.exceptions.Timeout):
                raise ambiguous_failure(request, f"no response within {limits.read_timeout:g} s") from None
            if isinstance(err, requests.exceptions.ConnectionError) and response is None and _is_connect_phase(err):
                raise connect_failure(request, f"could not connect to {_origin(url)}") from None
            when = "while the answer was being read" if response is not None else "before an answer arrived"
            raise ambiguous_failure(request, f"the connection broke {when} ({type(err).__name__})") from None
        finally:
            if response is not None:
                response.close()


def _ssl_reason(error: BaseException) -> str:
    text = str(error)
    for marker in ("certificate verify failed: ", "CERTIFICATE_VERIFY_FAILED"):
        if marker in text:
            tail = text.split(marker, 1)[1]
            return "certificate verify failed: " + tail.split(")")[0].strip(" ()'\"") if tail else marker
    return type(error).__name__


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode()}"


def _is_connect_phase(error: requests.exceptions.ConnectionError) -> bool:
    """Whether a ``requests`` connection error happened before the request was sent."""
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    reason: object = error.args[0] if error.args else None
    for _ in range(5):  # MaxRetryError -> NewConnectionError -> OSError: a short, bounded chain
        if isinstance(reason, (NewConnectionError, NameResolutionError, ConnectionRefusedError)):
            return True
        if not isinstance(reason, BaseException):
            return False
        reason = getattr(reason, "reason", None) or reason.__cause__
    return False


# -- async: httpx, cancelled at the deadline -------------------------------------------------------------


async def asend(
    client: httpx.AsyncClient,
    request: DuneRequest,
    url: str,
    limits: RequestLimits,
    headers: Mapping[str, str] | None = None,
) -> RawResponse:
    """Async :func:`send` on a shared ``httpx.AsyncClient`` (whose own timeouts are the per-read ones)."""

    async def read() -> RawResponse:
        async with client.stream(
            request.method,
            url,
            params=dict(request.params) if request.params else None,
            json=request.json_body if request.content is None else None,
            content=request.content,
            headers={**dict(headers or {}), **_content_type(request)},
        ) as response:
            declared = _content_length(response.headers)
            if declared is not None and declared > request.max_response_bytes:
                raise response_too_large(request, request.max_response_bytes, response.status_code)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes(_CHUNK_BYTES):
                size += len(chunk)
                if size > request.max_response_bytes:
                    raise response_too_large(request, request.max_response_bytes, response.status_code)
                chunks.append(chunk)
            return RawResponse(response.status_code, b"".join(chunks), response.headers)

    try:
        return await wait_within(read(), limits.deadline)
    except asyncio.TimeoutError:
        raise _deadline_failure(request, limits) from None
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
        if _is_certificate_failure(err):
            raise _tls_failure(request, url, _ssl_reason(err)) from None
        raise connect_failure(request, f"could not connect to {_origin(url)}") from None
    except httpx.TimeoutException:
        raise ambiguous_failure(request, f"no response within {limits.read_timeout:g} s") from None
    except httpx.InvalidURL as err:
        raise DuneConfigurationError(f"cannot send a request to {form_field(BASE_URL_LABEL)}: {err}") from None
    except httpx.TransportError as err:
        raise ambiguous_failure(
            request, f"the connection broke before a complete answer arrived ({type(err).__name__})"
        ) from None
