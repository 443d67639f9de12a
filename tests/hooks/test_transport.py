"""What the hook's transport does on the network itself: certificates, proxies, the connection's extra, masking."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dune.api import endpoints
from airflow_provider_dune.api.connection import env_connection_problem
from airflow_provider_dune.api.errors import DuneConfigurationError, DuneTLSError
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.utils import log_safety
from tests.conftest import dune_connection_json


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _Answer(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        body = json.dumps({"billingPeriods": []}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[str]:
    cert, key = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("transport", ["sync", "async"])
def test_a_certificate_failure_says_so_and_is_not_retried(
    self_signed_server: str, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(self_signed_server))
    hook = DuneHook()
    _Answer.hits = 0
    call = hook.get_usage if transport == "sync" else lambda: asyncio.run(hook.arun(endpoints.get_usage()))
    with pytest.raises(DuneTLSError) as info:
        call()
    message = str(info.value)
    assert "TLS certificate of 127.0.0.1 could not be verified" in message
    assert "certificate verify failed" in message
    assert "closed before" not in message and "could not connect" not in message
    assert _Answer.hits == 0
    assert not info.value.request_sent


class _ProxyTrap:
    """A listening socket that counts connections: where ``HTTP_PROXY`` points in the proxy tests."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_a_loopback_api_is_never_reached_through_an_environment_proxy(
    dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain-http proxy would see the API key in clear; for the emulator on loopback no proxy is used."""
    trap = _ProxyTrap()
    try:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, trap.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        assert DuneHook().get_usage() is not None

        async def read() -> None:
            async with DuneHook() as hook:
                await hook.arun(endpoints.get_usage())

        asyncio.run(read())
    finally:
        trap.close()
    assert trap.connections == 0
    assert dune_emulator.counts["get_usage"] == 2


def test_invalid_json_in_the_extra_fails_before_any_request(
    dune_emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = json.loads(dune_connection_json(dune_emulator.url))
    conn["extra"] = '{"timeout": 5,, "max_retries": 2}'
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", json.dumps(conn))
    with pytest.raises(DuneConfigurationError, match="extra of Airflow connection 'dune_default' is not valid"):
        DuneHook().execute_query_pipeline(1001)
    assert not dune_emulator.counts


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"conn_type": "dune", "password": "SECRET-KEY-4242",, "extra": {}}', "AIRFLOW_CONN_DUNE_DEFAULT, which is"),
        ('{"conn_type": "dune", "password": "SECRET-KEY-4242", "extra": "{,"}', "extra of Airflow connection"),
        ('{"conn_type": "dune", "password": "SECRET-KEY-4242", "extra": "[1]"}', "must be a JSON object"),
    ],
    ids=["connection-not-json", "extra-not-json", "extra-not-an-object"],
)
def test_an_unreadable_connection_variable_is_named_without_its_value(
    value: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever Airflow makes of the variable (3.0/3.1: "not defined"), the user learns what is wrong with it,
    and the key in it is quoted nowhere."""
    problem = env_connection_problem("dune_default", {"AIRFLOW_CONN_DUNE_DEFAULT": value})
    assert problem is not None and expected in str(problem) and "'dune_default'" in str(problem)
    assert "SECRET-KEY-4242" not in str(problem)
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", value)
    with pytest.raises(Exception) as raised:  # noqa: PT011 - Airflow's own error on some versions
        DuneHook().settings  # noqa: B018 - reads the connection
    assert "SECRET-KEY-4242" not in str(raised.value)
    if isinstance(raised.value, DuneConfigurationError):
        assert "not defined" not in str(raised.value), "the true error was hidden"


@pytest.mark.parametrize("value", [None, "dune://:key@host", '{"conn_type": "dune", "extra": {"timeout": 5}}'])
def test_a_readable_or_absent_variable_keeps_airflows_message(value: str | None) -> None:
    environ = {} if value is None else {"AIRFLOW_CONN_DUNE_DEFAULT": value}
    assert env_connection_problem("dune_default", environ) is None


def test_the_key_is_masked_once_and_only_when_airflow_does_not(
    dune_emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    masked: list[str] = []
    monkeypatch.setattr(log_safety, "mask_secret", masked.append)
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(dune_emulator.url, api_key="from-password"))
    DuneHook().settings  # noqa: B018 - reads the connection
    assert masked == []  # a Password field is masked by Airflow itself
    conn = {"conn_type": "dune", "host": dune_emulator.url, "extra": {"api_key": "from-the-extra"}}
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", json.dumps(conn))
    DuneHook().settings  # noqa: B018
    assert masked == ["from-the-extra"]
