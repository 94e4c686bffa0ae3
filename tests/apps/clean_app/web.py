"""Notes in Postgres, a counter in Redis, through connections opened once at boot and kept (as a pool
keeps them): a reset between tests must leave them working."""
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import psycopg
import redis

db = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
cache = redis.Redis.from_url(os.environ["REDIS_URL"], ssl_cert_reqs=None)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/add":
            row = db.execute(
                "INSERT INTO notes (plan, body) VALUES ((SELECT id FROM plans WHERE name = 'pro'), %s) RETURNING id",
                (query["body"],),
            ).fetchone()
            body = {"id": row[0], "hits": cache.incr("hits")}
        else:
            body = {
                "notes": [r[0] for r in db.execute("SELECT body FROM notes ORDER BY id")],
                "plans": [r[0] for r in db.execute("SELECT name FROM plans ORDER BY id")],
                "hits": int(cache.get("hits") or 0),
            }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
