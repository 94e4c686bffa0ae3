"""`python -m dynosim.addons.tlsproxy --port N --to HOST:PORT --cert FILE --key FILE [--host 127.0.0.1]`

TLS in front of a service that speaks only plain TCP: each connection to --port is decrypted and relayed
to --to, byte for byte. The docker backend runs it for SEARCHBOX_SSL_URL, since an Elasticsearch
container without its security plugin has no https. Prints `listening on https://HOST:PORT` once it
accepts connections; SIGTERM or SIGINT stop it (exit 0). A handshake that stalls or is not TLS ends
that one connection only.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys

CHUNK = 65536
HANDSHAKE_TIMEOUT = 10.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # a half-close reaches the other side; TLS has none, the end closes both
    except (OSError, asyncio.IncompleteReadError):  # ssl.SSLError and ConnectionResetError included
        pass


async def serve(host: str, port: int, target: tuple[str, int], context: ssl.SSLContext) -> None:
    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
        finally:
            for writer in (upstream_writer, client_writer):
                writer.close()

    server = await asyncio.start_server(
        relay, host, port, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT, backlog=128
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"listening on https://{bound[0]}:{bound[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynosim.addons.tlsproxy", description=__doc__.split("\n\n")[1])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="the TLS port; 0 picks a free one")
    parser.add_argument("--to", required=True, help="HOST:PORT of the plain service")
    parser.add_argument("--cert", required=True, help="the certificate chain, PEM")
    parser.add_argument("--key", required=True, help="its private key, PEM")
    args = parser.parse_args(argv)
    to_host, _, to_port = args.to.rpartition(":")
    if not to_host or not to_port.isdigit():
        parser.error(f"--to must be HOST:PORT, got {args.to!r}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(args.cert, args.key)
        asyncio.run(serve(args.host, args.port, (to_host, int(to_port)), context))
    except OSError as error:  # a taken port, a missing or broken certificate
        print(f"dynosim tlsproxy: cannot serve https on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
