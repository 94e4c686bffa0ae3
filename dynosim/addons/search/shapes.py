"""The shapes of what the stand-in takes and gives, for type hints: JSON as `json` makes it."""

from typing import Any, TypeAlias

JSON: TypeAlias = Any  # any JSON value: an object, an array, a string, a number, true, false, null
Object: TypeAlias = dict[str, Any]  # a JSON object: a request body, a document's _source, a response
Scores: TypeAlias = dict[int, float]  # a query's result: document row id -> score
Answer: TypeAlias = tuple[int, Any]  # an endpoint's HTTP status and body (a JSON value, or text for _cat)
