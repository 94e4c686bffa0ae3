"""The REST endpoints: one function each, and the table that routes requests to them.

An endpoint takes the store, the request and the path's parts, and returns (status, body);
errors are raised as `EsError`. The HTTP plumbing lives in server.py.
"""

import gzip
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import search as searching
from .errors import EsError, Unsupported, parse_error
from .index import Doc, SearchStore
from .shapes import Answer, Object

VERSION = "8.15.0"
WRITE_SHARDS = {"total": 1, "successful": 1, "failed": 0}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case

    def raw(self) -> bytes:
        if self.headers.get("content-encoding", "").lower() == "gzip":
            try:
                return gzip.decompress(self.body)
            except OSError as error:
                raise parse_error(f"the gzip request body does not decompress: {error}") from None
        return self.body

    def json(self) -> Object:
        """The body as a JSON object ({} when there is none)."""
        raw = self.raw()
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise parse_error(f"request body is not valid JSON: {error}") from None
        if not isinstance(value, dict):
            raise parse_error("request body must be a JSON object")
        return value

    def refresh(self, payload: Object) -> Object:
        return {**payload, "forced_refresh": True} if self.params.get("refresh") in ("", "true") else payload


# -- cluster ---------------------------------------------------------------------------


def info(store: SearchStore, request: Request) -> Answer:
    return 200, {
        "name": platform.node() or "dynosim",
        "cluster_name": "dynosim",
        "cluster_uuid": store.cluster_uuid(),
        "version": {
            "number": VERSION,
            "build_flavor": "default",
            "build_type": "dynosim",
            "build_hash": "dynosim-embedded-search-stand-in",
            "build_date": "2024-08-05T10:05:34.233336849Z",
            "build_snapshot": False,
            "lucene_version": "9.11.1",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    }


def health(store: SearchStore, request: Request, index: str | None = None) -> Answer:
    names = searching.resolve_indices(store, index)
    return 200, {
        "cluster_name": "dynosim",
        "status": "green",
        "timed_out": False,
        "number_of_nodes": 1,
        "number_of_data_nodes": 1,
        "active_primary_shards": len(names),
        "active_shards": len(names),
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": 0,
        "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": 100.0,
    }


def cat_indices(store: SearchStore, request: Request, index: str | None = None) -> Answer:
    rows = []
    for name in searching.resolve_indices(store, index):
        info_ = store.require_index(name)
        count = str(store.doc_count(name))
        rows.append(
            {
                "health": "green",
                "status": "open",
                "index": name,
                "uuid": info_.uuid,
                "pri": "1",
                "rep": "0",
                "docs.count": count,
                "docs.deleted": "0",
            }
        )
    if request.params.get("format") == "json":
        return 200, rows
    return 200, "".join(" ".join(row.values()) + "\n" for row in rows)


# -- indices ---------------------------------------------------------------------------


def create_index(store: SearchStore, request: Request, index: str) -> Answer:
    body = request.json()
    for key in body:
        if key not in ("mappings", "settings", "aliases"):
            raise Unsupported(f"[{key}] when creating an index")
    if body.get("aliases"):
        raise Unsupported("index aliases")
    store.create_index(index, body.get("mappings"), body.get("settings"))
    return 200, {"acknowledged": True, "shards_acknowledged": True, "index": index}


def delete_index(store: SearchStore, request: Request, index: str) -> Answer:
    for name in index.split(","):
        if "*" in name:
            raise Unsupported("deleting indices by wildcard")
        store.delete_index(name)
    return 200, {"acknowledged": True}


def index_exists(store: SearchStore, request: Request, index: str) -> Answer:
    try:
        found = bool(searching.resolve_indices(store, index))
    except EsError:
        found = False
    return (200 if found else 404), {}


def get_index(store: SearchStore, request: Request, index: str) -> Answer:
    out: Object = {}
    for name in searching.resolve_indices(store, index):
        info_ = store.require_index(name)
        settings = info_.settings.get("index", info_.settings)
        out[name] = {
            "aliases": {},
            "mappings": info_.mappings,
            "settings": {
                "index": {
                    "number_of_shards": "1",
                    "number_of_replicas": "0",
                    **settings,
                    "creation_date": str(info_.created),
                    "uuid": info_.uuid,
                    "provided_name": name,
                    "version": {"created": "8512000"},
                }
            },
        }
    return 200, out


def get_mapping(store: SearchStore, request: Request, index: str | None = None) -> Answer:
    return 200, {
        name: {"mappings": store.require_index(name).mappings} for name in searching.resolve_indices(store, index)
    }


def put_mapping(store: SearchStore, request: Request, index: str) -> Answer:
    for name in searching.resolve_indices(store, index):
        store.put_mapping(name, request.json())
    return 200, {"acknowledged": True}


def refresh(store: SearchStore, request: Request, index: str | None = None) -> Answer:
    names = searching.resolve_indices(store, index)  # every write is visible at once
    return 200, {"_shards": {"total": len(names), "successful": len(names), "failed": 0}}


# -- documents -------------------------------------------------------------------------


def write_result(doc: Doc, result: str) -> Object:
    return {
        "_index": doc.index,
        "_id": doc.id,
        "_version": doc.version,
        "result": result,
        "_shards": WRITE_SHARDS,
        "_seq_no": doc.seq_no,
        "_primary_term": 1,
    }


def index_doc(
    store: SearchStore, request: Request, index: str, id: str | None = None, op_type: str | None = None
) -> Answer:
    op_type = op_type or request.params.get("op_type", "index")
    if_seq_no = request.params.get("if_seq_no")
    doc, created = store.put_doc(index, id, request.json(), op_type, int(if_seq_no) if if_seq_no is not None else None)
    return (201 if created else 200), request.refresh(write_result(doc, "created" if created else "updated"))


def create_doc(store: SearchStore, request: Request, index: str, id: str) -> Answer:
    return index_doc(store, request, index, id, op_type="create")


def get_doc(store: SearchStore, request: Request, index: str, id: str) -> Answer:
    store.require_index(index)
    doc = store.get_doc(index, id)
    if doc is None:
        return 404, {"_index": index, "_id": id, "found": False}
    body: Object = {
        "_index": index,
        "_id": id,
        "_version": doc.version,
        "_seq_no": doc.seq_no,
        "_primary_term": 1,
        "found": True,
    }
    includes, excludes = searching.source_filter(True, request.params)
    if includes is not None:
        body["_source"] = searching.filter_source(doc.source, includes, excludes)
    return 200, body


def get_source(store: SearchStore, request: Request, index: str, id: str) -> Answer:
    status, body = get_doc(store, request, index, id)
    if status != 200:
        raise EsError(404, "resource_not_found_exception", f"Document not found [{index}]/[{id}]")
    return 200, body.get("_source", {})


def update_doc(store: SearchStore, request: Request, index: str, id: str) -> Answer:
    status, body = apply_update(store, index, id, request.json())
    return status, request.refresh(body)


def apply_update(store: SearchStore, index: str, id: str, body: Object) -> tuple[int, Object]:
    for key in body:
        if key not in ("doc", "doc_as_upsert", "upsert", "detect_noop", "_source"):
            raise Unsupported(f"[{key}] in an update" + (" (scripts)" if key == "script" else ""))
    partial = body.get("doc")
    if not isinstance(partial, dict):
        raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: script or doc is missing;")
    upsert = partial if body.get("doc_as_upsert") else body.get("upsert")
    doc, result = store.update_doc(index, id, partial, upsert, body.get("detect_noop", True))
    payload = write_result(doc, result)
    if result == "noop":
        payload["_shards"] = {"total": 0, "successful": 0, "failed": 0}
    return (201 if result == "created" else 200), payload


def delete_doc(store: SearchStore, request: Request, index: str, id: str) -> Answer:
    store.require_index(index)
    doc = store.delete_doc(index, id)
    if doc is None:
        return 404, {
            "_index": index,
            "_id": id,
            "_version": 1,
            "result": "not_found",
            "_shards": WRITE_SHARDS,
            "_seq_no": -1,
            "_primary_term": 1,
        }
    return 200, request.refresh(write_result(doc, "deleted"))


def bulk(store: SearchStore, request: Request, index: str | None = None) -> Answer:
    started = time.monotonic()
    actions = parse_bulk(request.raw(), index)
    items: list[Object] = []
    with store.transaction():
        for op, meta, payload in actions:
            items.append({op: bulk_item(store, op, meta, payload)})
    took = int((time.monotonic() - started) * 1000)
    return 200, {"took": took, "errors": any("error" in next(iter(i.values())) for i in items), "items": items}


def parse_bulk(raw: bytes, default_index: str | None) -> list[tuple[str, Object, Object]]:
    """ndjson -> [(op, metadata, payload)] (a delete's payload is {}), refusing the whole request if it is malformed."""
    lines = [line for line in raw.decode("utf-8", "replace").split("\n") if line.strip()]
    if not lines:
        raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;")
    actions: list[tuple[str, Object, Object]] = []
    position = 0
    while position < len(lines):
        try:
            action = json.loads(lines[position])
        except json.JSONDecodeError as error:
            raise parse_error(f"Malformed action/metadata line [{position + 1}]: {error}") from None
        if not isinstance(action, dict) or len(action) != 1:
            raise bad_action(position, "expected one action")
        ((op, meta),) = action.items()
        if op not in ("index", "create", "update", "delete") or not isinstance(meta, dict):
            raise bad_action(position, f"unknown action [{op}]")
        meta = {"_index": default_index, **meta}
        if not meta.get("_index"):
            raise bad_action(position, "index is missing")
        payload: Object = {}
        if op != "delete":
            position += 1
            if position >= len(lines):
                raise bad_action(position, f"the [{op}] action has no document line")
            try:
                payload = json.loads(lines[position])
            except json.JSONDecodeError as error:
                raise parse_error(f"Malformed document line [{position + 1}]: {error}") from None
            if not isinstance(payload, dict):
                raise parse_error(f"document line [{position + 1}] is not a JSON object")
        actions.append((op, meta, payload))
        position += 1
    return actions


def bad_action(position: int, reason: str) -> EsError:
    return EsError(400, "illegal_argument_exception", f"Malformed action/metadata line [{position + 1}], {reason}")


def bulk_item(store: SearchStore, op: str, meta: Object, payload: Object) -> Object:
    index, id_ = meta["_index"], meta.get("_id")
    id_ = None if id_ is None else str(id_)
    try:
        if op in ("index", "create"):
            doc, created = store.put_doc(index, id_, payload, op)
            return {**write_result(doc, "created" if created else "updated"), "status": 201 if created else 200}
        if id_ is None:  # an update or a delete names its document
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: id is missing;")
        if op == "update":
            status, body = apply_update(store, index, id_, payload)
            return {**body, "status": status}
        deleted = store.delete_doc(index, id_) if store.get_index(index) else None
        if deleted is None:
            return {
                "_index": index,
                "_id": id_,
                "_version": 1,
                "result": "not_found",
                "_shards": WRITE_SHARDS,
                "_seq_no": -1,
                "_primary_term": 1,
                "status": 404,
            }
        return {**write_result(deleted, "deleted"), "status": 200}
    except EsError as error:
        return {"_index": index, "_id": id_, "status": error.status, "error": error.cause()}


# -- search ----------------------------------------------------------------------------


def search(store: SearchStore, request: Request, index: str | None = None) -> Answer:
    body = request.json()
    with store.snapshot():
        return 200, searching.search(store, index, body, request.params)


def count(store: SearchStore, request: Request, index: str | None = None) -> Answer:
    body = request.json()
    with store.snapshot():
        return 200, searching.count(store, index, body, request.params)


# -- routing ---------------------------------------------------------------------------

Endpoint = Callable[..., Answer]  # (store, request, **the path's {names}) -> (status, body)

ROUTES: list[tuple[set[str], str, Endpoint]] = [
    # (methods, path pattern, endpoint); {name} matches one path segment
    ({"GET", "HEAD"}, "", info),
    ({"GET"}, "_cluster/health", health),
    ({"GET"}, "_cluster/health/{index}", health),
    ({"GET"}, "_cat/indices", cat_indices),
    ({"GET"}, "_cat/indices/{index}", cat_indices),
    ({"POST", "PUT"}, "_bulk", bulk),
    ({"GET", "POST"}, "_search", search),
    ({"GET", "POST"}, "_count", count),
    ({"GET", "POST"}, "_refresh", refresh),
    ({"GET"}, "_mapping", get_mapping),
    ({"PUT"}, "{index}", create_index),
    ({"DELETE"}, "{index}", delete_index),
    ({"HEAD"}, "{index}", index_exists),
    ({"GET"}, "{index}", get_index),
    ({"GET"}, "{index}/_mapping", get_mapping),
    ({"PUT", "POST"}, "{index}/_mapping", put_mapping),
    ({"GET", "POST"}, "{index}/_refresh", refresh),
    ({"POST", "PUT"}, "{index}/_bulk", bulk),
    ({"GET", "POST"}, "{index}/_search", search),
    ({"GET", "POST"}, "{index}/_count", count),
    ({"POST"}, "{index}/_doc", index_doc),
    ({"PUT", "POST"}, "{index}/_doc/{id}", index_doc),
    ({"GET", "HEAD"}, "{index}/_doc/{id}", get_doc),
    ({"DELETE"}, "{index}/_doc/{id}", delete_doc),
    ({"PUT", "POST"}, "{index}/_create/{id}", create_doc),
    ({"POST"}, "{index}/_update/{id}", update_doc),
    ({"GET", "HEAD"}, "{index}/_source/{id}", get_source),
]


def _match(pattern: str, parts: list[str]) -> dict[str, str] | None:
    names = pattern.split("/") if pattern else []
    if len(names) != len(parts):
        return None
    found: dict[str, str] = {}
    for name, part in zip(names, parts, strict=True):
        if name.startswith("{"):
            if name == "{index}" and part.startswith("_") and part != "_all":
                return None
            found[name[1:-1]] = part
        elif name != part:
            return None
    return found


def dispatch(store: SearchStore, request: Request, parts: list[str]) -> Answer:
    """Run the endpoint for a request whose path is split into decoded `parts`."""
    allowed: set[str] = set()
    for methods, pattern, endpoint in ROUTES:
        found = _match(pattern, parts)
        if found is None:
            continue
        if request.method in methods:
            return endpoint(store, request, **found)
        allowed |= methods
    if allowed:
        raise EsError(
            405,
            "method_not_allowed",
            f"Incorrect HTTP method for uri [{request.path}] and method [{request.method}], "
            f"allowed: [{', '.join(sorted(allowed))}]",
        )
    raise Unsupported(f"the endpoint [{request.method} {request.path}]")
