"""A local emulator of the Dune analytics API (``https://api.dune.com/api``), for tests, demos and CI.

It is a real HTTP/1.1 server on loopback (stdlib ``http.server`` plus ``jsonschema`` for request validation)
that implements the endpoints the provider uses, with Dune's paths, bodies, error shapes and state
machines. Runs advance with the clock, computed lazily whenever they are read::

    from airflow_provider_dune.testing.emulator import DuneEmulator, Fault

    with DuneEmulator(api_keys={"test-key": "write"}) as emu:
        emu.add_materialized_view("dune.team.result_x", query_id=10, duration=0.2)
        emu.add_query(11, depends_on=["dune.team.result_x"], duration=0.1, parameters=["date"])
        emu.inject("execute_query_pipeline", Fault.status(429, retry_after=1))
        ...  # point a client at emu.url with header X-Dune-Api-Key: test-key

Endpoints (all under ``/api``): every entry of ``airflow_provider_dune.api.endpoint_table.ENDPOINTS``,
with Dune's method and path, under the name of the provider's request builder (``execute_query``,
``get_execution_status``, ...), which is also the name ``counts`` and ``inject`` use. ``execute_sql`` fails a
statement with a line ``-- emulator: fail <message>``; ``insert_rows`` takes a CSV or NDJSON body.

Behaviour worth knowing:

* Auth: ``X-Dune-Api-Key`` header or ``api_key`` query parameter; unknown key -> 401 ``invalid API Key``;
  a ``read`` key -> 403 on every endpoint that changes something (``write_key`` in the table).
* Request bodies are validated against the request schemas of Dune's OpenAPI spec (bundled as
  ``dune_openapi.json``); explicit pipelines are also checked for structure (one action per node, unique ids,
  known dependencies, no cycles) and for unknown queries/views. Unknown query parameters -> 400.
* A pipeline node becomes runnable when all its dependencies completed (it then gets an execution id), is
  ``pending`` for its ``pending`` seconds, ``executing`` for its ``duration`` and ends ``completed`` or
  ``failed``. Nodes downstream of a failed or cancelled node end ``cancelled`` without ever starting.
  The overall status is ``pending`` until some node executes, then ``executing``, and once every node has
  ended: ``cancelled`` if a node was cancelled through the API, else ``failed`` (with ``error`` naming the
  node) if a node failed, else ``completed``.
* ``POST /v1/execution/{id}/cancel`` on a pending or executing execution answers ``{"success": true}`` and
  the execution ends ``QUERY_STATE_CANCELLED``; on an execution that already finished it answers
  ``{"success": false}`` (HTTP 200) and changes nothing.
* ``GET /v1/query/{id}/results`` answers with the latest finished run of the query; for a query never run
  through the API, with a run that finished before the emulator started (as if run from Dune's web app).
* A query added with ``partial=True`` ends ``QUERY_STATE_COMPLETED_PARTIAL`` (a result Dune truncated); its
  results are answered with ``QUERY_STATE_FAILED`` unless requested with ``allow_partial_results=true``, as
  Dune's spec says.
* Timestamps are RFC 3339 UTC with nanoseconds (``2024-12-20T11:04:18.724658237Z``), as Dune sends them.
* Rate limits (off by default, :meth:`DuneEmulator.set_rate_limit`): per-key token buckets, ``write`` for
  the execute/refresh endpoints and ``read`` for everything else; 429 ``Too many requests`` without a
  ``Retry-After`` header (Dune documents none).

Control API (no key needed; served when ``control_api=True``), for driving an emulator in another process
(see :class:`DuneEmulatorClient`)::

    GET  /_emulator/health              {"status": "ok"}
    POST /_emulator/queries             add_query kwargs plus "query_id"
    POST /_emulator/materialized-views  add_materialized_view kwargs plus "name"
    POST /_emulator/faults              {"endpoint": "...", "query_id": 1 | null,
                                         "faults": [{"kind": "status", "code": 429, "retry_after": 1, "times": 3},
                                                    {"kind": "slow", "seconds": 2}, {"kind": "drop"}, ...]}
    GET  /_emulator/counts              {"counts": {...}, "executions_started": {"<query_id>": n},
                                         "executions_started_total": n, "connections_opened": n}
    GET  /_emulator/requests            {"requests": [...]}  (keys masked)
    POST /_emulator/reset               forget runs, counts, requests and faults
    POST /_emulator/rate-limit          {"read_per_minute": n | null, "write_per_minute": n | null}
    POST /_emulator/settings            {"node_state_style": "lower" | "query_state"}
    POST /_emulator/seed?time_scale=x   a seed document (below)

Seed documents (``--seed FILE``, :meth:`DuneEmulator.load_seed`, the bundled ``default_seed.json``)::

    {
      "description": "optional free text",
      "materialized_views": [
        {"name": "dune.demo.result_dex_trades_daily", "query_id": 1000, "duration": 3.0, "pending": 1.0,
         "error": null, "depends_on": []}
      ],
      "queries": [
        {"query_id": 1001, "name": "daily_dex_volume", "duration": 2.0, "pending": 0.5, "error": null,
         "depends_on": ["dune.demo.result_dex_trades_daily"], "parameters": ["date"],
         "rows": [{"block_date": "2024-06-01", "volume_usd": 1523400012.55}]}
      ]
    }

Every field except ``query_id`` (queries) and ``name``/``query_id`` (views) is optional, with the defaults of
:meth:`DuneEmulator.add_query` / :meth:`DuneEmulator.add_materialized_view`; ``time_scale`` multiplies every
``duration`` and ``pending``.

Command line (also the ``dune-emulator`` console script)::

    python -m airflow_provider_dune.testing.emulator --host 127.0.0.1 --port 8765 --api-key KEY \\
        [--read-api-key KEY] [--seed FILE | --no-seed] [--time-scale X] [--verbose] [--allow-remote]

``--port 0`` picks a free port; the start line ``Dune API emulator listening on http://HOST:PORT/api`` shows
it. The key defaults to ``$DUNE_EMULATOR_API_KEY``, else ``emulator-key``. Binding to a non-loopback address
needs ``--allow-remote`` (e.g. ``0.0.0.0`` inside a container network). SIGTERM/SIGINT stop it cleanly.

Code layout: this module holds :class:`DuneEmulator` and the command line; the HTTP server and dispatch are in
``_http``, the routes and endpoint handlers in ``_api``, the control API, seed documents and
:class:`DuneEmulatorClient` in ``_control``. The state behind the endpoints is ``_state.EmulatorState``, with
one module per API area: ``_queries``, ``_views`` (materialized views), ``_pipelines`` and ``_executions``.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from airflow_provider_dune.testing._api import _Api
from airflow_provider_dune.testing._control import (
    _SEED_SCHEMA,
    DuneEmulatorClient,
    DuneEmulatorClientError,
    _scaled,
    _schema_error,
    handle_control,
)
from airflow_provider_dune.testing._http import API_KEY_HEADER, MASK, MAX_BODY_BYTES, _Server
from airflow_provider_dune.testing._profiles import DEFAULT_PROFILE, PROFILE_ENV, PROFILES, SEED_ENV, ResponseProfile
from airflow_provider_dune.testing._state import ENDPOINTS, Clock, EmulatorState, NodeStateStyle, RecordedRequest
from airflow_provider_dune.testing.faults import Fault

__all__ = [
    "API_KEY_ENV",
    "API_KEY_HEADER",
    "DEFAULT_CLI_API_KEY",
    "DEFAULT_SEED_PATH",
    "ENDPOINTS",
    "MASK",
    "MAX_BODY_BYTES",
    "DuneEmulator",
    "DuneEmulatorClient",
    "DuneEmulatorClientError",
    "Fault",
    "RecordedRequest",
    "is_loopback",
    "main",
]


DEFAULT_SEED_PATH = Path(__file__).with_name("default_seed.json")
DEFAULT_CLI_API_KEY = "emulator-key"
API_KEY_ENV = "DUNE_EMULATOR_API_KEY"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DuneEmulator:
    """An in-process Dune API server on loopback.

    :param host: address to bind; must be loopback unless ``allow_remote`` is set.
    :param port: port to bind; ``0`` picks a free one (see :attr:`port` after :meth:`start`).
    :param api_keys: accepted API keys mapped to their role, ``"write"`` or ``"read"``; defaults to
        ``{"test-key": "write", "read-key": "read"}``.
    :param control_api: serve the ``/_emulator/`` control API.
    :param verbose: log ``METHOD path -> status`` for each request (never headers or query strings).
    :param allow_remote: allow binding to a non-loopback address.
    :param clock: monotonic clock in seconds (default ``time.monotonic``); a fake one makes tests deterministic.
    :param seed: a seed document (mapping or path) to load, see the module docstring.
    :param node_state_style: how node statuses are spelled in pipeline status, see :attr:`node_state_style`.
    :param record_limit: how many requests :attr:`requests` keeps (oldest dropped first); ``None`` = all.
    :param log_stream: where ``verbose`` logging goes (default ``sys.stderr``).
    :param profile: ``realistic`` (answers drawn from the shapes real Dune was seen to send) or ``strict``
        (the spec's ideal shape every time); ``None`` reads ``$DUNE_EMULATOR_PROFILE``, default realistic.
        A ``ResponseProfile`` (``airflow_provider_dune.testing._profiles``) may force chosen shapes on.
    :param profile_seed: seed of the realistic draws; ``None`` reads ``$DUNE_EMULATOR_SEED``, else picks one
        (the ``profile`` attribute tells which).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Mapping[str, str] | None = None,
        *,
        control_api: bool = True,
        verbose: bool = False,
        allow_remote: bool = False,
        clock: Clock | None = None,
        seed: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        node_state_style: NodeStateStyle = "lower",
        record_limit: int | None = 100_000,
        log_stream: TextIO | None = None,
        profile: str | ResponseProfile | None = None,
        profile_seed: int | None = None,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"refusing to bind the Dune API emulator to non-loopback address {host!r}; "
                f"pass allow_remote=True (--allow-remote) to allow it"
            )
        keys = dict(api_keys) if api_keys is not None else {"test-key": "write", "read-key": "read"}
        for key, role in keys.items():
            if not isinstance(key, str) or not key:
                raise ValueError("API keys must be non-empty strings")
            if role not in ("read", "write"):
                raise ValueError(f"API key roles must be 'read' or 'write', got {role!r}")
        self._host = host
        self._requested_port = port
        self._api_keys = keys
        self.control_api = control_api
        self.verbose = verbose
        self.log_stream: TextIO = log_stream or sys.stderr
        self.profile = profile if isinstance(profile, ResponseProfile) else ResponseProfile(profile, profile_seed)
        self._state = EmulatorState(clock=clock, record_limit=record_limit)
        self._api = _Api(self._state)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.node_state_style = node_state_style
        if seed is not None:
            self.load_seed(seed)

    # --------------------------------------------------------------------------------------- lifecycle

    def start(self) -> DuneEmulator:
        """Bind and serve in a background thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("the Dune API emulator is already running")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._stopping.clear()
        self._server = _Server((self._host.strip("[]"), self._requested_port), self, family)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"dune-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, free the port and join the server thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        shutter = threading.Thread(target=server.shutdown, name="dune-emulator-shutdown", daemon=True)
        shutter.start()
        while shutter.is_alive():
            self._wake(server)
            shutter.join(0.01)
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=10)
        self._server = None
        self._thread = None

    @staticmethod
    def _wake(server: _Server) -> None:
        """Connect to the listening socket so that ``serve_forever`` notices a shutdown request at once."""
        host, port = str(server.server_address[0]), int(server.server_address[1])
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_unspecified:  # bound to all interfaces: knock on loopback
                host = "::1" if ":" in host else "127.0.0.1"
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            pass

    def __enter__(self) -> DuneEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    @property
    def host(self) -> str:
        """The address bound (or to be bound)."""
        return self._host

    @property
    def port(self) -> int:
        """The port bound (the requested port before :meth:`start`)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._requested_port

    @property
    def base_url(self) -> str:
        """Root URL of the server, e.g. ``http://127.0.0.1:8765`` (the control API lives under it)."""
        host = f"[{self._host.strip('[]')}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the API, like ``https://api.dune.com/api``: ``http://127.0.0.1:<port>/api``."""
        return self.base_url + "/api"

    @property
    def api_key(self) -> str:
        """The first configured key with write access (or any key if none has)."""
        for key, role in self._api_keys.items():
            if role == "write":
                return key
        return next(iter(self._api_keys), "")

    # ----------------------------------------------------------------------------------------- catalog

    def add_query(
        self,
        query_id: int,
        *,
        name: str | None = None,
        duration: float = 0.5,
        pending: float = 0.0,
        error: str | None = None,
        depends_on: Sequence[str] = (),
        rows: list[dict[str, Any]] | None = None,
        parameters: Sequence[str] = (),
        partial: bool = False,
    ) -> None:
        """Register (or replace) a query.

        :param query_id: Dune query id.
        :param name: display name (``query_<id>`` by default).
        :param duration: seconds a run spends executing.
        :param pending: seconds a run spends pending (queued) before executing.
        :param error: when set, runs end failed with this message.
        :param depends_on: names of the materialized views the query reads (its lineage).
        :param rows: result rows (default: a few generated rows).
        :param parameters: allowed parameter names; others in a request are answered with 400.
        :param partial: runs end ``QUERY_STATE_COMPLETED_PARTIAL`` (a result Dune truncated); their results are
            answered with a failed state unless asked for with ``allow_partial_results=true``.
        """
        self._state.add_query(
            query_id,
            name=name,
            duration=duration,
            pending=pending,
            error=error,
            depends_on=depends_on,
            rows=rows,
            parameters=parameters,
            partial=partial,
        )

    def add_materialized_view(
        self,
        name: str,
        *,
        query_id: int,
        duration: float = 0.5,
        pending: float = 0.0,
        error: str | None = None,
        depends_on: Sequence[str] = (),
        refresh_every: float | None = None,
    ) -> None:
        """Register (or replace) a materialized view.

        :param name: full name, e.g. ``dune.team.result_x``.
        :param query_id: the query that defines the view (registered with defaults if unknown).
        :param duration: seconds a refresh spends executing.
        :param pending: seconds a refresh spends pending before executing.
        :param error: when set, refreshes end failed with this message.
        :param depends_on: names of other materialized views it reads (besides its query's ``depends_on``).
        :param refresh_every: Dune refreshes the view on its own every so many seconds (its ``cron_expression``),
            counted from now; replacing the view keeps the schedule (e.g. to make the next refreshes fail).
        """
        self._state.add_view(
            name,
            query_id=query_id,
            duration=duration,
            pending=pending,
            error=error,
            depends_on=depends_on,
            refresh_every=refresh_every,
        )

    def load_seed(self, seed: Mapping[str, Any] | str | os.PathLike[str], *, time_scale: float = 1.0) -> None:
        """Add the queries and views of a seed document (a mapping or a JSON file path).

        :param seed: the seed, see the module docstring for its shape.
        :param time_scale: factor applied to every ``duration`` and ``pending``.
        """
        if isinstance(seed, (str, os.PathLike)):
            with open(seed, encoding="utf-8") as fh:
                seed = cast(Mapping[str, Any], json.load(fh))
        error = _schema_error(_SEED_SCHEMA, seed, "seed")
        if error is not None:
            raise ValueError(error)
        if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)) or time_scale < 0:
            raise ValueError(f"time_scale must be a non-negative number, got {time_scale!r}")
        with self._state.lock:
            for view in seed.get("materialized_views", []):
                kwargs = _scaled(view, time_scale)
                self.add_materialized_view(kwargs.pop("name"), **kwargs)
            for query in seed.get("queries", []):
                kwargs = _scaled(query, time_scale)
                self.add_query(kwargs.pop("query_id"), **kwargs)

    # ------------------------------------------------------------------------------------ faults, state

    def inject(self, endpoint: str, *faults: Fault, query_id: int | None = None) -> None:
        """Queue ``faults`` for ``endpoint``; each matching request consumes one use of the head fault.

        :param endpoint: endpoint name (see the module docstring).
        :param faults: the faults, applied in order.
        :param query_id: only apply to requests about this query id (path id, or the query of the
            execution / pipeline / materialized view the request is about).
        """
        self._state.add_faults(endpoint, faults, query_id)

    def set_datapoint_limit(self, limit: int, api_key: str | None = None) -> None:
        """Cap datapoints (rows x columns) per results request, for ``api_key`` or (``None``) every key.

        Dune's default is 250,000, an account setting; ``ignore_max_datapoints_per_request=true`` lifts it.
        """
        self._state.set_datapoint_limit(limit, api_key)

    def set_rate_limit(self, read_per_minute: int | None, write_per_minute: int | None) -> None:
        """Enable per-key token buckets (``None`` disables one); exceeding them answers 429."""
        self._state.set_rate_limit(read_per_minute, write_per_minute)

    @property
    def node_state_style(self) -> NodeStateStyle:
        """Spelling of node statuses in pipeline status: ``"lower"`` (``completed``) or ``"query_state"``
        (``QUERY_STATE_COMPLETED``)."""
        return self._state.node_state_style

    @node_state_style.setter
    def node_state_style(self, style: NodeStateStyle) -> None:
        if style not in ("lower", "query_state"):
            raise ValueError(f"node_state_style must be 'lower' or 'query_state', got {style!r}")
        self._state.node_state_style = style

    @property
    def counts(self) -> dict[str, int]:
        """Requests received per endpoint name (including faulted and unauthorised ones)."""
        with self._state.lock:
            return dict(self._state.counts)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received, oldest first (API keys masked)."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since start (or the last :meth:`reset`): shows whether clients reuse them."""
        server = self._server
        return server.connections_opened if server is not None else 0

    def executions_started(self, query_id: int | None = None) -> int:
        """How many execute / pipeline execute / refresh calls really started a run.

        With ``query_id``: the calls whose run was for that query (the path query of a query pipeline or
        execution, the query of a refreshed view, or any query node of an explicit pipeline).
        """
        return self._state.executions_started(query_id)

    def reset(self) -> None:
        """Forget runs, counts, requests, faults and the connection count; keep queries, views, keys and settings."""
        self._state.reset()
        self.profile.reset()
        server = self._server
        if server is not None:
            with server._connections_lock:
                server.connections_opened = 0

    # ------------------------------------------------------------------------------------- control API

    def _control(
        self, method: str, path: str, query: Mapping[str, str], body: Any, body_error: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Answer one ``/_emulator/`` control API request (see :func:`._control.handle_control`)."""
        return handle_control(self, method, path, query, body, body_error)


# ---------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dune-emulator",
        description="Serve a local emulator of the Dune API (https://api.dune.com/api) for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind; 0 picks a free one (default: 8765)")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the accepted read/write API key (default: ${API_KEY_ENV}, else {DEFAULT_CLI_API_KEY!r})",
    )
    parser.add_argument("--read-api-key", default=None, help="an additional read-only API key")
    seed = parser.add_mutually_exclusive_group()
    seed.add_argument("--seed", default=None, help="seed JSON file (default: the bundled demo seed)")
    seed.add_argument("--no-seed", action="store_true", help="start without any query or view")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply seed durations by this factor")
    parser.add_argument("--verbose", action="store_true", help="log method, path and status of each request")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding to a non-loopback address")
    parser.add_argument("--no-control-api", action="store_true", help="do not serve the /_emulator/ control API")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="response shapes: realistic (drawn from what Dune was seen to send) or strict (the spec's ideal); "
        f"default ${PROFILE_ENV}, else {DEFAULT_PROFILE}",
    )
    parser.add_argument(
        "--profile-seed", type=int, default=None, help=f"seed of the realistic draws (default ${SEED_ENV}, else random)"
    )
    parser.add_argument(
        "--node-state-style",
        choices=("lower", "query_state"),
        default="lower",
        help="spelling of node statuses in pipeline status (default: lower)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT; returns the process exit code."""
    args = _parser().parse_args(argv)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or DEFAULT_CLI_API_KEY
    keys = {api_key: "write"}
    if args.read_api_key:
        keys[args.read_api_key] = "read"
    try:
        emulator = DuneEmulator(
            host=args.host,
            port=args.port,
            api_keys=keys,
            control_api=not args.no_control_api,
            verbose=args.verbose,
            allow_remote=args.allow_remote,
            node_state_style=args.node_state_style,
            profile=args.profile,
            profile_seed=args.profile_seed,
        )
        if not args.no_seed:
            emulator.load_seed(args.seed or DEFAULT_SEED_PATH, time_scale=args.time_scale)
    except (ValueError, OSError) as exc:
        print(f"dune-emulator: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signum, _on_signal)
    try:
        emulator.start()
    except OSError as exc:
        print(f"dune-emulator: error: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    print(f"Dune API emulator listening on {emulator.url}", flush=True)
    print(f"Dune API emulator answers with {emulator.profile.describe()}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    print("Dune API emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
