"""The Dune connection form, declared once for every Airflow version.

Airflow 3.2+ builds the form from the provider info (``ui-field-behaviour`` and ``conn-fields`` of the
connection type) without importing the hook. Airflow 2.11, 3.0 and 3.1 call the hook's
``get_ui_field_behaviour()`` and ``get_connection_form_widgets()``, and only after ``from wtforms import ...``
succeeded: the provider depends on ``wtforms`` because Airflow 3.0 and 3.1 install none (their web UI reads
the hook's fields through ``wtforms`` stand-ins in the api-server). All three are built here from
:data:`~airflow_provider_dune.api.connection_fields.EXTRA_SETTINGS`,
the same list the connection parser reads, so the form and the parser cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_dune.api.connection_fields import (
    API_KEY_LABEL,
    BASE_URL_LABEL,
    DEFAULT_BASE_URL,
    EXTRA_SETTINGS,
    ExtraSetting,
)

HIDDEN_FIELDS = ("schema", "login", "port")
RELABELING = {"password": API_KEY_LABEL, "host": f"{BASE_URL_LABEL} (optional)"}
#: The example DAG that checks a connection from the UI where the form's Test button cannot (Airflow <= 3.3.2).
CONNECTION_CHECK_DAG_ID = "dune_connection_check"
PLACEHOLDERS = {
    "password": f"Dune API key (dune.com > Settings > API); to check it, trigger the {CONNECTION_CHECK_DAG_ID} DAG",
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


def _number_check(setting: ExtraSetting) -> Any:
    """A WTForms validator for a number typed into a text field (Airflow 2.11's form has no number field that
    its connection form accepts): a number, at least the setting's minimum."""

    def check(form: Any, field: Any) -> None:
        from wtforms.validators import ValidationError

        text = str(field.data or "").strip()
        if not text:
            return
        try:
            value = float(text)
        except ValueError:
            raise ValidationError("Enter a number.") from None
        if setting.minimum is not None and value < setting.minimum:
            raise ValidationError(f"Enter a number of at least {setting.minimum:g}.")

    return check


def _text_widget() -> dict[str, Any]:
    """The Bootstrap text input of Airflow 2.11's Flask-AppBuilder form, when Flask-AppBuilder is there (Airflow
    3's api-server replaces it with a stand-in, or has none)."""
    try:
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    except ImportError:
        return {}
    return {"widget": BS3TextFieldWidget()}


def _describe_for_the_api_server(field: Any, setting: ExtraSetting) -> Any:
    """Type the field in the JSON schema that Airflow 3.0/3.1's api-server serves for it.

    Their ``/ui/connections/hook_meta`` calls this form with ``wtforms`` stand-ins that hold the field as an
    Airflow ``Param`` (``field.param``); they know text, whole-number and yes/no fields only, and drop the
    validators. The schema gets the setting's kind (``number`` for the timeouts and budgets), as in the
    provider info Airflow 3.2+ reads. Their number input reads an empty field as 0 and marks it invalid below
    its minimum, so only a minimum an empty field meets is served (the connection parser checks the others
    when the connection is used). A real WTForms field (Airflow 2.11's web server) has no ``param`` and is
    returned as it is.
    """
    schema = getattr(getattr(field, "param", None), "schema", None)
    if isinstance(schema, dict):
        schema["type"] = [setting.kind, "null"]
        if setting.minimum is not None and setting.minimum <= 0:
            schema["minimum"] = setting.minimum
    return field


def connection_form_widgets() -> dict[str, Any]:
    """The extra settings as WTForms fields, for Airflow versions that ask the hook
    (``get_connection_form_widgets``). Numbers are text fields checked by :func:`_number_check` (Airflow accepts
    only text, integer, password and boolean fields here); the api-server of Airflow 3.0/3.1 is told they are
    numbers. Needs ``wtforms`` only: Flask-AppBuilder's widget is used when it is installed."""
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import NumberRange, Optional

    widget = _text_widget()
    widgets: dict[str, Any] = {}
    for setting in EXTRA_SETTINGS:
        label, description = setting.label, setting.description
        if setting.kind == "boolean":
            field = BooleanField(label, description=description)
        elif setting.kind == "integer":
            validators = [Optional(), NumberRange(min=setting.minimum)]
            field = IntegerField(label, validators=validators, description=description, **widget)
        else:
            field = StringField(
                label, validators=[Optional(), _number_check(setting)], description=description, **widget
            )
        widgets[setting.name] = _describe_for_the_api_server(field, setting)
    return widgets
