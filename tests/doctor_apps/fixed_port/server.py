"""Listens on a port of its own choosing instead of $PORT."""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

port = int(os.environ.get("DOCTOR_FIXED_PORT", "19123"))
HTTPServer(("0.0.0.0", port), BaseHTTPRequestHandler).serve_forever()
