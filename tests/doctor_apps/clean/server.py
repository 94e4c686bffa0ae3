"""Answers every request, on all interfaces, on the port Heroku gives."""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello\n")


HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Hello).serve_forever()
