"""Dune objects as code: keep saved queries and materialized views in sync with the repository.

Both operators are idempotent: they compare first and send nothing when Dune already matches, so a DAG can
sync on every run without creating query versions or paying for view refreshes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_dune.api.definitions import MaterializedViewDefinition, QueryDefinition
from airflow_provider_dune.api.errors import DuneConfigurationError, DuneNotFoundError
from airflow_provider_dune.assets import query_uri, view_uri
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.links import DuneQueryLink
from airflow_provider_dune.version_compat import AirflowFailException, BaseOperator, Variable

if TYPE_CHECKING:
    from airflow.sdk import Context

QUERY_ID_VARIABLE_PREFIX = "airflow_provider_dune_query__"
VIEW_VARIABLE_PREFIX = "airflow_provider_dune_view__"
_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")


def _slug(name: str) -> str:
    """A Variable-safe key from a query name: ``"Daily volume (v2)"`` -> ``"daily_volume_v2"``."""
    return re.sub(r"[^a-z0-9_.\-]+", "_", name.lower()).strip("_")[:200] or "query"


def _variable_key(prefix: str, key: str, what: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise DuneConfigurationError(
            f"{what} {key!r} must be 1-200 letters, digits, '_', '.' or '-' (it names an Airflow Variable)"
        )
    return prefix + key


class DuneSyncQueryOperator(BaseOperator):
    """Create or update a saved Dune query from SQL kept in the repository; returns the query id (XCom).

    The query id is remembered in the Airflow Variable ``airflow_provider_dune_query__<query_key>`` (or given
    as ``query_id``), so re-runs update the same query instead of creating another. Nothing is sent when the
    SQL, name, description, parameters, privacy and tags already match: no new version on dune.com. Saving a
    query runs nothing and costs no credits; run it downstream with the pipeline or query operators, e.g.
    ``query_id="{{ ti.xcom_pull(task_ids='sync_query') }}"``.

    :param sql: the SQL, or the path of a ``.sql`` file (relative to the DAG folder or ``template_searchpath``);
        templated.
    :param name: the query's name on dune.com (templated).
    :param query_id: an existing query to keep in sync; when omitted, the one remembered for ``query_key``,
        else a new one.
    :param query_key: the name under which the query id is remembered (default: ``name`` in lower case, with
        ``_`` for characters other than letters, digits, ``.`` and ``-``).
    :param description: free text.
    :param parameters: parameter names used in the SQL as ``{{name}}``, or mappings ``{"key", "type",
        "value", "enumOptions"}``.
    :param is_private: visible to the owning team only.
    :param tags: labels on dune.com.
    """

    template_fields: Sequence[str] = ("dune_conn_id", "sql", "name", "description")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql"}
    operator_extra_links = (DuneQueryLink(),)
    ui_color = "#ffe0b2"

    def __init__(
        self,
        *,
        sql: str,
        name: str,
        query_id: int | None = None,
        query_key: str | None = None,
        description: str = "",
        parameters: Sequence[Any] | None = None,
        is_private: bool = False,
        tags: Sequence[str] | None = None,
        dune_conn_id: str = DuneHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sql = sql
        self.name = name
        self.query_id = query_id
        self.query_key = query_key
        self.description = description
        self.parameters = parameters
        self.is_private = is_private
        self.tags = tags
        self.dune_conn_id = dune_conn_id
        if query_key is not None:
            _variable_key(QUERY_ID_VARIABLE_PREFIX, query_key, "query_key")

    def definition(self) -> QueryDefinition:
        return QueryDefinition.build(
            name=self.name,
            sql=self.sql,
            description=self.description,
            parameters=self.parameters,
            is_private=self.is_private,
            tags=self.tags,
        )

    def execute(self, context: Context) -> int:
        definition = self.definition()
        variable = _variable_key(QUERY_ID_VARIABLE_PREFIX, self.query_key or _slug(definition.name), "query_key")
        remembered = Variable.get(variable, None)
        known = self.query_id if self.query_id is not None else (int(remembered) if remembered else None)
        with DuneHook(self.dune_conn_id) as hook:
            try:
                query_id, action, changed = hook.sync_query(definition, known)
            except DuneNotFoundError:
                if self.query_id is not None:
                    raise
                self.log.warning(
                    "Query %s remembered for %s no longer exists on Dune: creating it again", known, variable
                )
                query_id, action, changed = hook.sync_query(definition, None)
        if action == "created" or str(query_id) != str(remembered):
            try:
                Variable.set(variable, str(query_id), description=f"Dune query id of {definition.name!r}")
            except Exception as err:
                # Without the record the next run would create another query: stop, and say which one exists.
                raise AirflowFailException(
                    f"Dune query {query_id} was {action} but its id could not be saved in Variable {variable}: "
                    f"{err}. Set query_id={query_id} on the task (or that Variable) before running it again."
                ) from None
        detail = f" ({', '.join(changed)})" if action == "updated" else ""
        self.log.info("Dune query %s %s%s: %s", query_id, action, detail, DuneQueryLink.url_for(query_id))
        context["ti"].xcom_push(key="query_uri", value=query_uri(query_id))
        return query_id


class DuneUpsertMaterializedViewOperator(BaseOperator):
    """Create or change a materialized view (its query, Dune-side schedule, tier, privacy, expiry).

    Dune refreshes a view when it is upserted, which is billed, so the operator sends nothing when the view
    already has this definition: it compares the view's query and privacy (what Dune's API returns) and the
    digest of the definition it last applied (kept in the Variable ``airflow_provider_dune_view__<name>``,
    since the API does not return the schedule or tier). Returns ``{"name", "action", "execution_id"}``.

    :param name: full name, e.g. ``dune.team.result_daily_volume`` (templated).
    :param query_id: the query whose result the view holds (templated).
    :param cron_expression: Dune-side refresh schedule, e.g. ``"0 */6 * * *"``; ``None`` for refreshes on
        request only.
    :param performance: ``small``, ``medium`` or ``large``.
    :param is_private: visible to the owning team only.
    :param expires_at: RFC 3339 time when Dune drops the view; ``None`` for never.
    """

    template_fields: Sequence[str] = ("dune_conn_id", "name", "query_id")
    ui_color = "#ffe0b2"

    def __init__(
        self,
        *,
        name: str,
        query_id: int | str,
        cron_expression: str | None = None,
        performance: str = "medium",
        is_private: bool = False,
        expires_at: str | None = None,
        dune_conn_id: str = DuneHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.query_id = query_id
        self.cron_expression = cron_expression
        self.performance = performance
        self.is_private = is_private
        self.expires_at = expires_at
        self.dune_conn_id = dune_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        definition = MaterializedViewDefinition.build(
            name=self.name,
            query_id=self.query_id,
            cron_expression=self.cron_expression,
            performance=self.performance,
            is_private=self.is_private,
            expires_at=self.expires_at,
        )
        variable = _variable_key(VIEW_VARIABLE_PREFIX, definition.name, "view name")
        with DuneHook(self.dune_conn_id) as hook:
            try:
                current = hook.get_materialized_view(definition.name)
            except DuneNotFoundError:
                current = None
            same = (
                current is not None
                and current.query_id == definition.query_id
                and bool(current.is_private) == definition.is_private
                and Variable.get(variable, None) == definition.fingerprint()
            )
            if same:
                self.log.info("Materialized view %s already has this definition: nothing sent", definition.name)
                return {"name": definition.name, "action": "unchanged", "execution_id": None}
            upsert = hook.upsert_materialized_view(definition)
        Variable.set(variable, definition.fingerprint(), description=f"Definition digest of {definition.name}")
        action = "created" if current is None else "updated"
        self.log.info("Materialized view %s %s; Dune started refresh %s", definition.name, action, upsert.execution_id)
        context["ti"].xcom_push(key="view_uri", value=view_uri(definition.name))
        return {"name": upsert.name, "action": action, "execution_id": upsert.execution_id}


class DuneDeleteMaterializedViewOperator(BaseOperator):
    """Drop a materialized view; a view that does not exist is fine unless ``missing_ok=False``.

    :param name: full name (templated).
    :param missing_ok: succeed when the view is already gone.
    """

    template_fields: Sequence[str] = ("dune_conn_id", "name")
    ui_color = "#ffe0b2"

    def __init__(
        self, *, name: str, missing_ok: bool = True, dune_conn_id: str = DuneHook.default_conn_name, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.missing_ok = missing_ok
        self.dune_conn_id = dune_conn_id

    def execute(self, context: Context) -> str:
        with DuneHook(self.dune_conn_id) as hook:
            try:
                message = hook.delete_materialized_view(self.name)
            except DuneNotFoundError:
                if not self.missing_ok:
                    raise
                message = f"{self.name} did not exist"
        try:
            Variable.delete(VIEW_VARIABLE_PREFIX + self.name)
        except Exception as err:  # nothing was recorded, or Variables are read-only here
            self.log.debug("No definition digest to delete for %s: %s", self.name, err)
        self.log.info("Materialized view %s: %s", self.name, message)
        return message
