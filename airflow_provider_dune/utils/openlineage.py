"""OpenLineage for the Dune operators (optional: ``pip install airflow-provider-dune[openlineage]``).

Outputs are the Dune objects a run refreshed, as datasets in the ``dune`` namespace named like their asset URIs
(``views/dune.team.result_x``, ``queries/1234``); the job facet ``dune`` names the query or view, the run facets
carry the Dune run ids (``externalQuery`` for the first, ``dune`` for all) and, on failure, the error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_dune.api.errors import DuneError
from airflow_provider_dune.assets import OPENLINEAGE_NAMESPACE, RefreshedObject, parse_uri


def _facet_classes() -> tuple[type, type]:
    """The ``dune`` job and run facets (built on first use: the OpenLineage client is optional)."""
    global _FACETS
    if _FACETS is None:
        import attrs
        from openlineage.client.facet_v2 import JobFacet, RunFacet

        @attrs.define
        class DuneJobFacet(JobFacet):
            """What the task runs on Dune."""

            operation: str
            query_id: int | None = None
            view_name: str | None = None

        @attrs.define
        class DuneRunFacet(RunFacet):
            """The Dune runs behind this task run."""

            run_id_field: str
            run_id: str | None
            execution_ids: list[str] = attrs.field(factory=list)
            error: str | None = None
            credits: float | None = None

        _FACETS = (DuneJobFacet, DuneRunFacet)
    return _FACETS


_FACETS: tuple[type, type] | None = None


def operator_lineage(
    *,
    operation: str,
    refreshed: Sequence[RefreshedObject],
    run_id_field: str,
    run_id: str | None,
    details: Mapping[str, Any],
    query_id: int | None = None,
    view_name: str | None = None,
    error: str | None = None,
) -> Any:
    """An ``OperatorLineage`` for one Dune task run."""
    try:
        from airflow.providers.common.compat.openlineage.facet import (
            Dataset,
            ErrorMessageRunFacet,
            ExternalQueryRunFacet,
            OutputStatisticsOutputDatasetFacet,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage

        job_facet_class, run_facet_class = _facet_classes()
    except ImportError:
        raise DuneError(
            "OpenLineage facets need the OpenLineage provider: pip install 'airflow-provider-dune[openlineage]'"
        ) from None
    outputs = []
    for item in refreshed:
        kind, identifier = parse_uri(item.uri)
        facets: dict[str, Any] = {}
        if item.extra.get("row_count") is not None:
            facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(rowCount=int(item.extra["row_count"]))
        outputs.append(Dataset(namespace=OPENLINEAGE_NAMESPACE, name=f"{kind}/{identifier}", facets=facets))
    execution_ids = _execution_ids(details)
    run_facets: dict[str, Any] = {
        "dune": run_facet_class(
            run_id_field=run_id_field,
            run_id=run_id,
            execution_ids=execution_ids,
            error=error,
            credits=_credits(details),
        )
    }
    if run_id:
        run_facets["externalQuery"] = ExternalQueryRunFacet(externalQueryId=run_id, source=OPENLINEAGE_NAMESPACE)
    if error:
        run_facets["errorMessage"] = ErrorMessageRunFacet(message=error, programmingLanguage="SQL")
    job_facets = {"dune": job_facet_class(operation=operation, query_id=query_id, view_name=view_name)}
    return OperatorLineage(inputs=[], outputs=outputs, run_facets=run_facets, job_facets=job_facets)


def _execution_ids(details: Mapping[str, Any]) -> list[str]:
    ids = [str(node["execution_id"]) for node in details.get("nodes") or () if node.get("execution_id")]
    if not ids and details.get("execution_id"):
        ids = [str(details["execution_id"])]
    return ids


def _credits(details: Mapping[str, Any]) -> float | None:
    """The run's ``total_credits`` from its summary, when known."""
    value = details.get("total_credits")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
