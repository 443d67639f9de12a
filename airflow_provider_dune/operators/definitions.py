"""Dune objects as code: keep saved queries and materialized views in sync with the repository.

Both operators are idempotent: they compare first and send nothing when Dune already matches, so a DAG can
sync on every run without creating query versions or paying for view refreshes. A create or upsert whose
answer was lost is never sent again by an Airflow retry (the rule of ``utils.unconfirmed``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowException

from airflow_provider_dune.api.definitions import MaterializedViewDefinition, QueryDefinition
from airflow_provider_dune.api.errors import DuneAPIError, DuneConfigurationError, DuneNotFoundError
from airflow_provider_dune.assets import query_uri, view_uri
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.links import DuneQueryLink
from airflow_provider_dune.utils import query_versions
from airflow_provider_dune.utils.task_records import (
    TaskRecord,
    TaskRecordUnavailable,
    task_instance_fields,
    try_number,
)
from airflow_provider_dune.utils.unconfirmed import fail_when_unconfirmed
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


@dataclass(frozen=True)
class _RememberedQuery:
    """What the Variable of a query key holds: ``{"query_id", "name"}``, or while a task creates the query
    ``{"name", "creating": {dag_id, task_id, run_id, map_index, try_number, at}}``; an older release stored the
    plain id."""

    query_id: int | None = None
    name: str | None = None
    creating: Mapping[str, Any] | None = None

    @classmethod
    def parse(cls, raw: Any, variable: str) -> _RememberedQuery:
        if raw is None or raw == "":
            return cls()
        text = str(raw).strip()
        if text.isdigit():
            return cls(int(text))
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        query_id = value.get("query_id") if isinstance(value, dict) else None
        name = value.get("name") if isinstance(value, dict) else None
        creating = value.get("creating") if isinstance(value, dict) else None
        valid_id = isinstance(query_id, int) and not isinstance(query_id, bool) and query_id > 0
        if not (valid_id and name is None) and not (isinstance(name, str) and (valid_id or isinstance(creating, dict))):
            raise DuneConfigurationError(
                f"Variable {variable} must hold a Dune query id, or JSON such as "
                f'{{"query_id": 1234, "name": "daily volume"}}, got {text[:200]!r}; correct or delete it'
            )
        return cls(query_id if valid_id else None, name, creating if not valid_id else None)

    @staticmethod
    def saved(query_id: int, name: str) -> str:
        return json.dumps({"query_id": query_id, "name": name})


def _creator(context: Context) -> dict[str, Any]:
    return {
        **task_instance_fields(context),
        "try_number": try_number(context),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class DuneSyncQueryOperator(BaseOperator):
    """Create or update a saved Dune query from SQL kept in the repository; returns the query id (XCom).

    The query is remembered in the Airflow Variable ``airflow_provider_dune_query__<query_key>`` as JSON
    ``{"query_id": ..., "name": ...}`` (a plain id, as older releases stored it, is read too), or given as
    ``query_id``, so re-runs update the same query instead of creating another. Nothing is sent when the SQL,
    name, description, parameters, privacy and tags already match: no new version on dune.com. Saving a query
    runs nothing and costs no credits; run it downstream with the pipeline or query operators, e.g.
    ``query_id="{{ ti.xcom_pull(task_ids='sync_query') }}"``.

    Safety rules, each failing with an error that says what to set:

    - Two names that map to one default key (``"Daily volume"`` and ``"daily volume!"``) are refused rather
      than rewriting each other's query; give each task its own ``query_key``.
    - A remembered query is only updated when its name on Dune is the remembered name or this task's name, so
      a Variable edited to another query's id does not overwrite that query.
    - Before creating, the task records its intent in the Variable (who creates, when). Another task syncing
      the same key meanwhile fails instead of creating a duplicate, and so does any later run while the intent
      stays unresolved. Dune's API cannot find a query by name (listing queries has no name filter), and
      Variables have no compare-and-set, so two tasks that read the Variable within the same few milliseconds,
      before either wrote its intent, can still both create.
    - A create whose answer was lost fails without Airflow retries: the query may exist, and a retry would
      save a second one.

    :param sql: the SQL, or the path of a ``.sql`` file (relative to the DAG folder or ``template_searchpath``);
        templated.
    :param name: the query's name on dune.com (templated).
    :param query_id: an existing query to keep in sync; when omitted, the one remembered for ``query_key``,
        else a new one.
    :param query_key: the name under which the query id is remembered (default: ``name`` in lower case, with
        ``_`` for characters other than letters, digits, ``.`` and ``-``). Given explicitly, the key is this
        task's: renaming the query keeps the same query.
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
        key = self.query_key or _slug(definition.name)
        variable = _variable_key(QUERY_ID_VARIABLE_PREFIX, key, "query_key")
        raw = Variable.get(variable, None)
        remembered = _RememberedQuery.parse(raw, variable)
        if self.query_id is None:
            self._check_remembered(remembered, definition, key, variable)
        known = self.query_id if self.query_id is not None else remembered.query_id
        # Only a remembered id is checked against Dune: an explicit query_id is the user's word.
        expected = {definition.name, remembered.name or definition.name} if self.query_id is None else set()
        with DuneHook(self.dune_conn_id) as hook:
            query_id: int | None = None
            if known is not None:
                try:
                    query_id, action, changed = hook.sync_query(definition, known, expected)
                except DuneNotFoundError:
                    if self.query_id is not None:
                        raise
                    self.log.warning(
                        "Query %s remembered in %s no longer exists on Dune: creating it again", known, variable
                    )
                except DuneConfigurationError as err:
                    raise DuneConfigurationError(
                        f"{err}. Variable {variable} remembers query {known} for this task: correct or delete that "
                        f"Variable, or set query_id={known} on the task if it should sync that query."
                    ) from None
            if query_id is None:
                query_id, action, changed = self._create(context, hook, definition, key, variable, raw), "created", []
            if action != "unchanged":
                self._note_version(hook, query_id)
        saved = _RememberedQuery.saved(query_id, definition.name)
        if raw != saved:
            try:
                Variable.set(variable, saved, description=f"Dune query id and name of {definition.name!r}")
            except Exception as err:
                if action == "created":
                    # Without the record the next run would create another query: stop, and say which one exists.
                    raise AirflowFailException(
                        f"Dune query {query_id} was created but its id could not be saved in Variable {variable}: "
                        f"{err}. Set query_id={query_id} on the task (or that Variable to {saved}) before running "
                        "it again."
                    ) from None
                self.log.warning("Could not update Variable %s to %s: %s", variable, saved, err)
        detail = f" ({', '.join(changed)})" if action == "updated" else ""
        self.log.info("Dune query %s %s%s: %s", query_id, action, detail, DuneQueryLink.url_for(query_id))
        context["ti"].xcom_push(key="query_uri", value=query_uri(query_id))
        return query_id

    def _note_version(self, hook: DuneHook, query_id: int) -> None:
        """Note the version this task made, so a result started from now on can be reused (one free read)."""
        try:
            query_versions.note(query_id, hook.get_query(query_id).get("version"))
        except DuneAPIError as err:
            self.log.warning("Could not read the new version of Dune query %s: %s", query_id, err)

    def _check_remembered(
        self, remembered: _RememberedQuery, definition: QueryDefinition, key: str, variable: str
    ) -> None:
        """Refuse a key another task is creating a query for, or (default key only) one of another name."""
        if remembered.creating is not None:
            by = remembered.creating
            raise DuneConfigurationError(
                f"Variable {variable} records that {by.get('dag_id')}.{by.get('task_id')} (run {by.get('run_id')}, "
                f"try {by.get('try_number')}) started creating query {remembered.name!r} at {by.get('at')} and has "
                f"not recorded its id: that task is still running, or it failed before it knew the id. Not "
                f"creating a second query. Look on dune.com for a query named {remembered.name!r}: if it exists, "
                f'set query_id=<its id> on this task or Variable {variable} to {{"query_id": <its id>, "name": '
                f"{json.dumps(remembered.name)}}}; if it does not, delete Variable {variable} and run this task again."
            )
        if self.query_key is None and remembered.name is not None and remembered.name != definition.name:
            raise DuneConfigurationError(
                f"Query names {remembered.name!r} and {definition.name!r} both map to the key {key!r} (Variable "
                f"{variable}, which remembers query {remembered.query_id} for {remembered.name!r}); syncing would "
                f"rewrite that query. Give this task a key of its own, e.g. query_key={key + '_2'!r}, or, to rename "
                f"query {remembered.query_id} to {definition.name!r}, set query_key={key!r}."
            )

    def _create(
        self, context: Context, hook: DuneHook, definition: QueryDefinition, key: str, variable: str, previous: Any
    ) -> int:
        """Create the query, with this task's intent recorded in ``variable`` while the create is in flight."""
        intent = json.dumps({"name": definition.name, "creating": _creator(context)})
        try:
            Variable.set(variable, intent, description=f"Dune query {definition.name!r} being created")
            recorded = Variable.get(variable, None)
        except Exception as err:
            raise AirflowException(
                f"Could not record in Variable {variable} that this task creates query {definition.name!r}: {err}. "
                "Nothing was created."
            ) from None
        if recorded != intent:  # another task wrote the Variable between our read and now
            other = _RememberedQuery.parse(recorded, variable)
            if other.creating is not None:
                self._check_remembered(other, definition, key, variable)
            raise DuneConfigurationError(
                f"Variable {variable} changed while this task was about to create query {definition.name!r} (it "
                f"now holds {recorded!r}): another task syncs the same key. Nothing was created; run this task "
                "again to sync the query that Variable names."
            )
        example = json.dumps({"query_id": 1234, "name": definition.name}).replace("1234", "<its id>")
        with fail_when_unconfirmed(
            effect=f"Dune may have saved query {definition.name!r}",
            risk="a second saved query of that name",
            check=f"Look on dune.com for a query named {definition.name!r} created just now: if it exists, set "
            f"query_id=<its id> on this task, or Variable {variable} to {example}; if it does not, delete "
            f"Variable {variable} and clear this task.",
        ):
            try:
                return hook.create_query(definition)
            except DuneAPIError as err:
                if not err.may_have_started_run:  # Dune refused it: nothing was created, withdraw the intent
                    self._restore(variable, previous)
                raise

    def _restore(self, variable: str, previous: Any) -> None:
        try:
            if previous is None:
                Variable.delete(variable)
            else:
                Variable.set(variable, previous)
        except Exception as err:
            self.log.warning("Could not withdraw the intent recorded in Variable %s: %s", variable, err)


#: A view upsert confirmed by Dune, kept until its digest is saved: a retry records it instead of upserting again.
VIEW_UPSERT_RECORD = TaskRecord(
    "airflow_provider_dune_view_upsert",
    "airflow_provider_dune_view_upsert_",
    what="the materialized-view upsert of this task instance",
    description="Materialized view this task instance upserted (a billed refresh); lets a retry record it "
    "instead of upserting again (deleted when done).",
)


@dataclass(frozen=True)
class _AppliedView:
    """What the Variable of a view holds: ``{"fingerprint", "dag_id", "task_id"}`` of the definition last applied
    (an older release stored the plain fingerprint)."""

    fingerprint: str | None = None
    applied_by: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> _AppliedView:
        if raw is None or raw == "":
            return cls()
        try:
            value = json.loads(str(raw))
        except ValueError:
            return cls(str(raw))
        if not isinstance(value, dict):
            return cls(str(raw))
        dag_id, task_id = value.get("dag_id"), value.get("task_id")
        return cls(value.get("fingerprint"), f"{dag_id}.{task_id}" if dag_id and task_id else None)


def _view_record(fingerprint: str, context: Context) -> str:
    ti = context["ti"]
    return json.dumps({"fingerprint": fingerprint, "dag_id": ti.dag_id, "task_id": ti.task_id})


class DuneUpsertMaterializedViewOperator(BaseOperator):
    """Create or change a materialized view (its query, Dune-side schedule, tier, privacy, expiry).

    Dune refreshes a view when it is upserted, which is billed, so the operator sends nothing when the view
    already has this definition: it compares the view's query and privacy (what Dune's API returns) and the
    digest of the definition it last applied (kept in the Variable ``airflow_provider_dune_view__<name>``,
    since the API does not return the schedule or tier). Returns ``{"name", "action", "execution_id"}``.

    One view, one owner: the Variable also records the dag and task that applied the definition. Another task
    applying a *different* definition of the view fails, naming that task, since two tasks declaring one view
    differently would change it back and forth and pay a refresh on every run. The same definition from another
    task is fine. To move the view to this task, set ``take_over=True`` (or delete the Variable).

    An upsert whose answer was lost fails without Airflow retries (Dune may have refreshed the view; a retry
    would pay again), and says what to check on dune.com. A confirmed upsert is recorded for the task instance
    before its digest is saved, so a retry after a failure to save it records it without upserting again.

    :param name: full name, e.g. ``dune.team.result_daily_volume`` (templated).
    :param query_id: the query whose result the view holds (templated).
    :param cron_expression: Dune-side refresh schedule, e.g. ``"0 */6 * * *"``; ``None`` for refreshes on
        request only.
    :param performance: ``small``, ``medium`` or ``large``.
    :param is_private: visible to the owning team only.
    :param expires_at: RFC 3339 time when Dune drops the view, with its offset (``Z`` for UTC); ``None`` for
        never. Compared as an instant: ``...T00:00:00Z`` and ``...T00:00:00.000+00:00`` are the same.
    :param take_over: apply this definition even when another task last applied a different one.
    """

    template_fields: Sequence[str] = ("dune_conn_id", "name", "query_id")
    ui_color = "#ffe0b2"
    operator_extra_links = (DuneQueryLink(),)  # Dune documents no page of a view: the query behind it

    def __init__(
        self,
        *,
        name: str,
        query_id: int | str,
        cron_expression: str | None = None,
        performance: str = "medium",
        is_private: bool = False,
        expires_at: str | None = None,
        take_over: bool = False,
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
        self.take_over = take_over
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
        fingerprint = definition.fingerprint()
        upserted = self._upserted_by_previous_try(context, definition.name, fingerprint)
        if upserted is not None:
            self.log.info(
                "A previous try of this task upserted %s (refresh %s); recording it without upserting again",
                definition.name,
                upserted.get("execution_id"),
            )
            result = {key: upserted.get(key) for key in ("name", "action", "execution_id")}
            return self._finish(context, definition, variable, result, recorded_for_retry=True)
        applied = _AppliedView.parse(Variable.get(variable, None))
        this_task = f"{context['ti'].dag_id}.{context['ti'].task_id}"
        if applied.fingerprint != fingerprint and applied.applied_by not in (None, this_task) and not self.take_over:
            raise DuneConfigurationError(
                f"Materialized view {definition.name} was last applied by task {applied.applied_by} with another "
                f"definition (Variable {variable}). Two tasks declaring one view differently would change it back "
                "and forth and pay a refresh on every run: keep one definition of it, or set take_over=True on the "
                "task that now owns it (or delete that Variable)."
            )
        with DuneHook(self.dune_conn_id) as hook:
            try:
                current = hook.get_materialized_view(definition.name)
            except DuneNotFoundError:
                current = None
            same = (
                current is not None
                and current.query_id == definition.query_id
                and bool(current.is_private) == definition.is_private
                and applied.fingerprint == fingerprint
            )
            if same:
                self.log.info("Materialized view %s already has this definition: nothing sent", definition.name)
                return {"name": definition.name, "action": "unchanged", "execution_id": None}
            with fail_when_unconfirmed(
                effect=f"Dune may have upserted materialized view {definition.name} and started its refresh",
                risk="a second billed refresh",
                check=f"Check materialized view {definition.name} on dune.com: if it holds query "
                f"{definition.query_id} and a refresh started just now, Dune applied it; set Variable {variable} "
                f"to {_view_record(fingerprint, context)} so later runs send nothing while the definition is "
                "unchanged. If it does not, clear this task to upsert it again.",
            ):
                upsert = hook.upsert_materialized_view(definition)
        result = {
            "name": upsert.name,
            "action": "created" if current is None else "updated",
            "execution_id": upsert.execution_id,
        }
        try:
            VIEW_UPSERT_RECORD.write(context, {**result, "fingerprint": fingerprint})
            recorded_for_retry = True
        except TaskRecordUnavailable as err:
            self.log.warning("%s", err)
            recorded_for_retry = False
        self.log.info(
            "Materialized view %s %s; Dune started refresh %s", definition.name, result["action"], upsert.execution_id
        )
        return self._finish(context, definition, variable, result, recorded_for_retry=recorded_for_retry)

    def _upserted_by_previous_try(self, context: Context, name: str, fingerprint: str) -> dict[str, Any] | None:
        """The upsert of this definition a previous try of this task instance made and could not finish recording."""
        try:
            record = VIEW_UPSERT_RECORD.read(context)
        except TaskRecordUnavailable as err:
            if try_number(context) <= 1:  # no earlier try whose upsert could be recorded
                self.log.warning("%s; this is the first try, so no earlier upsert can exist", err)
                return None
            raise AirflowException(
                f"{err}. Not upserting {name} (a billed refresh) while a previous try may already have; the next "
                "try of this task checks again."
            ) from None
        if record is None or record.get("name") != name or record.get("fingerprint") != fingerprint:
            return None
        return record

    def _finish(
        self,
        context: Context,
        definition: MaterializedViewDefinition,
        variable: str,
        result: dict[str, Any],
        *,
        recorded_for_retry: bool,
    ) -> dict[str, Any]:
        """Save the applied definition's digest, then drop the task instance's upsert record."""
        applied = _view_record(definition.fingerprint(), context)
        try:
            Variable.set(variable, applied, description=f"Definition digest of {definition.name} and who applied it")
        except Exception as err:
            if recorded_for_retry:
                raise AirflowException(
                    f"Materialized view {definition.name} was upserted but its digest could not be saved in "
                    f"Variable {variable}: {err}. A retry of this task saves it without upserting again."
                ) from None
            raise AirflowFailException(
                f"Materialized view {definition.name} was upserted (refresh {result['execution_id']}) but neither "
                f"its digest (Variable {variable}: {err}) nor a record for a retry could be saved. Set Variable "
                f"{variable} to {applied} before running this task again, or it upserts and pays a refresh again."
            ) from None
        try:
            VIEW_UPSERT_RECORD.delete(context)
        except TaskRecordUnavailable as err:
            self.log.debug("%s", err)
        context["ti"].xcom_push(key="view_uri", value=view_uri(definition.name))
        return result


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
