"""``@task.dune_sql``: a TaskFlow task whose function returns the SQL that Dune runs.

::

    from airflow.sdk import task

    @task.dune_sql(fetch_results=True, deferrable=True)
    def top_pools(day: str) -> str:
        return f"SELECT pool, SUM(amount_usd) FROM dex.trades WHERE block_date = DATE '{day}' GROUP BY 1"

The task then behaves like :class:`~airflow_provider_dune.operators.sql.DuneExecuteSQLOperator` (every keyword
argument of the decorator goes to it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar

from airflow_provider_dune.api.validation import validate_sql
from airflow_provider_dune.operators.sql import DuneExecuteSQLOperator
from airflow_provider_dune.version_compat import (
    DecoratedOperator,
    TaskDecorator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)

#: Stands in for the SQL until the function has returned it (checked again at execute).
_SQL_FROM_FUNCTION = "SELECT 'the SQL comes from the decorated function'"


class _DuneSQLDecoratedOperator(DecoratedOperator, DuneExecuteSQLOperator):
    """Calls the decorated function and runs the SQL it returns on Dune."""

    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *DuneExecuteSQLOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **DuneExecuteSQLOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.dune_sql"
    overwrite_rtif_after_execution: bool = True

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, sql=_SQL_FROM_FUNCTION, **kwargs
        )

    def execute(self, context: Any) -> Any:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        self.sql = validate_sql(self.python_callable(*self.op_args, **kwargs), what="the SQL the function returned")
        return DuneExecuteSQLOperator.execute(self, context)


def dune_sql_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """``@task.dune_sql``: wrap a function returning SQL into a
    :class:`~airflow_provider_dune.operators.sql.DuneExecuteSQLOperator` task."""
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=_DuneSQLDecoratedOperator, **kwargs
    )
