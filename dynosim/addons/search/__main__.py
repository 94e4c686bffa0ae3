"""`python -m dynosim.addons.search --data DIR --port N [--host 127.0.0.1]`

Prints `listening on http://HOST:PORT` once it accepts connections; SIGTERM or SIGINT stop it
cleanly (exit 0).
"""
import argparse
import errno
import signal
import sys
import threading

from .server import make_server


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dynosim.addons.search",
                                     description="dynosim's embedded Elasticsearch stand-in")
    parser.add_argument("--data", required=True, help="folder for the data (created if missing)")
    parser.add_argument("--port", type=int, default=9200, help="port to listen on; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = parser.parse_args(argv)

    try:
        server = make_server(args.data, args.host, args.port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            print(f"dynosim search: port {args.port} on {args.host} is taken; pick another with --port",
                  file=sys.stderr)
        else:
            print(f"dynosim search: cannot start on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return, so it must run off the main thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        server.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
