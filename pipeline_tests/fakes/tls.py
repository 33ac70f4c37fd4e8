"""A throwaway certificate authority so fake Azure servers can serve HTTPS on 127.0.0.1.

azure-core refuses to send a bearer token over plain HTTP, so every fake that checks tokens
serves TLS with a certificate for 127.0.0.1 signed by this CA; clients trust it through
`REQUESTS_CA_BUNDLE` (requests, the transport azure-core uses) or `connection_verify`.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TestCA:
    ca: trustme.CA
    bundle: Path  # PEM file of the CA, for REQUESTS_CA_BUNDLE / connection_verify

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        return context


def make_ca(folder: Path) -> TestCA:
    ca = trustme.CA()
    bundle = folder / "test-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return TestCA(ca=ca, bundle=bundle)


class _HTTPSServer(ThreadingHTTPServer):
    """One thread per connection, the TLS handshake included.

    Wrapping the listening socket would run every handshake in the accept loop: one client that
    connects and then stalls (a test interrupting a request mid-handshake, with the half-open
    socket kept alive by the traceback) would block every later connection until the clients'
    own timeouts, minutes later.
    """

    daemon_threads = True
    connection_timeout_s = 60.0  # a stalled client frees its thread, never the whole server

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext, state: object
    ) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.context = context
        self.state = state

    def finish_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        request.settimeout(self.connection_timeout_s)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client went away during the handshake
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


@contextmanager
def serve_https(
    ca: TestCA, handler: type[BaseHTTPRequestHandler], state: object = None
) -> Iterator[str]:
    """Serve `handler` over HTTPS on a free loopback port; yields `https://127.0.0.1:PORT`.

    `state` is reachable from the handler as `self.server.state` (the fake's memory).
    """
    server = _HTTPSServer(handler, ca.server_context(), state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
