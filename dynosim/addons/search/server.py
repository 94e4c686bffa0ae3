"""The HTTP layer: the standard library's threading HTTP server in front of rest.py.

Every response carries `X-Elastic-Product: Elasticsearch`, which the official clients check.
"""

import json
import ssl
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import rest
from .errors import EsError
from .index import SearchStore
from .shapes import Answer

DATABASE = "search.sqlite3"


class SearchServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog; the default 5 drops bursts from connection pools

    def __init__(self, address: tuple[str, int], store: SearchStore) -> None:
        self.store = store
        super().__init__(address, Handler)


class TLSSearchServer(SearchServer):
    """The same stand-in over TLS (SEARCHBOX_SSL_URL), on a port of its own. The handshake runs in the
    connection's own thread, so a client that stalls it or sends plain HTTP holds up no one else."""

    handshake_timeout = 10.0

    def __init__(self, address: tuple[str, int], store: SearchStore, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(address, store)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.handshake_timeout)
        try:
            tls = self.context.wrap_socket(request, server_side=True)  # takes the connection over
        except (OSError, ValueError):  # ssl.SSLError is an OSError: plain HTTP, garbage, a stalled handshake
            return
        tls.settimeout(None)
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect
    server_version = "dynosim-search"

    server: SearchServer

    def answer(self) -> Answer:
        url = urlsplit(self.path)
        params = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [unquote(part) for part in url.path.split("/") if part]
        try:
            request = rest.Request(
                self.command, url.path, params, self._body(), {k.lower(): v for k, v in self.headers.items()}
            )
            return rest.dispatch(self.server.store, request, parts)
        except EsError as error:
            return error.status, error.body()
        except Exception as error:  # our bug: answer like ES does, keep serving
            traceback.print_exc(file=sys.stderr)
            return 500, EsError(500, "exception", f"dynosim search stand-in: {error!r}").body()

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise EsError(
                411, "illegal_argument_exception", "chunked request bodies are not supported; send a Content-Length"
            )
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise EsError(400, "illegal_argument_exception", "Content-Length is not a number") from None
        return self.rfile.read(length) if length > 0 else b""

    def respond(self) -> None:
        status, payload = self.answer()
        if isinstance(payload, str):
            data, content_type = payload.encode(), "text/plain; charset=UTF-8"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = respond

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the add-on's output goes into the app's log stream


def make_tls_server(
    store: SearchStore, cert: str, key: str, host: str = "127.0.0.1", port: int = 9243
) -> TLSSearchServer:
    """A second server on the same store that answers over TLS (TLS 1.2 or newer), with the certificate
    chain in `cert` and its key in `key`; port 0 picks one."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return TLSSearchServer((host, port), store, context)


def make_server(data_dir: str | Path, host: str = "127.0.0.1", port: int = 9200) -> SearchServer:
    """A server on (host, port) keeping its data in `<data_dir>/search.sqlite3`; port 0 picks one."""
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    store = SearchStore(str(folder / DATABASE))
    try:
        return SearchServer((host, port), store)
    except OSError:
        store.close()
        raise
