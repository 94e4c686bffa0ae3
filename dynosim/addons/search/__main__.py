"""`python -m dynosim.addons.search --data DIR --port N [--host 127.0.0.1] [--tls-port N --cert F --key F]`

Prints `listening on http://HOST:PORT` once it accepts connections, then `listening on https://HOST:PORT`
when it also answers over TLS (--tls-port, with the certificate chain and key in PEM files); SIGTERM or
SIGINT stop it cleanly (exit 0).
"""

import argparse
import errno
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .server import SearchServer, make_server, make_tls_server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dynosim.addons.search", description="dynosim's embedded Elasticsearch stand-in"
    )
    parser.add_argument("--data", required=True, help="folder for the data (created if missing)")
    parser.add_argument("--port", type=int, default=9200, help="port to listen on; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--tls-port", type=int, help="also answer over TLS (https) on this port; 0 picks one")
    parser.add_argument("--cert", help="with --tls-port: the certificate chain, PEM")
    parser.add_argument("--key", help="with --tls-port: the certificate's private key, PEM")
    args = parser.parse_args(argv)
    if args.tls_port is not None and not (args.cert and args.key):
        parser.error("--tls-port needs --cert and --key")

    try:
        server = make_server(args.data, args.host, args.port)
    except OSError as error:
        _cannot_start(error, args.host, args.port, "--port")
        return 1
    servers: list[SearchServer] = [server]
    if args.tls_port is not None:
        try:
            servers.append(make_tls_server(server.store, args.cert, args.key, args.host, args.tls_port))
        except OSError as error:  # ssl.SSLError too: a broken certificate or key
            _cannot_start(error, args.host, args.tls_port, "--tls-port")
            server.server_close()
            server.store.close()
            return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, so it must run off the main thread
        for each in servers:
            threading.Thread(target=each.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for each, scheme in zip(servers, ("http", "https"), strict=False):
        host, port = each.socket.getsockname()[:2]
        print(f"listening on {scheme}://{host}:{port}", flush=True)
    others = [
        threading.Thread(target=each.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True) for each in servers[1:]
    ]
    for thread in others:
        thread.start()
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        for thread in others:
            thread.join()
        for each in servers:
            each.server_close()
        server.store.close()
    return 0


def _cannot_start(error: OSError, host: str, port: int, option: str) -> None:
    if error.errno == errno.EADDRINUSE:
        print(f"dynosim search: port {port} on {host} is taken; pick another with {option}", file=sys.stderr)
    else:
        print(f"dynosim search: cannot start on {host}:{port}: {error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
