"""The Dune connection form, declared once for every Airflow version.

Airflow 3.2+ builds the form from the provider info (``ui-field-behaviour`` and ``conn-fields`` of the
connection type) without importing the hook. Airflow 2.11, 3.0 and 3.1 call the hook's
``get_ui_field_behaviour()`` and ``get_connection_form_widgets()`` (the latter needs ``wtforms``, which their
web servers ship). All three are built here from
:data:`~airflow_provider_dune.api.connection_fields.EXTRA_SETTINGS`,
the same list the connection parser reads, so the form and the parser cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_dune.api.connection_fields import DEFAULT_BASE_URL, EXTRA_SETTINGS, ExtraSetting

HIDDEN_FIELDS = ("schema", "login", "port")
RELABELING = {"password": "API Key", "host": "API base URL (optional)"}
PLACEHOLDERS = {
    "password": "Dune API key (dune.com > Settings > API)",
    "host": DEFAULT_BASE_URL,
}


def _json_schema(setting: ExtraSetting) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": [setting.kind, "null"]}
    if setting.minimum is not None:
        schema["minimum"] = setting.minimum
    return schema


def provider_info_connection_fields() -> dict[str, Any]:
    """``ui-field-behaviour`` and ``conn-fields`` for the ``dune`` entry of the provider info's
    ``connection-types``. No defaults are declared, so a saved form stores only what the user typed and the
    provider's own defaults apply to the rest."""
    return {
        "ui-field-behaviour": {
            "hidden-fields": list(HIDDEN_FIELDS),
            "relabeling": dict(RELABELING),
            "placeholders": dict(PLACEHOLDERS),
        },
        "conn-fields": {
            setting.name: {"label": setting.label, "description": setting.description, "schema": _json_schema(setting)}
            for setting in EXTRA_SETTINGS
        },
    }


def ui_field_behaviour() -> dict[str, Any]:
    """The same form for Airflow versions that ask the hook (``get_ui_field_behaviour``)."""
    return {
        "hidden_fields": list(HIDDEN_FIELDS),
        "relabeling": dict(RELABELING),
        "placeholders": {**PLACEHOLDERS, "extra": '{"timeout": 30, "max_retries": 5}'},
    }


def connection_form_widgets() -> dict[str, Any]:
    """The extra settings as WTForms fields, for Airflow versions that ask the hook
    (``get_connection_form_widgets``). Numbers are text fields: the connection parser validates them."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import NumberRange, Optional

    widgets: dict[str, Any] = {}
    for setting in EXTRA_SETTINGS:
        label, description = lazy_gettext(setting.label), setting.description
        if setting.kind == "boolean":
            widgets[setting.name] = BooleanField(label, description=description, default=False)
        elif setting.kind == "integer":
            validators = [Optional(), NumberRange(min=setting.minimum)]
            widgets[setting.name] = IntegerField(
                label, validators=validators, widget=BS3TextFieldWidget(), description=description
            )
        else:
            widgets[setting.name] = StringField(
                label, validators=[Optional()], widget=BS3TextFieldWidget(), description=description
            )
    return widgets
