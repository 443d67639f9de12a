"""Imports that moved between Airflow 2.11 and Airflow 3, resolved once for the whole provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow import __version__ as _airflow_version
from packaging.version import Version

AIRFLOW_VERSION = Version(Version(_airflow_version).base_version)
AIRFLOW_V_3_0_PLUS = Version("3.0.0") <= AIRFLOW_VERSION
AIRFLOW_V_3_1_PLUS = Version("3.1.0") <= AIRFLOW_VERSION
AIRFLOW_V_3_3_PLUS = Version("3.3.0") <= AIRFLOW_VERSION

if TYPE_CHECKING:
    from airflow.sdk import BaseHook, BaseOperator, BaseOperatorLink, BaseSensorOperator, Variable
    from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, determine_kwargs, task_decorator_factory
    from airflow.sdk.definitions.context import context_merge
    from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException
    from airflow.sdk.io import get_fs
    from airflow.sdk.log import amask_secret, mask_secret
else:
    try:
        from airflow.sdk import BaseHook
    except ImportError:
        from airflow.hooks.base import BaseHook
    try:
        from airflow.sdk import BaseOperator, BaseOperatorLink, BaseSensorOperator
    except ImportError:
        from airflow.models import BaseOperator
        from airflow.models.baseoperatorlink import BaseOperatorLink
        from airflow.sensors.base import BaseSensorOperator
    try:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException
    except ImportError:
        from airflow.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException
    try:  # Airflow 3.1+
        from airflow.sdk.io import get_fs
    except ImportError:  # Airflow 2.11, 3.0
        from airflow.io import get_fs
    try:
        from airflow.sdk import Variable
    except ImportError:
        from airflow.models import Variable
    # TaskFlow decorator building blocks (``@task.dune_sql``). Not through common-compat's ``sdk`` module: the
    # common-compat release Airflow 3.0's constraints pin has none, and 3.1's lacks ``determine_kwargs``.
    try:  # Airflow 3.0+
        from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory
    except ImportError:  # Airflow 2.11
        from airflow.decorators.base import DecoratedOperator, TaskDecorator, task_decorator_factory
    try:  # Airflow 3.2+
        from airflow.sdk.bases.decorator import determine_kwargs
    except ImportError:  # Airflow 2.11-3.1
        from airflow.utils.operator_helpers import determine_kwargs
    try:  # Airflow 3.1+
        from airflow.sdk.definitions.context import context_merge
    except ImportError:  # Airflow 2.11-3.0
        from airflow.utils.context import context_merge
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:
        try:
            from airflow.sdk.execution_time.secrets_masker import mask_secret
        except ImportError:
            from airflow.utils.log.secrets_masker import mask_secret
    try:  # Airflow 3.3+: masking from an event loop (a trigger) without blocking it
        from airflow.sdk.log import amask_secret
    except ImportError:
        amask_secret = None

__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "DecoratedOperator",
    "TaskDecorator",
    "Variable",
    "amask_secret",
    "context_merge",
    "determine_kwargs",
    "get_fs",
    "mask_secret",
    "task_decorator_factory",
]
