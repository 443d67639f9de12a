"""Example DAGs for airflow-provider-dune (also the ``make demo`` driver, :mod:`example_dags.demo`).

Every DAG reads its Dune query ids and connection id from environment variables, with defaults that match
the bundled Dune API emulator's demo catalog, so the same files run against the emulator and against real
Dune queries::

    DUNE_CONN_ID                       Airflow connection id (default: dune_default)
    DUNE_POLL_INTERVAL                 seconds between status calls (default: 30)
    DUNE_NIGHTLY_QUERY_ID              query of dune_nightly_refresh (default: 1001)
    DUNE_RETRIES                       task retries of dune_nightly_refresh (default: 1; the demo uses 0)
    DUNE_RETRY_DELAY                   seconds between them (default: 300)
    DUNE_PIPELINE_SOURCE_QUERY_ID      first node of dune_explicit_pipeline (default: 1000)
    DUNE_PIPELINE_VIEW_NAME            materialized view node of dune_explicit_pipeline
    DUNE_PIPELINE_REPORT_QUERY_ID      last node of dune_explicit_pipeline (default: 1001)
    DUNE_TRIGGER_THEN_SENSE_QUERY_ID   query of dune_trigger_then_sense (default: 1005)
    DUNE_REFRESH_QUERY_IDS             comma-separated queries of dune_refresh_many (default: 1001,1003,1005)
    DUNE_EXPORT_DIR                    where dune_as_code writes its CSV (default: $AIRFLOW_HOME/dune_exports)
    DUNE_WATCHED_VIEW                  view of dune_on_view_refresh (default: dune.demo.result_token_prices_hourly)
    DUNE_REFRESHED_VIEW, DUNE_PRICE_QUERY_ID, DUNE_VOLUME_QUERY_ID, DUNE_VIEW_QUERY_ID, DUNE_VIEW_AS_CODE,
    DUNE_UPLOAD_NAMESPACE              dune_queries_views_and_data (defaults in its docstring)
"""
