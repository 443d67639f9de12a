"""The one rule for a billed or data-writing request whose fate is unknown: never send it again unasked.

A request that starts a run, refreshes a view, creates an object or writes rows is marked
``may_have_started_run`` by the hook when no answer confirmed it (no answer, a dropped connection, a 5xx, an
unreadable answer). Resending it could pay twice or write the rows twice, and an Airflow retry counts as
resending, so the task fails without retries and says where to look.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from airflow_provider_dune.api.errors import DuneAPIError
from airflow_provider_dune.version_compat import AirflowFailException

log = logging.getLogger(__name__)


@contextmanager
def fail_when_unconfirmed(
    *, effect: str, risk: str, check: str, retry_setting: str | None = None, allow_retry: bool = False
) -> Iterator[None]:
    """Turn an unconfirmed request's error into a failure without retries.

    :param effect: what may have happened, e.g. ``"Dune may have started the run"``.
    :param risk: what a resend would cost, e.g. ``"a second billed run"``.
    :param check: where the user sees what happened and what to do then.
    :param retry_setting: the operator argument that lets Airflow retry anyway (named in the message).
    :param allow_retry: that argument's value: the error is raised as it is, with a warning.
    """
    try:
        yield
    except DuneAPIError as err:
        if not err.may_have_started_run:
            raise
        if allow_retry:
            log.warning(
                "%s although the request failed; %s=True lets Airflow retry this task, which may cost %s",
                effect,
                retry_setting,
                risk,
            )
            raise
        hint = f" Set {retry_setting}=True to let Airflow's retries send it again instead." if retry_setting else ""
        raise AirflowFailException(
            f"{err}\n{effect}, but no answer confirmed it, so this task fails without retries instead of risking "
            f"{risk}. {check}{hint}"
        ) from None
