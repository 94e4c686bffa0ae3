"""The embedded Elasticsearch stand-in for the searchbox and bonsai add-ons.

For machines with neither Docker nor Elasticsearch: a small HTTP server speaking the part of
the Elasticsearch REST API web apps use, ranking with BM25 on SQLite FTS5 and keeping its data
in one folder. `python -m dynosim.addons.search --data DIR --port N` runs it.
"""

from .server import make_server

__all__ = ["make_server"]
