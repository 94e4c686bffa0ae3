"""The embedded Elasticsearch stand-in, driven by the official elasticsearch client.

Each test starts the real server process (`python -m dynosim.addons.search`) on a loopback
port and talks to it as an app on Heroku talks to its searchbox/bonsai add-on.
"""

import json
import math
import select
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import psutil
import pytest

elasticsearch = pytest.importorskip("elasticsearch")
from elasticsearch import BadRequestError, ConflictError, Elasticsearch, NotFoundError, helpers  # noqa: E402


class SearchProcess:
    """One `python -m dynosim.addons.search` process."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dynosim.addons.search", "--data", str(data_dir), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = self._wait_until_ready()
        self.es = Elasticsearch(self.url, request_timeout=10)

    def _wait_until_ready(self, timeout=15):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("listening on http://127.0.0.1:"):
            self.stop()
            raise AssertionError(f"no readiness line, got {line!r}; stderr: {self.proc.stderr.read()}")
        return line.split()[-1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start_search(tmp_path):
    """Start a stand-in on a data folder (default: a fresh one); every one is stopped at the end."""
    started = []

    def start(data_dir=None):
        server = SearchProcess(data_dir or tmp_path / "search-data")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.es.close()
        server.proc.stdout.close()
        server.proc.stderr.close()


@pytest.fixture
def es(start_search):
    return start_search().es


BOOKS = [
    {
        "title": "The Quick Brown Fox",
        "body": "a fox jumps over the lazy dog",
        "year": 1999,
        "published": "1999-05-01",
        "tags": ["animals", "classic"],
        "price": 12.5,
        "author": {"name": "Ann"},
    },
    {
        "title": "Foxes of the North",
        "body": "fox fox fox: everything about the fox",
        "year": 2010,
        "published": "2010-01-15T10:00:00Z",
        "tags": ["animals"],
        "price": 30,
        "author": {"name": "Bob"},
    },
    {
        "title": "Lazy Afternoons",
        "body": "the dog sleeps all afternoon in the sun",
        "year": 2015,
        "published": "2015-07-20",
        "tags": ["leisure"],
        "price": 8,
        "author": {"name": "Cy"},
    },
    {
        "title": "Cooking for Dogs",
        "body": "recipes your dog will love, from the chef",
        "year": 2021,
        "published": "2021-11-02",
        "tags": ["cooking", "animals"],
        "price": 22,
        "author": {"name": "Ann"},
    },
    {
        "title": "Search Engines",
        "body": "ranking, indexing and the bm25 formula explained",
        "year": 2021,
        "published": "2021-03-09",
        "tags": ["tech"],
        "author": {"name": "Dee"},
    },
]


@pytest.fixture
def books(es):
    es.indices.create(index="books", mappings={"properties": {"year": {"type": "integer"}}})
    for n, book in enumerate(BOOKS, 1):
        es.index(index="books", id=str(n), document=book)
    es.indices.refresh(index="books")
    return es


def ids(response):
    return [hit["_id"] for hit in response["hits"]["hits"]]


def search_ids(es, query, **kwargs):
    return sorted(ids(es.search(index="books", query=query, size=100, **kwargs)))


def raw(url, method, path, body=b"", content_type="application/json"):
    request = urllib.request.Request(
        url + path, data=body or None, method=method, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


# -- cluster and indices -----------------------------------------------------------------


def test_the_official_client_accepts_it_as_elasticsearch(es):
    info = es.info()  # raises UnsupportedProductError if the product check fails
    assert info["version"]["number"].startswith("8.")
    assert info["version"]["build_flavor"] == "default"
    assert info["tagline"] == "You Know, for Search"
    assert es.cluster.health()["status"] == "green"
    assert es.ping()


def test_index_create_exists_get_and_delete(es):
    mappings = {"properties": {"title": {"type": "text"}, "sku": {"type": "keyword"}}}
    es.indices.create(index="products", mappings=mappings, settings={"number_of_shards": 1})
    assert es.indices.exists(index="products")
    assert not es.indices.exists(index="nope")
    assert es.indices.get(index="products")["products"]["mappings"] == mappings
    assert es.indices.get_mapping(index="products")["products"]["mappings"] == mappings
    with pytest.raises(BadRequestError) as raised:
        es.indices.create(index="products")
    assert raised.value.error == "resource_already_exists_exception"
    assert [row["index"] for row in es.cat.indices(format="json")] == ["products"]
    es.indices.delete(index="products")
    assert not es.indices.exists(index="products")
    with pytest.raises(NotFoundError):
        es.indices.delete(index="products")


def test_a_missing_index_is_index_not_found(es):
    for call in (
        lambda: es.search(index="ghost"),
        lambda: es.get(index="ghost", id="1"),
        lambda: es.count(index="ghost"),
    ):
        with pytest.raises(NotFoundError) as raised:
            call()
        assert raised.value.error == "index_not_found_exception"
        assert raised.value.body["error"]["index"] == "ghost"


# -- documents -----------------------------------------------------------------------------


def test_index_get_update_and_delete_a_document(es):
    created = es.index(index="notes", id="1", document={"text": "hello", "meta": {"a": 1}}, refresh=True)
    assert created["result"] == "created" and created["_version"] == 1  # the index was auto-created
    assert es.indices.exists(index="notes")
    assert es.get(index="notes", id="1")["_source"] == {"text": "hello", "meta": {"a": 1}}
    assert es.exists(index="notes", id="1") and not es.exists(index="notes", id="2")

    replaced = es.index(index="notes", id="1", document={"text": "hello again", "meta": {"a": 1}})
    assert replaced["result"] == "updated" and replaced["_version"] == 2

    updated = es.update(index="notes", id="1", doc={"meta": {"b": 2}, "done": True})
    assert updated["result"] == "updated"
    assert es.get(index="notes", id="1")["_source"] == {"text": "hello again", "meta": {"a": 1, "b": 2}, "done": True}
    assert es.update(index="notes", id="1", doc={"done": True})["result"] == "noop"

    with pytest.raises(NotFoundError) as raised:
        es.update(index="notes", id="404", doc={"x": 1})
    assert raised.value.error == "document_missing_exception"
    upserted = es.update(index="notes", id="2", doc={"text": "new"}, doc_as_upsert=True)
    assert upserted["result"] == "created"

    with pytest.raises(ConflictError):
        es.create(index="notes", id="2", document={"text": "again"})
    assert es.create(index="notes", id="3", document={"text": "three"})["result"] == "created"

    auto = es.index(index="notes", document={"text": "no id"})
    assert len(auto["_id"]) == 20
    assert es.get(index="notes", id=auto["_id"])["found"]

    assert es.delete(index="notes", id="1")["result"] == "deleted"
    with pytest.raises(NotFoundError) as raised:
        es.get(index="notes", id="1")
    assert raised.value.body == {"_index": "notes", "_id": "1", "found": False}
    with pytest.raises(NotFoundError):
        es.delete(index="notes", id="1")
    assert es.count(index="notes")["count"] == 3


def test_get_with_source_filtering(es):
    es.index(index="people", id="1", document={"name": "Ann", "secret": "x", "address": {"city": "Oslo", "zip": "1"}})
    source = es.get(index="people", id="1", source_includes=["name", "address.city"])["_source"]
    assert source == {"name": "Ann", "address": {"city": "Oslo"}}
    assert es.get(index="people", id="1", source_excludes=["secret"])["_source"] == {
        "name": "Ann",
        "address": {"city": "Oslo", "zip": "1"},
    }
    assert "_source" not in es.get(index="people", id="1", source=False)


def test_bulk_with_the_helpers(es):
    actions = [{"_index": "logs", "_id": str(n), "_source": {"n": n, "msg": f"line {n}"}} for n in range(250)]
    assert helpers.bulk(es, actions, chunk_size=100) == (250, [])
    assert es.count(index="logs")["count"] == 250

    more = [
        {"_op_type": "update", "_index": "logs", "_id": "1", "doc": {"msg": "changed"}},
        {"_op_type": "delete", "_index": "logs", "_id": "2"},
        {"_op_type": "create", "_index": "logs", "_id": "new", "_source": {"n": -1}},
    ]
    assert helpers.bulk(es, more) == (3, [])
    assert es.get(index="logs", id="1")["_source"]["msg"] == "changed"
    assert not es.exists(index="logs", id="2")

    response = es.bulk(
        operations=[
            {"create": {"_index": "logs", "_id": "new"}},
            {"n": 0},  # exists: a conflict
            {"update": {"_index": "logs", "_id": "ghost"}},
            {"doc": {"n": 1}},  # missing
            {"index": {"_index": "logs"}},
            {"n": 2},  # fine, auto id
        ]
    )
    assert response["errors"] is True
    statuses = [next(iter(item.values()))["status"] for item in response["items"]]
    assert statuses == [409, 404, 201]
    assert response["items"][0]["create"]["error"]["type"] == "version_conflict_engine_exception"


def test_gzip_compressed_requests(start_search):
    server = start_search()
    compressed = Elasticsearch(server.url, http_compress=True)
    try:
        assert helpers.bulk(compressed, [{"_index": "zipped", "_id": "1", "_source": {"text": "squeezed"}}]) == (1, [])
        assert ids(compressed.search(index="zipped", query={"match": {"text": "squeezed"}})) == ["1"]
    finally:
        compressed.close()


# -- queries ---------------------------------------------------------------------------


def test_match_and_match_all(books):
    assert search_ids(books, {"match_all": {}}) == ["1", "2", "3", "4", "5"]
    assert search_ids(books, {"match": {"body": "fox"}}) == ["1", "2"]
    assert search_ids(books, {"match": {"body": "FOX sun"}}) == ["1", "2", "3"]  # analysed, OR by default
    assert search_ids(books, {"match": {"body": {"query": "lazy dog", "operator": "and"}}}) == ["1"]
    assert search_ids(books, {"match": {"title": "Quick!"}}) == ["1"]
    assert search_ids(books, {"match": {"year": 2021}}) == ["4", "5"]  # a number field: exact
    assert search_ids(books, {"match_phrase": {"body": "the lazy dog"}}) == ["1"]
    assert search_ids(books, {"match": {"body": "unicorn"}}) == []


def test_multi_match_with_field_boosts(books):
    assert search_ids(books, {"multi_match": {"query": "dog", "fields": ["title", "body"]}}) == ["1", "3", "4"]
    # "Cooking for Dogs" says dogs, not dog: only bodies match, and the shortest body ranks first
    assert (
        ids(books.search(index="books", query={"multi_match": {"query": "dog", "fields": ["title^10", "body"]}}))[0]
        == "1"
    )
    title_first = books.search(index="books", query={"multi_match": {"query": "lazy", "fields": ["title^5", "body"]}})
    assert ids(title_first) == ["3", "1"]  # "Lazy Afternoons" beats a body mention when titles weigh 5x


def test_term_terms_range_exists_and_ids(books):
    assert search_ids(books, {"term": {"tags": "animals"}}) == ["1", "2", "4"]
    assert search_ids(books, {"term": {"author.name.keyword": "Ann"}}) == ["1", "4"]
    assert search_ids(books, {"term": {"author.name": {"value": "ann", "case_insensitive": True}}}) == ["1", "4"]
    assert search_ids(books, {"terms": {"tags": ["tech", "leisure"]}}) == ["3", "5"]
    assert search_ids(books, {"range": {"year": {"gte": 2010, "lt": 2021}}}) == ["2", "3"]
    assert search_ids(books, {"range": {"price": {"gt": 12.5}}}) == ["2", "4"]
    assert search_ids(books, {"range": {"published": {"gte": "2010-01-15", "lte": "2015-12-31"}}}) == ["2", "3"]
    assert search_ids(books, {"range": {"published": {"lt": "now"}}}) == ["1", "2", "3", "4", "5"]
    assert search_ids(books, {"exists": {"field": "price"}}) == ["1", "2", "3", "4"]
    assert search_ids(books, {"ids": {"values": ["2", "5", "9"]}}) == ["2", "5"]


def test_bool_queries(books):
    query = {
        "bool": {
            "must": [{"match": {"body": "dog"}}],
            "filter": [{"range": {"year": {"gte": 2000}}}],
            "must_not": [{"term": {"tags": "leisure"}}],
        }
    }
    assert search_ids(books, query) == ["4"]
    should = {"bool": {"should": [{"match": {"body": "fox"}}, {"match": {"body": "sun"}}, {"term": {"tags": "tech"}}]}}
    assert search_ids(books, should) == ["1", "2", "3", "5"]
    at_least_two = {
        "bool": {
            "should": [{"match": {"body": "fox"}}, {"match": {"body": "dog"}}, {"term": {"tags": "classic"}}],
            "minimum_should_match": 2,
        }
    }
    assert search_ids(books, at_least_two) == ["1"]
    only_filter = books.search(index="books", query={"bool": {"filter": {"term": {"tags": "animals"}}}})
    assert {hit["_score"] for hit in only_filter["hits"]["hits"]} == {0.0}
    assert search_ids(books, {"bool": {"must_not": {"exists": {"field": "price"}}}}) == ["5"]


def test_bm25_ranks_like_elasticsearch(es):
    docs = {
        "once-long": "the fox went out on a chilly night and prayed for the moon to give him light",
        "thrice": "fox fox fox in the night",
        "once-short": "a fox at night",
        "none": "nothing to see here",
    }
    for id_, text in docs.items():
        es.index(index="ranking", id=id_, document={"text": text})
    hits = es.search(index="ranking", query={"match": {"text": "fox"}})["hits"]
    assert [hit["_id"] for hit in hits["hits"]] == ["thrice", "once-short", "once-long"]
    assert hits["max_score"] == hits["hits"][0]["_score"] > hits["hits"][1]["_score"] > hits["hits"][2]["_score"] > 0

    # Lucene's BM25 (k1=1.2, b=0.75): what Elasticsearch reports for the same documents
    lengths = [len(text.split()) for text in docs.values()]
    idf = math.log(1 + (4 - 3 + 0.5) / (3 + 0.5))
    expected = idf * 3 / (3 + 1.2 * (1 - 0.75 + 0.75 * 6 / (sum(lengths) / 4)))
    assert hits["hits"][0]["_score"] == pytest.approx(expected, rel=1e-6)


def test_paging_sorting_and_source(books):
    page = books.search(
        index="books",
        query={"match_all": {}},
        sort=[{"year": "desc"}, {"title.keyword": "asc"}],
        from_=1,
        size=2,
        source=["title", "author.name"],
    )
    assert page["hits"]["total"] == {"value": 5, "relation": "eq"}
    assert ids(page) == ["5", "3"]  # 2021 Cooking, 2021 Search, 2015 Lazy, ...; page 2 of size 2 from 1
    assert page["hits"]["hits"][0]["_source"] == {"title": "Search Engines", "author": {"name": "Dee"}}
    assert page["hits"]["hits"][0]["_score"] is None and page["hits"]["max_score"] is None
    assert page["hits"]["hits"][0]["sort"] == [2021, "Search Engines"]

    by_price = books.search(index="books", sort="price:asc", size=10)
    assert ids(by_price) == ["3", "1", "4", "2", "5"]  # a missing price sorts last
    by_date = books.search(index="books", sort=[{"published": {"order": "asc"}}])
    assert ids(by_date) == ["1", "2", "3", "5", "4"]
    no_source = books.search(index="books", query={"match": {"body": "fox"}}, source=False)
    assert all("_source" not in hit for hit in no_source["hits"]["hits"])
    assert books.search(index="books", size=0)["hits"]["hits"] == []


def test_count_and_search_across_indices(books):
    assert books.count(index="books")["count"] == 5
    assert books.count(index="books", query={"match": {"body": "dog"}})["count"] == 3
    books.index(index="magazines", id="m1", document={"title": "Fox Monthly"}, refresh="wait_for")
    everywhere = books.search(query={"match": {"title": "fox"}})  # /_search: every index
    assert sorted((hit["_index"], hit["_id"]) for hit in everywhere["hits"]["hits"]) == [
        ("books", "1"),
        ("magazines", "m1"),
    ]
    assert books.count(index="books,magazines")["count"] == 6
    assert books.count(index="mag*")["count"] == 1


def test_concurrent_writes_and_searches(es):
    errors = []

    def worker(n):
        try:
            for i in range(15):
                es.index(index="busy", id=f"{n}-{i}", document={"text": f"worker {n} item {i}", "n": n})
                es.search(index="busy", query={"match": {"text": "worker"}})
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert es.count(index="busy")["count"] == 120


# -- persistence and lifecycle ---------------------------------------------------------


def test_data_survives_a_restart(start_search, tmp_path):
    data = tmp_path / "persist"
    first = start_search(data)
    cluster_uuid = first.es.info()["cluster_uuid"]
    first.es.indices.create(index="kept", mappings={"properties": {"tag": {"type": "keyword"}}})
    helpers.bulk(
        first.es,
        [{"_index": "kept", "_id": str(n), "_source": {"text": f"durable doc {n}", "tag": "x"}} for n in range(20)],
    )
    assert first.stop() == 0
    assert (data / "search.sqlite3").exists()

    second = start_search(data)
    assert second.es.count(index="kept")["count"] == 20
    assert second.es.search(index="kept", query={"match": {"text": "durable"}})["hits"]["total"]["value"] == 20
    assert second.es.indices.get_mapping(index="kept")["kept"]["mappings"]["properties"]["tag"] == {"type": "keyword"}
    assert second.es.info()["cluster_uuid"] == cluster_uuid


def test_sigterm_stops_it_cleanly(start_search):
    server = start_search()
    server.es.index(index="a", id="1", document={"x": 1})
    pid = server.proc.pid
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    assert not psutil.pid_exists(pid)


# -- what it refuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_body",
    [
        {"query": {"fuzzy": {"title": "fxo"}}},
        {"query": {"match_all": {}}, "aggs": {"tags": {"terms": {"field": "tags"}}}},
        {"query": {"match": {"title": {"query": "fxo", "fuzziness": "AUTO"}}}},
        {"query": {"query_string": {"query": "title:fox"}}},
    ],
)
def test_unsupported_features_name_the_docker_backend(books, request_body):
    with pytest.raises(BadRequestError) as raised:
        books.search(index="books", **request_body)
    assert raised.value.error == "dynosim_unsupported"
    assert "--addons docker" in str(raised.value)
    assert raised.value.body["status"] == 400
    assert raised.value.body["error"]["root_cause"][0]["type"] == "dynosim_unsupported"


def test_unsupported_endpoints_and_malformed_json_get_elasticsearch_errors(start_search):
    server = start_search()
    status, headers, body = raw(server.url, "POST", "/_msearch", b'{}\n{"query": {"match_all": {}}}\n')
    assert status == 400 and headers["X-Elastic-Product"] == "Elasticsearch"
    assert "--addons docker" in json.loads(body)["error"]["reason"]

    status, headers, body = raw(server.url, "POST", "/books/_search", b'{"query": {"match_all": ')
    assert status == 400 and headers["Content-Type"] == "application/json"
    error = json.loads(body)
    assert error["status"] == 400 and error["error"]["type"] == "parse_exception"
    assert error["error"]["root_cause"][0]["type"] == "parse_exception"

    status, _, body = raw(server.url, "HEAD", "/missing")
    assert status == 404 and body == b""


def test_a_taken_port_is_one_clear_line(start_search, tmp_path):
    server = start_search()
    port = server.url.rsplit(":", 1)[1]
    taken = subprocess.run(
        [sys.executable, "-m", "dynosim.addons.search", "--data", str(tmp_path / "other"), "--port", port],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert taken.returncode == 1
    assert taken.stderr.strip() == f"dynosim search: port {port} on 127.0.0.1 is taken; pick another with --port"
