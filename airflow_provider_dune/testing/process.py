"""Run the Dune API emulator in a child process (for demos and benchmarks that must not share its CPU)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from airflow_provider_dune.testing.emulator import DuneEmulatorClient

START_LINE_MARKER = "listening on "


@dataclass(frozen=True)
class EmulatorProcess:
    """A running emulator child: its API URL, process id and a control client."""

    url: str
    pid: int
    client: DuneEmulatorClient


def _read_start_line(process: subprocess.Popen[str], timeout: float) -> str:
    found: list[str] = []
    reader = threading.Thread(
        target=lambda: found.append(process.stdout.readline() if process.stdout else ""), daemon=True
    )
    reader.start()
    reader.join(timeout)
    line = found[0] if found else ""
    if START_LINE_MARKER not in line:
        raise RuntimeError(f"the Dune API emulator did not start (exit code {process.poll()}): {line.strip()!r}")
    # Keep draining stdout so the emulator never blocks on a full pipe.
    threading.Thread(target=lambda: process.stdout and process.stdout.read(), daemon=True).start()
    return line.split(START_LINE_MARKER, 1)[1].strip()


def _stop(process: subprocess.Popen[str], grace: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@contextlib.contextmanager
def emulator_process(
    api_key: str,
    *,
    log_path: Path | None = None,
    seed: bool = True,
    extra_args: Sequence[str] = (),
    start_timeout: float = 20.0,
) -> Iterator[EmulatorProcess]:
    """Start ``dune-emulator`` on a free loopback port in a new session; always stop it on exit.

    :param api_key: the write key the emulator accepts (passed in the environment, not on the command line).
    :param log_path: where its stderr goes (discarded when ``None``).
    :param seed: load the bundled demo catalog (``--no-seed`` otherwise).
    :param extra_args: more command line options, e.g. ``["--time-scale", "0.5"]``.
    """
    argv = [sys.executable, "-m", "airflow_provider_dune.testing.emulator", "--port", "0", *extra_args]
    if not seed:
        argv.append("--no-seed")
    with contextlib.ExitStack() as stack:
        stderr = stack.enter_context(log_path.open("w")) if log_path is not None else subprocess.DEVNULL
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv,
            env={**os.environ, "DUNE_EMULATOR_API_KEY": api_key},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # Ctrl-C in the terminal reaches the parent, which stops the child
        )
        try:
            url = _read_start_line(process, start_timeout)
            yield EmulatorProcess(url=url, pid=process.pid, client=DuneEmulatorClient(url))
        finally:
            _stop(process)
