"""Listens on $PORT, but on the loopback interface only: Heroku's router cannot reach it."""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), BaseHTTPRequestHandler).serve_forever()
