"""The kill trial's web dyno: answers 200 on $PORT and ignores SIGTERM (Heroku's SIGKILL after the grace ends it)."""

import os
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("ok %s\n" % os.environ.get("DYNO")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


signal.signal(signal.SIGTERM, lambda *_: print("web ignoring SIGTERM", flush=True))
server = ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
print("web listening on %s" % os.environ["PORT"], flush=True)
server.serve_forever()
