"""Peak memory of reading one large result: one ~500 MiB page (how results were read before pages were sized
by bytes) against the pages ``DuneHook.iter_execution_results`` asks for now (about 32 MiB of JSON each).

A small HTTP server in its own process serves ``GET .../status`` and ``GET .../results?limit&offset`` for one
finished execution of ``--rows`` rows of ``--row-kb`` KB each, writing every answer as it generates it (so the
server holds no page in memory). Each mode then runs in a fresh client process that reads every page with the
hook, keeps only a row count, and reports its peak RSS (``ru_maxrss``) and its RSS after imports.

* ``one page (before)``: ``page_size`` = all rows, no byte sizing, the old 512 MiB cap.
* ``byte-sized pages (now)``: the defaults.

Run by hand: ``python -m bench.results_memory [--rows 10000] [--row-kb 52]`` (needs ~2 GB of free memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from bench import common

EXECUTION_ID = "01HBENCHRESULTSMEMORY00000"
COLUMNS = ("n", "payload")
MODES = ("one page (before)", "byte-sized pages (now)")


def serve(rows: int, row_bytes: int) -> None:
    """The fake Dune API (in this process, until killed); prints its port first."""
    payload = "x" * row_bytes

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, body_parts: Any) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            for part in body_parts:
                self.wfile.write(part.encode())

        def do_GET(self) -> None:
            url = urlparse(self.path)
            metadata = {"column_names": list(COLUMNS), "column_types": ["integer", "varchar"]}
            total = {"total_row_count": rows, "total_result_set_bytes": rows * (row_bytes + 8)}
            head = {"execution_id": EXECUTION_ID, "query_id": 1, "state": "QUERY_STATE_COMPLETED"}
            head |= {"is_execution_finished": True, "execution_ended_at": "2026-01-01T00:00:00Z"}
            if url.path.endswith("/status"):
                self._send([json.dumps({**head, "result_metadata": {**metadata, **total}})])
                return
            query = parse_qs(url.query)
            offset = int(query.get("offset", ["0"])[0])
            limit = int(query.get("limit", [str(rows)])[0])
            end = min(rows, offset + limit)
            page_meta = {**metadata, **total, "row_count": end - offset, "result_set_bytes": (end - offset) * row_bytes}
            tail = {"next_offset": end} if end < rows else {}

            def parts() -> Any:
                yield json.dumps(head)[:-1] + ', "result": {"rows": ['
                for n in range(offset, end):
                    yield ("," if n > offset else "") + json.dumps({"n": n, "payload": payload})
                yield "], " + json.dumps({"metadata": page_meta})[1:]  # closes "result"
                yield (", " + json.dumps(tail)[1:-1] if tail else "") + "}"

            self._send(parts())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def client(url: str, mode: str, rows: int) -> None:
    """Read the whole result with the hook in ``mode``; print the figures as JSON."""
    common.isolate_airflow()
    common.set_dune_connection(url, timeout=600, max_datapoints_per_request=10**9)
    from airflow_provider_dune.api import endpoints, paging
    from airflow_provider_dune.hooks.dune import DuneHook

    page_size = 10_000
    if mode == MODES[0]:
        paging.PAGE_TARGET_BYTES = 1 << 62
        endpoints.RESULTS_MAX_RESPONSE_BYTES = 512 * 1024 * 1024
        page_size = rows
    with DuneHook() as hook:
        status = hook.get_execution_status(EXECUTION_ID)
        after_imports = common.rss_bytes()
        started = time.perf_counter()
        pages = count = 0
        for page in hook.iter_execution_results(
            EXECUTION_ID,
            page_size=page_size,
            column_count=len(COLUMNS),
            row_bytes=paging.json_bytes_per_row(status.result_metadata, total=True),
        ):
            pages += 1
            count += len(page.rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = time.perf_counter() - started
    print(json.dumps({"peak": peak, "after_imports": after_imports, "pages": pages, "rows": count, "s": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--row-kb", type=float, default=52.0, help="payload KB per row (52 -> a ~500 MiB result)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    row_bytes = int(args.row_kb * 1024)
    if args.serve:
        serve(args.rows, row_bytes)
        return
    if args.client:
        client(args.url, args.client, args.rows)
        return
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.results_memory", "--serve", f"--rows={args.rows}", f"--row-kb={args.row_kb}"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=common.REPO_ROOT,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        results: dict[str, Any] = {}
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, "-m", "bench.results_memory", "--client", mode, f"--url={url}", f"--rows={args.rows}"],
                capture_output=True,
                text=True,
                cwd=common.REPO_ROOT,
                check=True,
            ).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait()
    mib = 1024 * 1024
    size = args.rows * (row_bytes + 20) / mib
    common.print_table(
        f"Reading a {args.rows:,}-row result of ~{size:,.0f} MiB of JSON ({args.row_kb:g} KB a row)",
        ["mode", "pages", "peak RSS MiB", "RSS after imports MiB", "peak - imports MiB", "seconds"],
        [
            [
                mode,
                r["pages"],
                r["peak"] / mib,
                r["after_imports"] / mib,
                (r["peak"] - r["after_imports"]) / mib,
                round(r["s"], 1),
            ]
            for mode, r in results.items()
        ],
    )
    before, now = (results[m]["peak"] - results[m]["after_imports"] for m in MODES)
    print(f"\nmemory for reading: {before / mib:,.0f} MiB -> {now / mib:,.0f} MiB ({before / max(now, 1):.1f}x less)")
    if any(r["rows"] != args.rows for r in results.values()):
        raise SystemExit(f"a mode did not read all {args.rows} rows: {results}")
    common.write_results("results_memory", {"rows": args.rows, "row_kb": args.row_kb, "modes": results})


if __name__ == "__main__":
    main()
