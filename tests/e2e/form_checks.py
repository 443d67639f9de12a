"""The Dune connection form as a running Airflow serves it and as Chromium shows it, on every supported version.

Two helpers for the end-to-end tests that start an Airflow web server of any supported version:

* :func:`served_form_fields` reads what the server sends for the ``dune`` connection type: on Airflow 3 the
  JSON of ``/ui/connections/hook_meta`` (the React UI builds the form from it), on Airflow 2.11 the HTML of the
  Flask-AppBuilder page ``/connection/add`` (the form fields and the ``field_behaviours`` JSON its script applies).
* :func:`check_dune_form_in_browser` opens Admin > Connections > Add in Chromium, picks the "Dune" type, opens
  the "Extra Fields" section where the version has one, and returns the labels a user sees.

Both return the same shapes on every version, so a test asserts one expectation everywhere (see
``tests/e2e/test_form_versions.py``). Neither reads nor fills the API key.
"""

from __future__ import annotations

import contextlib
import html
import http.cookiejar
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

from packaging.version import Version

#: The connection type the helpers look at.
CONN_TYPE = "dune"
#: Airflow's names of the standard connection fields (Airflow 3's hook_meta calls ``schema`` ``url_schema``).
STANDARD_FIELDS = ("description", "host", "schema", "login", "password", "port")


def _version(airflow_version: str | Version) -> Version:
    version = airflow_version if isinstance(airflow_version, Version) else Version(str(airflow_version))
    return Version(version.base_version)


def _field(
    label: str | None,
    kind: str | None,
    *,
    extra: bool,
    hidden: bool = False,
    placeholder: str | None = None,
    description: str | None = None,
    minimum: float | None = None,
) -> dict[str, Any]:
    return {
        "label": label,
        "type": kind,
        "extra": extra,
        "hidden": hidden,
        "placeholder": placeholder,
        "description": description,
        "minimum": minimum,
    }


# -- what the server serves ------------------------------------------------------------------------------


def served_form_fields(
    base_url: str,
    token: str | None,
    airflow_version: str | Version,
    *,
    login: tuple[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """What the web server at ``base_url`` serves for the Dune connection form.

    :param base_url: the web server, e.g. ``http://127.0.0.1:8080`` (no trailing slash).
    :param token: Airflow 3: a REST API bearer token; ``None`` asks ``/auth/token`` for one, which works when the
        simple auth manager makes everyone admin (``[core] simple_auth_manager_all_admins``). Unused on 2.11.
    :param airflow_version: the server's Airflow version (``"3.1.8"``, ``airflow.__version__``, a ``Version``).
    :param login: Airflow 2.11: ``(username, password)`` of a Flask-AppBuilder user allowed to add connections;
        ``None`` when the server lets anonymous users in (``AUTH_ROLE_PUBLIC``). Unused on Airflow 3.
    :return: field name -> ``{"label", "type", "extra", "hidden", "placeholder", "description", "minimum"}``.
        Standard fields are keyed ``host``, ``schema``, ``login``, ``password``, ``port``, ``description``
        (Airflow 3 lists only those the Dune form changes); extra settings by their key in the extra JSON.
        ``type`` of an extra setting is its JSON schema type on Airflow 3 (``number``, ``integer``,
        ``boolean``, ``string``); on 2.11 it is what the HTML input takes: ``boolean`` for a checkbox,
        ``string`` for a text input (2.11's form checks numbers when it is saved). ``type`` of a standard
        field is ``None`` on Airflow 3, which does not serve it. A missing Dune type raises ``AssertionError``.
    """
    if _version(airflow_version).major >= 3:
        return _hook_meta_fields(base_url, token or _all_admins_token(base_url))
    return _fab_form_fields(base_url, login)


def _all_admins_token(base_url: str) -> str:
    """The token ``/auth/token`` hands out when every user is admin (Airflow 3's simple auth manager)."""
    with urllib.request.urlopen(urllib.request.Request(base_url + "/auth/token"), timeout=30) as response:
        return str(json.load(response)["access_token"])


def _hook_meta_fields(base_url: str, token: str) -> dict[str, dict[str, Any]]:
    request = urllib.request.Request(
        base_url + "/ui/connections/hook_meta", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        metadata = json.load(response)
    dune = [meta for meta in metadata if meta.get("connection_type") == CONN_TYPE]
    types = sorted(str(meta.get("connection_type")) for meta in metadata)
    assert len(dune) == 1, f"/ui/connections/hook_meta serves no single {CONN_TYPE!r} connection type: {types}"
    fields: dict[str, dict[str, Any]] = {}
    for name, behaviour in (dune[0].get("standard_fields") or {}).items():
        if behaviour is not None:
            fields["schema" if name == "url_schema" else name] = _field(
                behaviour.get("title"),
                None,
                extra=False,
                hidden=bool(behaviour.get("hidden")),
                placeholder=behaviour.get("placeholder"),
            )
    for name, param in (dune[0].get("extra_fields") or {}).items():
        schema = param.get("schema") or {}
        kinds = schema.get("type")
        kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
        fields[name] = _field(
            schema.get("title"),
            next((kind for kind in kinds if kind != "null"), None),
            extra=True,
            description=param.get("description"),
            minimum=schema.get("minimum"),
        )
    return fields


class _FormParser(HTMLParser):
    """The labels, inputs, help texts and ``field_behaviours`` script of a Flask-AppBuilder add form."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.labels: dict[str, str] = {}
        self.inputs: dict[str, dict[str, str]] = {}
        self.help: dict[str, str] = {}
        self.scripts: dict[str, str] = {}
        self.csrf_token: str | None = None
        self._label_for: str | None = None
        self._script_id: str | None = None
        self._help = False
        self._last_input: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "label" and attributes.get("for"):
            self._label_for, self._text = attributes["for"], []
        elif tag in ("input", "select", "textarea") and attributes.get("id"):
            self.inputs[attributes["id"]] = {"tag": tag, **attributes}
            self._last_input = attributes["id"]
            if attributes.get("name") == "csrf_token":
                self.csrf_token = attributes.get("value")
        elif tag == "script" and attributes.get("id"):
            self._script_id, self._text = attributes["id"], []
        elif tag == "span" and "help-block" in attributes.get("class", "").split():
            self._help, self._text = True, []

    def handle_data(self, data: str) -> None:
        if self._label_for or self._script_id or self._help:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self._label_for:
            self.labels[self._label_for] = " ".join("".join(self._text).split())
            self._label_for = None
        elif tag == "script" and self._script_id:
            self.scripts[self._script_id] = "".join(self._text)
            self._script_id = None
        elif tag == "span" and self._help:
            text = " ".join("".join(self._text).split())
            if self._last_input and text:
                self.help.setdefault(self._last_input, text)
            self._help = False


def _fab_opener(base_url: str, login: tuple[str, str] | None) -> urllib.request.OpenerDirector:
    """A urllib opener with a Flask-AppBuilder session: logged in through ``/login/`` when ``login`` is set."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    if login is None:
        return opener
    with opener.open(base_url + "/login/", timeout=60) as response:
        page = _FormParser()
        page.feed(response.read().decode())
    body = urllib.parse.urlencode(
        {"username": login[0], "password": login[1], "csrf_token": page.csrf_token or ""}
    ).encode()
    with opener.open(urllib.request.Request(base_url + "/login/", data=body, method="POST"), timeout=60) as answer:
        assert "/login" not in urllib.parse.urlsplit(answer.geturl()).path, f"the login as {login[0]!r} failed"
    return opener


def _fab_form_fields(base_url: str, login: tuple[str, str] | None) -> dict[str, dict[str, Any]]:
    opener = _fab_opener(base_url, login)
    with opener.open(base_url + "/connection/add", timeout=60) as response:
        assert "/login" not in urllib.parse.urlsplit(response.geturl()).path, "/connection/add asks for a login"
        page = _FormParser()
        page.feed(response.read().decode())
    # the template writes the JSON HTML-escaped into a script element, whose text the parser leaves as it is
    behaviours = json.loads(html.unescape(page.scripts.get("field_behaviours") or "{}"))
    behaviour = behaviours.get(CONN_TYPE) or {}
    hidden = set(behaviour.get("hidden_fields", []))
    relabeling = behaviour.get("relabeling", {})
    placeholders = behaviour.get("placeholders", {})
    fields: dict[str, dict[str, Any]] = {}
    for name in STANDARD_FIELDS:
        element = page.inputs.get(name)
        if element is None:
            continue
        fields[name] = _field(
            relabeling.get(name) or page.labels.get(name),
            "password" if element.get("type") == "password" else "string",
            extra=False,
            hidden=name in hidden,
            placeholder=placeholders.get(name),
        )
    prefix = f"extra__{CONN_TYPE}__"
    for element_id, element in page.inputs.items():
        if element_id.startswith(prefix):
            name = element_id[len(prefix) :]
            fields[name] = _field(
                page.labels.get(element_id),
                "boolean" if element.get("type") == "checkbox" else "string",
                extra=True,
                hidden=element_id in hidden or name in hidden,
                placeholder=placeholders.get(element_id),
                description=page.help.get(element_id),
            )
    assert any(field["extra"] for field in fields.values()) or behaviour, (
        f"/connection/add has no form fields and no field behaviour for the {CONN_TYPE!r} connection type"
    )
    return fields


# -- what Chromium shows ---------------------------------------------------------------------------------

#: The labels in ``root`` that are shown (not ``display: none``, not in a collapsed section) and name a form
#: control (``<label for>`` or ``aria-labelledby``): what a user reads next to a field, and what a test (or
#: a screen reader) finds the field by.
_VISIBLE_LABELS_JS = """(root) => Array.from(root.querySelectorAll("label")).filter((label) => {
    const box = label.getBoundingClientRect();
    const shown = label.checkVisibility ? label.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})
                                        : label.offsetParent !== null;
    const named = label.id ? document.querySelector(`[aria-labelledby~="${CSS.escape(label.id)}"]`) : null;
    return shown && box.width > 0 && box.height > 0 && Boolean(label.control || named);
}).map((label) => label.innerText)"""


def _clean_label(text: str) -> str:
    """A label as a user reads it: one line, without the required-field asterisk."""
    return " ".join(text.replace("*", " ").split())


def _visible_labels(scope: Any, settle: float = 0.4, timeout: float = 10.0) -> list[str]:
    """The visible labels in ``scope`` once they stop changing (sections open and close with an animation)."""
    deadline = time.monotonic() + timeout
    previous: list[str] | None = None
    while True:
        labels = [_clean_label(text) for text in scope.evaluate(_VISIBLE_LABELS_JS)]
        labels = [label for label in labels if label]
        if labels == previous or time.monotonic() > deadline:
            return labels
        previous = labels
        time.sleep(settle)


def _merge(seen: list[str], more: list[str]) -> None:
    for label in more:
        if label not in seen:
            seen.append(label)


@contextlib.contextmanager
def _chromium_page() -> Iterator[Any]:
    """A fresh headless Chromium page (Debian's chromium, see ``tests/e2e/browser.py``), closed afterwards."""
    from playwright.sync_api import sync_playwright

    from .browser import CHROMIUM_ARGS, chromium_path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def check_dune_form_in_browser(
    page_or_base_url: Any,
    airflow_version: str | Version,
    *,
    login: tuple[str, str] | None = None,
    base_url: str | None = None,
) -> list[str]:
    """Open Admin > Connections > Add in Chromium, pick "Dune" and return the labels a user sees.

    :param page_or_base_url: the web server's URL (``http://127.0.0.1:8080``): a headless Debian Chromium is
        started and closed for the check; or a Playwright ``Page`` to use (left open), already logged in or
        not.
    :param airflow_version: the server's Airflow version; 3.x is the React UI, 2.11 the Flask-AppBuilder page.
    :param login: ``(username, password)`` for a login page on the way (Airflow 3's simple auth manager with
        users, Airflow 2.11's Flask-AppBuilder); ``None`` when there is none (all admins, or a logged-in page).
    :param base_url: the web server when a ``Page`` is passed and it is not already on the server's site.
    :return: the labels of every field shown for the Dune type, in page order, each once, without the
        required-field asterisk; a label counts when it is visible and names its input (``<label for>`` or
        ``aria-labelledby``), so a field found by its label (Playwright's ``get_by_label``) is in it: the
        connection's own fields (e.g. "Connection ID"), the standard fields the Dune form keeps ("API base URL
        (optional)", "API Key", ...) and, on Airflow 3 after opening "Extra Fields", every extra setting
        (Airflow 3.0/3.1 close the standard section when another one opens: labels seen in either state
        count). Hidden fields (Login, Port, Schema) are not in it.
    """
    if isinstance(page_or_base_url, str):
        with _chromium_page() as page:
            return _check_form(page, page_or_base_url.rstrip("/"), _version(airflow_version), login)
    page = page_or_base_url
    url = base_url or _origin(page.url)
    assert url.startswith("http"), f"pass base_url: the page is on {page.url!r}"
    return _check_form(page, url.rstrip("/"), _version(airflow_version), login)


def _check_form(page: Any, base_url: str, version: Version, login: tuple[str, str] | None) -> list[str]:
    if version.major >= 3:
        return _react_form_labels(page, base_url, login)
    return _fab_form_labels(page, base_url, login)


def _react_login(page: Any, base_url: str, login: tuple[str, str] | None) -> None:
    """Land on the UI's home page: through the simple auth manager's login form when it shows one. With all
    admins the UI first fetches a token and redirects home, so a deep link opened straight away may be lost."""
    page.goto(base_url + "/")
    page.wait_for_load_state("networkidle")
    if "/login" in page.url:
        assert login is not None, f"{base_url} asks for a login: pass login=(username, password)"
        page.get_by_label("Username").fill(login[0])
        page.get_by_label("Password").fill(login[1])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login" not in url)
        page.wait_for_load_state("networkidle")


def _react_form_labels(page: Any, base_url: str, login: tuple[str, str] | None) -> list[str]:
    _react_login(page, base_url, login)
    page.goto(base_url + "/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").first.click()
    page.keyboard.type("Dune")
    page.get_by_role("option", name="Dune", exact=True).click()
    standard = dialog.get_by_role("button", name="Standard Fields", exact=True)
    standard.wait_for()
    labels = _visible_labels(dialog)
    extra = dialog.get_by_role("button", name="Extra Fields", exact=True)
    if extra.count():
        extra.click()
        _merge(labels, _visible_labels(dialog))
    return labels


def _fab_form_labels(page: Any, base_url: str, login: tuple[str, str] | None) -> list[str]:
    page.goto(base_url + "/connection/add")
    if "/login" in page.url:
        assert login is not None, f"{base_url} asks for a login: pass login=(username, password)"
        page.locator("#username").fill(login[0])
        page.locator("#password").fill(login[1])
        page.locator("input[type=submit], button[type=submit]").first.click()
        page.wait_for_url(lambda url: "/login" not in url)
        page.goto(base_url + "/connection/add")
    page.locator("#conn_type").select_option(CONN_TYPE, force=True)
    form = page.locator("form#model_form")
    form.wait_for()
    return _visible_labels(form)
