"""Hook for the Dune API: authentication, retries and every endpoint the provider uses."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import requests
import tenacity

from airflow_provider_dune import __version__
from airflow_provider_dune.api import endpoints
from airflow_provider_dune.api.budget import PACERS, KeyPacer
from airflow_provider_dune.api.connection import (
    DuneConnectionSettings,
    env_connection_problem,
    extra_from_connection,
    missing_connection_message,
    settings_from_connection,
)
from airflow_provider_dune.api.connection_fields import connection_name
from airflow_provider_dune.api.credits import USAGE_CACHE
from airflow_provider_dune.api.endpoints import DuneRequest
from airflow_provider_dune.api.errors import (
    DuneAPIError,
    DuneConfigurationError,
    DuneCreditLimitError,
    DuneError,
    DuneRateLimitError,
    DuneResponseError,
)
from airflow_provider_dune.api.models import (
    CreditUsage,
    ExecutionStarted,
    ExecutionStatus,
    MaterializedView,
    MaterializedViewRefresh,
    PipelineStatus,
    QueryPipeline,
    ResultPage,
    parse_cancelled,
    parse_execution_started,
    parse_execution_status,
    parse_materialized_view,
    parse_materialized_view_refresh,
    parse_pipeline_execution_id,
    parse_pipeline_status,
    parse_query_pipeline,
    parse_usage,
    resolve_unknown_nodes,
)
from airflow_provider_dune.api.paging import iter_pages, read_result_page
from airflow_provider_dune.api.responses import decode_response
from airflow_provider_dune.api.retry import RetryPolicy, describe_unsafe_retry, may_have_started_run
from airflow_provider_dune.hooks import connection_form, transport
from airflow_provider_dune.hooks.async_clients import ASYNC_CLIENTS, ClientOptions
from airflow_provider_dune.hooks.materialized_views import DuneMaterializedViewsMixin
from airflow_provider_dune.hooks.queries import DuneQueriesMixin
from airflow_provider_dune.hooks.transport import new_session
from airflow_provider_dune.hooks.uploads import DuneUploadsMixin
from airflow_provider_dune.utils import metrics
from airflow_provider_dune.utils.budget_leases import budget_share
from airflow_provider_dune.utils.log_safety import (
    amask_key_from_extra,
    mask_key_from_extra,
    quiet_debug_lines_that_echo_secrets,
)
from airflow_provider_dune.version_compat import AIRFLOW_VERSION, BaseHook

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

T = TypeVar("T")
#: Waits for a budget slot at least this long are logged (shorter ones are the normal pace).
PACING_LOG_SECONDS = 5.0

USER_AGENT = f"airflow-provider-dune/{__version__} apache-airflow/{AIRFLOW_VERSION} python/{platform.python_version()}"
API_KEY_HEADER = "X-Dune-Api-Key"
#: The usage read is a cheap check (connection test, credit guard): give up quickly.
USAGE_RETRY = RetryPolicy(max_attempts=2, max_wait=2)


class DuneHook(DuneQueriesMixin, DuneUploadsMixin, DuneMaterializedViewsMixin, BaseHook):
    """Talk to the Dune API (https://api.dune.com/api) with the key stored in an Airflow connection.

    Sync methods (for workers) use a pooled ``requests.Session``; methods prefixed with ``a`` are async (for
    triggers) and use an ``httpx.AsyncClient`` shared by all hooks in the same event loop (a triggerer polls for
    many tasks): release it with :meth:`aclose` or ``async with hook:``.

    :param dune_conn_id: Airflow connection of type ``dune``; the API key is its Password field (labeled API
        Key in the form), an optional Host (labeled API base URL) overrides the base URL. Extra fields:
        ``timeout``, ``connect_timeout``, ``max_retries``, ``retry_min_wait``, ``retry_max_wait``,
        ``allow_insecure_http``.
    :param timeout: read timeout per request in seconds (overrides the connection's ``timeout``).
    :param max_retries: total tries per request, including the first (overrides ``max_retries``).
    :param retry_min_wait: first backoff step in seconds.
    :param retry_max_wait: cap for one backoff step in seconds.
    """

    conn_name_attr = "dune_conn_id"
    default_conn_name = "dune_default"
    conn_type = "dune"
    hook_name = "Dune"

    def __init__(
        self,
        dune_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry_min_wait: float | None = None,
        retry_max_wait: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dune_conn_id = dune_conn_id
        self._timeout_override = timeout
        self._retry_overrides = {
            key: value
            for key, value in (
                ("max_attempts", max_retries),
                ("min_wait", retry_min_wait),
                ("max_wait", retry_max_wait),
            )
            if value is not None
        }
        self._settings: DuneConnectionSettings | None = None
        #: Wall-clock time (``time.time()``) not to wait past for the key's budget: from then on requests go out
        #: without a slot (a timed-out task's last read, a cancel).
        self.deadline: float | None = None
        self._session: requests.Session | None = None
        self._async_client: httpx.AsyncClient | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow 2.11-3.1 (3.2+ reads it from the provider info): the API key goes in
        Password (labeled API Key), Host is an optional base URL, unused fields are hidden."""
        return connection_form.ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra settings as form fields on Airflow 2.11-3.1 (3.2+ reads them from the provider info)."""
        return connection_form.connection_form_widgets()

    # -- connection ---------------------------------------------------------------------------------------

    def _settings_from(self, conn: Any) -> DuneConnectionSettings:
        settings = settings_from_connection(
            self.dune_conn_id,
            host=conn.host,
            password=conn.password,
            port=conn.port,
            extra=extra_from_connection(self.dune_conn_id, getattr(conn, "extra", None)),
        )
        return self._apply_overrides(settings)

    def _apply_overrides(self, settings: DuneConnectionSettings) -> DuneConnectionSettings:
        from dataclasses import replace

        if self._timeout_override is not None:
            settings = replace(settings, timeout=float(self._timeout_override))
        if self._retry_overrides:
            try:
                retry = replace(settings.retry, **self._retry_overrides)  # type: ignore[arg-type]
            except ValueError as err:
                raise DuneError(f"invalid retry settings for DuneHook: {err}") from None
            settings = replace(settings, retry=retry)
        return settings

    @property
    def settings(self) -> DuneConnectionSettings:
        """Validated connection settings (looked up once per hook)."""
        if self._settings is None:
            quiet_debug_lines_that_echo_secrets()
            with _explain_missing_connection(self.dune_conn_id):
                conn = self.get_connection(self.dune_conn_id)
            settings = self._settings_from(conn)
            if settings.key_from_extra:
                # Airflow masks Password fields itself; a key taken from the extra is not, so mask that one here.
                mask_key_from_extra(settings.api_key)
            self._settings = settings
        return self._settings

    async def aget_settings(self) -> DuneConnectionSettings:
        """Like :attr:`settings`, without blocking the event loop while the connection is looked up."""
        if self._settings is None:
            aget = getattr(BaseHook, "aget_connection", None)
            quiet_debug_lines_that_echo_secrets()
            with _explain_missing_connection(self.dune_conn_id):
                if aget is not None:
                    conn = await aget(self.dune_conn_id)
                else:  # Airflow 2.x: the metadata DB lookup is blocking, run it in a thread.
                    from asgiref.sync import sync_to_async

                    conn = await sync_to_async(self.get_connection)(self.dune_conn_id)
            settings = self._settings_from(conn)
            if settings.key_from_extra:
                await amask_key_from_extra(settings.api_key)
            self._settings = settings
        return self._settings

    @staticmethod
    def _headers(settings: DuneConnectionSettings) -> dict[str, str]:
        return {
            API_KEY_HEADER: settings.api_key,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }

    def get_conn(self) -> requests.Session:
        """The pooled ``requests.Session`` carrying the API key header."""
        if self._session is None:
            settings = self.settings
            session = new_session(use_environment_proxies=not settings.is_loopback)
            session.headers.update(self._headers(settings))
            self._session = session
        return self._session

    async def aget_client(self) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` this hook's async calls use: shared with the other hooks in the same event
        loop that have the same timeouts (the API key is sent per request), released by :meth:`aclose`."""
        if self._async_client is None or self._async_client.is_closed:
            settings = await self.aget_settings()
            options = ClientOptions(
                timeout=settings.timeout,
                connect_timeout=settings.connect_timeout,
                user_agent=USER_AGENT,
                use_environment_proxies=not settings.is_loopback,
            )
            self._async_client = ASYNC_CLIENTS.acquire(options)
        return self._async_client

    def close(self) -> None:
        """Close the sync session."""
        if self._session is not None:
            self._session.close()
            self._session = None

    async def aclose(self) -> None:
        """Release the async client (the last hook using a shared client closes it)."""
        if self._async_client is not None:
            client, self._async_client = self._async_client, None
            await ASYNC_CLIENTS.release(client)

    def __enter__(self) -> DuneHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> DuneHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- transport ----------------------------------------------------------------------------------------

    def _retry_options(self, request: DuneRequest, policy: RetryPolicy) -> dict[str, Any]:
        def log_retry(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            attempt, retries = state.attempt_number, policy.max_attempts - 1
            if isinstance(error, DuneRateLimitError):  # the key's pacer holds the retry back (see _send)
                self.log.warning("%s; retry %d/%d once the API key's cooldown is over", error, attempt, retries)
                return
            wait = state.next_action.sleep if state.next_action else 0.0
            self.log.warning("%s; retry %d/%d in %.1f s", error, attempt, retries, wait)

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return policy.wait_seconds(state.attempt_number, error)

        return {
            "stop": tenacity.stop_after_attempt(policy.max_attempts),
            "retry": tenacity.retry_if_exception(lambda error: policy.should_retry(request, error)),
            "wait": wait,
            "before_sleep": log_retry,
            "reraise": True,
        }

    @staticmethod
    def _finish_error(request: DuneRequest, settings: DuneConnectionSettings, error: DuneAPIError) -> None:
        """Last touches on an error leaving the hook: never the key in its text; the connection named in its
        hint; say if a run may have started."""
        error.redact(settings.api_key)
        error.name_connection(settings.conn_id)
        if may_have_started_run(request, error):
            error.mark_may_have_started_run(describe_unsafe_retry(request))

    def run(self, request: DuneRequest, *, retry: RetryPolicy | None = None) -> Any:
        """Send ``request`` with retries and return the decoded JSON body."""
        settings = self.settings
        policy = retry or settings.retry
        try:
            for attempt in tenacity.Retrying(**self._retry_options(request, policy)):
                with attempt:
                    return self._send(request, settings)
        except DuneAPIError as error:
            self._finish_error(request, settings, error)
            raise
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    @staticmethod
    def _pacer(request: DuneRequest, settings: DuneConnectionSettings) -> KeyPacer:
        """The pacer of the budget ``request`` draws on: Dune counts runs started and everything else apart."""
        return PACERS.get(settings.base_url, settings.api_key, request.endpoint.bucket)

    @staticmethod
    def _per_minute(request: DuneRequest, settings: DuneConnectionSettings) -> float:
        """This process's share of the key's budget for ``request`` (``[dune] budget_share``, else the triggerers'
        leases)."""
        per_minute = settings.writes_per_minute if request.endpoint.bucket == "write" else settings.reads_per_minute
        return per_minute * budget_share(settings.base_url, settings.api_key)

    def _latest(self) -> float | None:
        """Seconds until :attr:`deadline`: a task's last read (and the cancel after it) goes out then, outside the
        budget, rather than after a wait for a slot that could last minutes."""
        return None if self.deadline is None else max(0.0, self.deadline - time.time())

    def _log_budget_wait(self, request: DuneRequest, pacer: KeyPacer, per_minute: float, seconds: float) -> None:
        """Say when the key's budget (or its cooldown after a 429) held a request back long enough to stretch the
        wait between reads (every wait goes to the ``dune.budget_wait`` metric)."""
        if seconds > 0:
            metrics.budget_waited(request.endpoint.bucket, seconds)
        if seconds >= PACING_LOG_SECONDS:
            self.log.info(
                "A %.1fs wait for a slot in the API key's budget (%g %s a minute, %d more waiting in this process) "
                "before %s",
                seconds,
                per_minute * pacer.fraction,
                "runs started" if request.endpoint.bucket == "write" else "reads",
                pacer.queued(),
                request.description,
            )

    def _decode(
        self, request: DuneRequest, settings: DuneConnectionSettings, status: int, content: bytes, headers: Any
    ) -> Any:
        """Decode a response, and tell the key's pacer (shared by all hooks) how it went."""
        metrics.request_sent(request.endpoint.name, status)
        pacer = self._pacer(request, settings)
        try:
            body = decode_response(request, status, content, headers, secret=settings.api_key)
        except DuneRateLimitError as error:
            per_minute = self._per_minute(request, settings)
            pacer.rate_limited(error.retry_after, settings.retry, per_minute)
            if per_minute > 0:
                self.log.warning(
                    "Dune answered 429 for %s: pacing this key at %.0f%% of its configured budget (another process "
                    "may share the key, or the plan allows less than reads_per_minute/writes_per_minute)",
                    request.description,
                    pacer.fraction * 100,
                )
            raise
        pacer.succeeded()
        return body

    def _send(self, request: DuneRequest, settings: DuneConnectionSettings) -> Any:
        pacer, per_minute = self._pacer(request, settings), self._per_minute(request, settings)
        self._log_budget_wait(request, pacer, per_minute, pacer.wait(per_minute, latest=self._latest()))
        answer = transport.send(self.get_conn(), request, settings.base_url + request.path, settings.limits)
        return self._decode(request, settings, answer.status_code, answer.content, answer.headers)

    async def arun(self, request: DuneRequest, *, retry: RetryPolicy | None = None) -> Any:
        """Async :meth:`run`: same retries and errors, on the shared ``httpx.AsyncClient``."""
        settings = await self.aget_settings()
        policy = retry or settings.retry
        try:
            async for attempt in tenacity.AsyncRetrying(**self._retry_options(request, policy)):
                with attempt:
                    return await self._asend(request, settings)
        except DuneAPIError as error:
            self._finish_error(request, settings, error)
            raise
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _asend(self, request: DuneRequest, settings: DuneConnectionSettings) -> Any:
        pacer, per_minute = self._pacer(request, settings), self._per_minute(request, settings)
        self._log_budget_wait(request, pacer, per_minute, await pacer.await_turn(per_minute, latest=self._latest()))
        client = await self.aget_client()
        answer = await transport.asend(
            client,
            request,
            settings.base_url + request.path,
            settings.limits,
            headers={API_KEY_HEADER: settings.api_key},
        )
        return self._decode(request, settings, answer.status_code, answer.content, answer.headers)

    def _start(self, request: DuneRequest, parse: Callable[[Any], T]) -> T:
        """Send a request that starts a run or writes data and read its answer; an unreadable answer to an
        accepted request may still mean Dune started the run, and the error says so. Before a billed start
        the connection's credit guard checks the period's credits."""
        if request.endpoint.billed:
            self.check_credit_guard()
        body = self.run(request)
        return _parse_start_answer(request, self.settings, parse, body)

    async def _astart(self, request: DuneRequest, parse: Callable[[Any], T]) -> T:
        if request.endpoint.billed:
            await self.acheck_credit_guard()
        body = await self.arun(request)
        return _parse_start_answer(request, await self.aget_settings(), parse, body)

    def check_credit_guard(self) -> None:
        """Raise :class:`~airflow_provider_dune.api.errors.DuneCreditLimitError` when the connection's credit
        ceiling is reached (one usage read a minute per key and process; nothing to do without a ceiling)."""
        settings = self.settings
        if not settings.credit_guard.active:
            return
        cache_key = USAGE_CACHE.key(settings.base_url, settings.api_key)
        usage, reason = USAGE_CACHE.get(cache_key), None
        if usage is None:
            try:
                usage = self.get_usage()
                USAGE_CACHE.put(cache_key, usage)
            except DuneError as err:
                reason = str(err)
        _enforce_credit_guard(settings, usage, self.dune_conn_id, reason)

    async def acheck_credit_guard(self) -> None:
        """:meth:`check_credit_guard` for the triggerer."""
        settings = await self.aget_settings()
        if not settings.credit_guard.active:
            return
        cache_key = USAGE_CACHE.key(settings.base_url, settings.api_key)
        usage, reason = USAGE_CACHE.get(cache_key), None
        if usage is None:
            try:
                usage = await self.aget_usage()
                USAGE_CACHE.put(cache_key, usage)
            except DuneError as err:
                reason = str(err)
        _enforce_credit_guard(settings, usage, self.dune_conn_id, reason)

    # -- pipelines ----------------------------------------------------------------------------------------

    def execute_query_pipeline(
        self,
        query_id: int,
        performance: str = "medium",
        query_parameters: Mapping[str, Any] | None = None,
    ) -> str:
        """Run a query together with the materialized views in its lineage; return the pipeline execution id."""
        request = endpoints.execute_query_pipeline(query_id, performance, query_parameters)
        return self._start(request, parse_pipeline_execution_id)

    async def aexecute_query_pipeline(
        self,
        query_id: int,
        performance: str = "medium",
        query_parameters: Mapping[str, Any] | None = None,
    ) -> str:
        request = endpoints.execute_query_pipeline(query_id, performance, query_parameters)
        return await self._astart(request, parse_pipeline_execution_id)

    def execute_pipeline(self, nodes: Sequence[Mapping[str, Any]]) -> str:
        """Run an explicit pipeline (validated locally first); return the pipeline execution id."""
        return self._start(endpoints.execute_pipeline(nodes), parse_pipeline_execution_id)

    async def aexecute_pipeline(self, nodes: Sequence[Mapping[str, Any]]) -> str:
        return await self._astart(endpoints.execute_pipeline(nodes), parse_pipeline_execution_id)

    def get_query_pipeline(
        self,
        query_id: int,
        performance: str = "medium",
        query_parameters: Mapping[str, Any] | None = None,
    ) -> QueryPipeline:
        """The nodes Dune would run for a query pipeline, without running them (a dry run)."""
        return parse_query_pipeline(self.run(endpoints.get_query_pipeline(query_id, performance, query_parameters)))

    async def aget_query_pipeline(
        self,
        query_id: int,
        performance: str = "medium",
        query_parameters: Mapping[str, Any] | None = None,
    ) -> QueryPipeline:
        return parse_query_pipeline(
            await self.arun(endpoints.get_query_pipeline(query_id, performance, query_parameters))
        )

    def get_pipeline_status(self, pipeline_execution_id: str) -> PipelineStatus:
        """Status of a pipeline run; node states Dune spells in an unknown way are resolved per execution."""
        status = parse_pipeline_status(
            self.run(endpoints.get_pipeline_status(pipeline_execution_id)), pipeline_execution_id
        )
        lookups = {
            node.position: self.get_execution_status(node.execution_id)
            for node in status.unknown_nodes
            if node.execution_id
        }
        return resolve_unknown_nodes(status, lookups)

    async def aget_pipeline_status(self, pipeline_execution_id: str) -> PipelineStatus:
        status = parse_pipeline_status(
            await self.arun(endpoints.get_pipeline_status(pipeline_execution_id)), pipeline_execution_id
        )
        lookups = {
            node.position: await self.aget_execution_status(node.execution_id)
            for node in status.unknown_nodes
            if node.execution_id
        }
        return resolve_unknown_nodes(status, lookups)

    # -- executions ---------------------------------------------------------------------------------------

    def execute_query(
        self,
        query_id: int,
        performance: str = "medium",
        query_parameters: Mapping[str, Any] | None = None,
    ) -> ExecutionStarted:
        """Start one query execution."""
        return self._start(endpoints.execute_query(query_id, performance, query_parameters), parse_execution_started)

    async def aexecute_query(
        self,
        query_id: int,
        performance: str = "medium",
        query_parameters: Mapping[str, Any] | None = None,
    ) -> ExecutionStarted:
        return await self._astart(
            endpoints.execute_query(query_id, performance, query_parameters), parse_execution_started
        )

    def get_execution_status(self, execution_id: str) -> ExecutionStatus:
        """Status of one execution (query run or materialized view refresh)."""
        return parse_execution_status(self.run(endpoints.get_execution_status(execution_id)))

    async def aget_execution_status(self, execution_id: str) -> ExecutionStatus:
        return parse_execution_status(await self.arun(endpoints.get_execution_status(execution_id)))

    def get_execution_results(
        self,
        execution_id: str,
        *,
        limit: int | None = None,
        offset: int | None = None,
        allow_partial_results: bool = False,
    ) -> ResultPage:
        """One page of an execution's result rows; a 200 answer without a result raises."""
        request = endpoints.get_execution_results(
            execution_id, limit=limit, offset=offset, allow_partial_results=allow_partial_results
        )
        return read_result_page(self.run(request), request.description)

    async def aget_execution_results(
        self,
        execution_id: str,
        *,
        limit: int | None = None,
        offset: int | None = None,
        allow_partial_results: bool = False,
    ) -> ResultPage:
        request = endpoints.get_execution_results(
            execution_id, limit=limit, offset=offset, allow_partial_results=allow_partial_results
        )
        return read_result_page(await self.arun(request), request.description)

    def iter_execution_results(
        self,
        execution_id: str,
        *,
        page_size: int = 10_000,
        allow_partial_results: bool = False,
        column_count: int | None = None,
        row_bytes: float | None = None,
    ) -> Iterator[ResultPage]:
        """Every page of an execution's results, one request per page.

        A page holds at most ``page_size`` rows, fewer when rows x columns would cross the connection's
        ``max_datapoints_per_request`` (Dune refuses such a request) or when the page's JSON would be much
        larger than ``paging.PAGE_TARGET_BYTES`` (32 MiB), so memory stays bounded for wide rows.
        ``column_count`` and ``row_bytes`` (estimated JSON bytes per row, ``api.paging.json_bytes_per_row``
        of the execution status's metadata), when known, size the first page; later pages use what Dune
        reports. A page over 128 MiB is refused with an error saying to lower ``page_size``.

        Pages are followed by ``next_offset`` on the configured base URL, never by the ``next_uri`` Dune
        returns, so the API key is only ever sent to the host of the connection.
        """
        if page_size < 1:
            raise DuneError(f"page_size must be at least 1, got {page_size}")
        yield from iter_pages(
            lambda limit, offset: self.get_execution_results(
                execution_id, limit=limit, offset=offset, allow_partial_results=allow_partial_results
            ),
            page_size,
            self.settings.max_datapoints_per_request,
            column_count,
            row_bytes,
        )

    def cancel_execution(self, execution_id: str) -> bool:
        """Ask Dune to cancel a running execution; ``True`` if Dune accepted."""
        return parse_cancelled(self.run(endpoints.cancel_execution(execution_id)))

    async def acancel_execution(self, execution_id: str) -> bool:
        return parse_cancelled(await self.arun(endpoints.cancel_execution(execution_id)))

    # -- materialized views -------------------------------------------------------------------------------

    def refresh_materialized_view(self, name: str, performance: str = "medium") -> MaterializedViewRefresh:
        """Start a refresh of a materialized view; follow it with :meth:`get_execution_status`."""
        return self._start(endpoints.refresh_materialized_view(name, performance), parse_materialized_view_refresh)

    async def arefresh_materialized_view(self, name: str, performance: str = "medium") -> MaterializedViewRefresh:
        return await self._astart(
            endpoints.refresh_materialized_view(name, performance), parse_materialized_view_refresh
        )

    def get_materialized_view(self, name: str) -> MaterializedView:
        """Describe a materialized view."""
        return parse_materialized_view(self.run(endpoints.get_materialized_view(name)))

    async def aget_materialized_view(self, name: str) -> MaterializedView:
        return parse_materialized_view(await self.arun(endpoints.get_materialized_view(name)))

    # -- account ------------------------------------------------------------------------------------------

    def get_usage(self) -> CreditUsage:
        """Credits used in the current billing period (free; counted in the key's read budget)."""
        return parse_usage(self.run(endpoints.get_usage(), retry=USAGE_RETRY))

    async def aget_usage(self) -> CreditUsage:
        return parse_usage(await self.arun(endpoints.get_usage(), retry=USAGE_RETRY))

    def test_connection(self) -> tuple[bool, str]:
        """:meth:`check_connection` for the connection form's Test button and ``airflow connections test``:
        Airflow tests a form's values under a random, transient connection id, so the message says "this
        connection" instead of naming it."""
        ok, message = self.check_connection()
        return ok, message.replace(connection_name(self.dune_conn_id), "this connection")

    def check_connection(self) -> tuple[bool, str]:
        """One authenticated call that costs no credits (``POST /v1/usage``), as the ``dune_connection_check``
        example DAG makes it. The message names the connection and gives the credits used of those the plan
        includes this billing period, or the error (never the key)."""
        try:
            usage = self.get_usage()
        except DuneError as err:
            return False, str(err)
        detail = ""
        if usage.credits_used is not None:
            included = f" of {usage.credits_included:g}" if usage.credits_included is not None else ""
            period = f" ({usage.period_start} to {usage.period_end})" if usage.period_start and usage.period_end else ""
            detail = f"; {usage.credits_used:g}{included} credits used this billing period{period}"
        return True, f"Connected to Dune at {self.settings.base_url} with {connection_name(self.dune_conn_id)}{detail}"


@contextlib.contextmanager
def _explain_missing_connection(conn_id: str) -> Iterator[None]:
    """Turn Airflow's bare "isn't defined" into what to do, including Airflow 3's rule for code outside tasks."""
    try:
        yield
    except Exception as err:
        if type(err).__name__ != "AirflowNotFoundException":
            raise
        # Airflow 3.0/3.1 report an AIRFLOW_CONN_* variable they could not parse as a missing connection.
        problem = env_connection_problem(conn_id, os.environ)
        raise (problem or DuneConfigurationError(missing_connection_message(conn_id))) from None


def _enforce_credit_guard(
    settings: DuneConnectionSettings, usage: CreditUsage | None, conn_id: str, unknown_reason: str | None
) -> None:
    refusal = settings.credit_guard.refusal(usage, conn_id, unknown_reason=unknown_reason)
    if refusal is None:
        return
    if usage is None:
        # Nothing was sent and the usage may be readable on the next try: Airflow's retries stay.
        raise DuneError(refusal)
    raise DuneCreditLimitError(refusal)


def _parse_start_answer(
    request: DuneRequest, settings: DuneConnectionSettings, parse: Callable[[Any], T], body: Any
) -> T:
    try:
        return parse(body)
    except DuneResponseError as error:
        error.endpoint = error.endpoint or request.description
        DuneHook._finish_error(request, settings, error)
        raise
