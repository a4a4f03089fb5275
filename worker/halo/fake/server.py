"""Serve a `FakeHalo` over real HTTP: in a thread for tests, or as the `halo-fake` command.

Each connection gets a daemon thread (stdlib `ThreadingHTTPServer`, HTTP/1.1 keep-alive, so
client connection pools are reused). A request is turned into an `httpx.Request`, handed to the
same `FakeHalo.handle` the MockTransport uses, and the answer written back. Latency and hangs
are slept in the connection's thread, outside the fake's lock, so hundreds of delayed requests
are in flight at once.

    halo-fake --port 8080 --seed demo --profile legacy --rate-limit 300/300s \\
              --client-id my-client --client-secret-env HALO_FAKE_SECRET

prints `halo-fake listening on http://HOST:PORT` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

import httpx

from worker.halo.fake.app import FakeHalo
from worker.halo.fake.auth import DEFAULT_TOKEN_TTL_S, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from worker.halo.fake.profiles import DEFAULT_PROFILE, PROFILES
from worker.halo.fake.seeds import SEEDS

# Headers the server writes itself; copying the fake's would duplicate or contradict them.
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # stop() must not wait for a handler sleeping out an injected hang.
    block_on_close = False
    # The listen backlog: a burst of 300+ new connections must queue, not be refused.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], fake: FakeHalo, *, verbose: bool) -> None:
        self.fake = fake
        self.verbose = verbose
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout test) leaves a broken pipe: expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, a keep-alive client's delayed ACK
    # would stall every answer by about 40 ms.
    disable_nagle_algorithm = True
    # An idle keep-alive connection is dropped after this long, so its thread ends.
    timeout = 120
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.sockets_lock:
            self.server.open_sockets.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _serve(self) -> None:
        body = self._read_body()
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        request = httpx.Request(
            self.command,
            f"http://{host}{self.path}",
            headers=[(k, v) for k, v in self.headers.items() if k.lower() != "host"],
            content=body,
        )
        fake = self.server.fake
        if not request.url.path.lower().startswith("/_fake") and fake.config.latency_s > 0:
            time.sleep(fake.config.latency_s)
        outcome = fake.handle(request, served=True)
        if outcome.hang_s > 0:
            time.sleep(outcome.hang_s)
        if outcome.response is None:
            # An injected connect error: drop the connection without a byte of answer.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        response = outcome.response
        content = response.content
        self.send_response(response.status_code)
        for name, value in response.headers.multi_items():
            if name.lower() not in _HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers, ignored
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve  # noqa: N815


class FakeServer:
    """A `FakeHalo` served over HTTP from a background thread. A context manager."""

    def __init__(self, httpd: _Server, thread: threading.Thread) -> None:
        """Wrap a started server; use `serve_in_thread` to make one."""
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    @property
    def fake(self) -> FakeHalo:
        """The fake being served."""
        return self._httpd.fake

    def stop(self) -> None:
        """Stop serving and close every connection. Idempotent."""
        if not self._thread.is_alive():
            return
        self._httpd.shutdown()
        with self._httpd.sockets_lock:
            sockets = list(self._httpd.open_sockets)
        for sock in sockets:
            # Wakes a handler blocked on an idle keep-alive connection, so its thread ends; the
            # peer may have closed it already.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve_in_thread(
    fake: FakeHalo, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False
) -> FakeServer:
    """Start serving `fake` on `host:port` (0: a free port) from a daemon thread.

    Returns:
        The running server; its `url` is ready to accept connections when this returns.

    Raises:
        OSError: the address cannot be bound.
    """
    httpd = _Server((host, port), fake, verbose=verbose)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="halo-fake", daemon=True
    )
    thread.start()
    return FakeServer(httpd, thread)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="halo-fake", description="Serve a fake Halo PSA.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--seed", choices=SEEDS, default="demo")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=DEFAULT_PROFILE,
        help="the tenant to play (options below override it)",
    )
    parser.add_argument("--rate-limit", default=None, help="N/Ms, e.g. 300/300s (default: none)")
    parser.add_argument(
        "--no-retry-after", action="store_true", help="rate-limit 429s carry no Retry-After"
    )
    parser.add_argument("--token-ttl-s", type=int, default=DEFAULT_TOKEN_TTL_S)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--expired-token-status", choices=["401", "400", "alternate"], default=None)
    parser.add_argument(
        "--update-answer-shape", choices=["object", "array", "wrapped", "first"], default=None
    )
    parser.add_argument("--no-team-id", action="store_true", help="tickets carry no team_id")
    parser.add_argument("--wrapped-lookups", action="store_true")
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--client-id", default=None, help=f"default {DEMO_CLIENT_ID!r}")
    parser.add_argument(
        "--client-secret-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the client secret (required with --client-id)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the `halo-fake` command until SIGTERM or SIGINT.

    Returns:
        The exit status: 0 after a clean stop, 2 for bad arguments.
    """
    args = _parse_args(argv)
    if args.client_id is None and args.client_secret_env is None:
        clients = {DEMO_CLIENT_ID: DEMO_CLIENT_SECRET}
    elif args.client_id and args.client_secret_env and args.client_secret_env in os.environ:
        clients = {args.client_id: os.environ[args.client_secret_env]}
    else:
        sys.stderr.write(
            "halo-fake: --client-id needs --client-secret-env naming a set environment variable\n"
        )
        return 2
    options: dict[str, Any] = {
        "rate_limit": args.rate_limit,
        "rate_limit_retry_after": not args.no_retry_after,
        "token_ttl_s": args.token_ttl_s,
        "latency_s": args.latency_ms / 1000,
        "tenant": args.tenant,
    }
    # Options not given keep the profile's values.
    status = args.expired_token_status
    if status is not None:
        options["expired_token_status"] = status if status == "alternate" else int(status)
    if args.update_answer_shape is not None:
        options["update_answer_shape"] = args.update_answer_shape
    if args.no_team_id:
        options["tickets_have_team_id"] = False
    if args.wrapped_lookups:
        options["wrapped_lookups"] = True
    try:
        fake = FakeHalo(seed=args.seed, profile=args.profile, clients=clients, **options)
    except (TypeError, ValueError) as error:
        sys.stderr.write(f"halo-fake: {error}\n")
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = serve_in_thread(fake, args.host, args.port, verbose=args.verbose)
    sys.stdout.write(f"halo-fake listening on {server.url}\n")
    sys.stdout.flush()
    # A timed wait, so a signal arriving between checks is still seen promptly.
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0
