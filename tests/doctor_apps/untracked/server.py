import os
from http.server import BaseHTTPRequestHandler, HTTPServer

import helpers

with open("data.csv") as handle:
    ROWS = handle.read().splitlines()

HTTPServer(("0.0.0.0", int(os.environ["PORT"])), helpers.Handler).serve_forever()
