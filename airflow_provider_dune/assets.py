"""Airflow assets for Dune objects: the ``dune://`` URI scheme, its normalisation, and helpers to build assets.

URIs name the kind of object, then the object::

    dune://views/dune.team.result_daily_volume     a materialized view, by full name (lower case)
    dune://queries/1234                            a saved query's latest result, by query id

:func:`dune_view_asset` and :func:`dune_query_asset` build the assets (``Dataset`` on Airflow 2.11). A
successful run records one event per object it refreshed, with extra (execution ids, row counts): on the declared
``dune://`` outlet for that object, or else through every declared ``AssetAlias`` (``DatasetAlias``), so views a
query pipeline refreshed can be consumed without naming them in advance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from airflow_provider_dune.api.validation import validate_query_id, validate_view_name

SCHEME = "dune"
VIEWS = "views"
QUERIES = "queries"
#: The OpenLineage namespace of every Dune dataset.
OPENLINEAGE_NAMESPACE = "dune"


def view_uri(name: str) -> str:
    """``dune://views/<full name>`` for a materialized view such as ``dune.team.result_x``."""
    return f"{SCHEME}://{VIEWS}/{validate_view_name(name).lower()}"


def query_uri(query_id: Any) -> str:
    """``dune://queries/<id>`` for a saved query's latest result."""
    return f"{SCHEME}://{QUERIES}/{validate_query_id(query_id)}"


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Normalise and check a ``dune://`` URI (registered with Airflow for the ``dune`` scheme)."""
    kind = (uri.netloc or "").lower()
    path = uri.path.strip("/")
    if uri.query or uri.fragment:
        raise ValueError(f"a dune:// asset URI takes no query or fragment: {uri.geturl()!r}")
    try:
        if kind == VIEWS:
            return urlsplit(view_uri(path))
        if kind == QUERIES:
            return urlsplit(query_uri(path))
    except Exception as err:  # validation errors carry the reason
        raise ValueError(f"invalid dune:// asset URI {uri.geturl()!r}: {err}") from None
    raise ValueError(
        f"invalid dune:// asset URI {uri.geturl()!r}: use dune://{VIEWS}/<view full name> or dune://{QUERIES}/<id>"
    )


def parse_uri(uri: str) -> tuple[str, str]:
    """``(kind, identifier)`` of a normalised ``dune://`` URI, e.g. ``("views", "dune.team.result_x")``."""
    parts = sanitize_uri(urlsplit(uri))
    return parts.netloc, parts.path.strip("/")


def _asset_classes() -> tuple[Any, Any]:
    """``(Asset, AssetAlias)``, or ``(Dataset, DatasetAlias)`` on Airflow 2.11."""
    try:
        from airflow import sdk

        return sdk.Asset, sdk.AssetAlias
    except (ImportError, AttributeError):
        from airflow import datasets

        return datasets.Dataset, datasets.DatasetAlias


def dune_view_asset(name: str, **kwargs: Any) -> Any:
    """An ``Asset`` (``Dataset`` on Airflow 2.11) for a materialized view; ``kwargs`` go to the asset."""
    asset_class, _ = _asset_classes()
    return asset_class(uri=view_uri(name), **kwargs)


def dune_query_asset(query_id: Any, **kwargs: Any) -> Any:
    """An ``Asset`` (``Dataset`` on Airflow 2.11) for a saved query's latest result."""
    asset_class, _ = _asset_classes()
    return asset_class(uri=query_uri(query_id), **kwargs)


def create_asset(*, view_name: str | None = None, query_id: Any = None, **kwargs: Any) -> Any:
    """Asset factory registered with Airflow for the ``dune`` scheme."""
    if (view_name is None) == (query_id is None):
        raise ValueError("pass exactly one of view_name or query_id")
    return dune_view_asset(view_name, **kwargs) if view_name is not None else dune_query_asset(query_id, **kwargs)


def convert_asset_to_openlineage(asset: Any, lineage_context: Any = None) -> Any:
    """The OpenLineage dataset of a ``dune://`` asset (registered with Airflow for the ``dune`` scheme)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset as OpenLineageDataset

    kind, identifier = parse_uri(asset.uri)
    return OpenLineageDataset(namespace=OPENLINEAGE_NAMESPACE, name=f"{kind}/{identifier}")


@dataclass(frozen=True)
class RefreshedObject:
    """A Dune object a run refreshed, and the extra its asset event carries."""

    uri: str
    extra: dict[str, Any] = field(default_factory=dict)


def refreshed_by_pipeline(details: Mapping[str, Any]) -> list[RefreshedObject]:
    """Every view and query a finished pipeline run completed, in node order."""
    pipeline_id = details.get("pipeline_execution_id")
    refreshed: list[RefreshedObject] = []
    for node in details.get("nodes") or ():
        if not isinstance(node, Mapping) or node.get("state") != "completed":
            continue
        extra = {
            "pipeline_execution_id": pipeline_id,
            "execution_id": node.get("execution_id"),
            "credits": node.get("credits"),
        }
        if node.get("kind") == "materialized_view_refresh" and node.get("view_name"):
            refreshed.append(RefreshedObject(view_uri(str(node["view_name"])), extra))
        elif node.get("kind") == "query_execution" and node.get("query_id"):
            refreshed.append(RefreshedObject(query_uri(node["query_id"]), extra))
    return refreshed


def refreshed_by_query(details: Mapping[str, Any], query_id: Any) -> list[RefreshedObject]:
    metadata = details.get("result_metadata") or {}
    extra: dict[str, Any] = {"execution_id": details.get("execution_id"), "credits": details.get("total_credits")}
    if isinstance(metadata, Mapping) and metadata.get("total_row_count") is not None:
        extra["row_count"] = metadata["total_row_count"]
    return [RefreshedObject(query_uri(query_id), extra)]


def refreshed_by_view_refresh(details: Mapping[str, Any], view_name: str) -> list[RefreshedObject]:
    extra = {"execution_id": details.get("execution_id"), "credits": details.get("total_credits")}
    return [RefreshedObject(view_uri(view_name), extra)]


def emit_asset_events(
    context: Mapping[str, Any], outlets: Sequence[Any], refreshed: Iterable[RefreshedObject], log: Any
) -> None:
    """Record one asset event per object the run refreshed, with its extra (execution ids, row count).

    A refreshed object declared as a ``dune://`` outlet gets the extra on the event Airflow emits for that
    outlet and is not added to any alias. Every other refreshed object is added to each declared alias with the
    same extra, which Airflow records as one event linked to all of those aliases.
    """
    events = context.get("outlet_events")
    if events is None or not outlets:
        return
    by_uri = {item.uri: item for item in refreshed}  # an object refreshed twice in one run: its last refresh
    if not by_uri:
        return
    asset_class, alias_class = _asset_classes()
    aliases = [outlet for outlet in outlets if isinstance(outlet, alias_class)]
    declared: set[str] = set()
    for outlet in outlets:
        uri = None if isinstance(outlet, alias_class) else _dune_uri(getattr(outlet, "uri", None))
        if uri is None:
            continue
        declared.add(uri)
        match = by_uri.get(uri)
        if match is None:
            log.warning(
                "Outlet %s was not refreshed by this run (it refreshed %s); Airflow still emits its event",
                uri,
                ", ".join(by_uri),
            )
            continue
        events[outlet].extra.update(_clean(match.extra))
    undeclared = [item for uri, item in by_uri.items() if uri not in declared]
    if not aliases or not undeclared:
        return
    for alias in aliases:
        for item in undeclared:
            events[alias].add(asset_class(uri=item.uri), extra=_clean(item.extra))
    log.info(
        "Asset alias%s %s: %s",
        "es" if len(aliases) > 1 else "",
        ", ".join(alias.name for alias in aliases),
        ", ".join(item.uri for item in undeclared),
    )


def _dune_uri(uri: Any) -> str | None:
    """The normalised form of a ``dune://`` URI, or None for anything else."""
    if not isinstance(uri, str) or not uri.lower().startswith(f"{SCHEME}://"):
        return None
    try:
        return sanitize_uri(urlsplit(uri)).geturl()
    except ValueError:  # Airflow itself refuses (3) or warns about (2.11) such an outlet
        return None


def _clean(extra: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in extra.items() if value is not None}
