"""Errors the stand-in answers with, in Elasticsearch's JSON shape."""

from typing import Any

from .shapes import Object


class EsError(Exception):
    """An Elasticsearch-shaped error response: HTTP status, error type, reason."""

    def __init__(self, status: int, type_: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.type = type_
        self.reason = reason
        self.extra = extra

    def cause(self) -> Object:
        return {"type": self.type, "reason": self.reason, **self.extra}

    def body(self) -> Object:
        return {"error": {"root_cause": [self.cause()], **self.cause()}, "status": self.status}


class Unsupported(EsError):
    """Something real Elasticsearch does that the stand-in does not."""

    def __init__(self, what: str) -> None:
        super().__init__(
            400,
            "dynosim_unsupported",
            f"the embedded search stand-in does not support {what}; run with --addons docker for a real Elasticsearch",
        )


def parse_error(reason: str) -> EsError:
    return EsError(400, "parse_exception", reason)


def bad_request(reason: str) -> EsError:
    return EsError(400, "illegal_argument_exception", reason)


def index_not_found(index: str) -> EsError:
    return EsError(
        404,
        "index_not_found_exception",
        f"no such index [{index}]",
        **{"resource.type": "index_or_alias", "resource.id": index, "index_uuid": "_na_", "index": index},
    )


def index_exists(index: str, uuid: str) -> EsError:
    return EsError(
        400,
        "resource_already_exists_exception",
        f"index [{index}/{uuid}] already exists",
        index_uuid=uuid,
        index=index,
    )


def version_conflict(index: str, id_: str, reason: str) -> EsError:
    return EsError(
        409, "version_conflict_engine_exception", f"[{id_}]: version conflict, {reason}", index=index, shard="0"
    )


def document_missing(index: str, id_: str) -> EsError:
    return EsError(404, "document_missing_exception", f"[{id_}]: document missing", index=index, shard="0")
