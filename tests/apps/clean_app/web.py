"""Notes in Postgres, a counter in Redis, through one database connection kept open (as a pool keeps
them), made again only when the server has ended it, as a pool's pre-ping would (a snapshot load ends it;
a reset must not): the page says how many it made."""

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import psycopg
import redis

db = None
connections = 0


def query(sql, args=()):
    global db, connections
    if db is None:
        db = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
        connections += 1
    try:
        return db.execute(sql, args)
    except psycopg.OperationalError:
        db = None
        return query(sql, args)


cache = redis.Redis.from_url(os.environ["REDIS_URL"], ssl_cert_reqs=None)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/add":
            row = query(
                "INSERT INTO notes (plan, body) VALUES ((SELECT id FROM plans WHERE name = 'pro'), %s) RETURNING id",
                (params["body"],),
            ).fetchone()
            body = {"id": row[0], "hits": cache.incr("hits")}
        else:
            body = {
                "notes": [r[0] for r in query("SELECT body FROM notes ORDER BY id")],
                "plans": [r[0] for r in query("SELECT name FROM plans ORDER BY id")],
                "hits": int(cache.get("hits") or 0),
                "connections": connections,
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
