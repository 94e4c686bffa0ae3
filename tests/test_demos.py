"""The demonstrations of fixtures/ephemeral/: five classic ephemeral-state bugs of Heroku apps,
each driven over HTTP through a daily cycle, with the state gone afterwards and dynosim's ledger
naming the file, its kind and its fix; and each fixed twin, whose state survives the same cycle."""

from __future__ import annotations

import time

from conftest import CACHE_DIR, FIXTURES

DEMOS = FIXTURES / "ephemeral"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def start(dynosim_app, name: str, **options):
    return dynosim_app(DEMOS / name, cache_dir=CACHE_DIR, addons_backend="native", **options)


def the_loss(app, path: str):
    """The one loss the ledger recorded for `path`."""
    found = [loss for loss in app.ephemeral.losses if loss.path == path]
    assert len(found) == 1, app.ephemeral.losses
    return found[0]


def multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, dict[str, str]]:
    """What a browser's <input type=file> (or `curl -F field=@file`) sends."""
    boundary = "dynosim-demo-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# 1. SQLite as the database
def test_sqlite_db_loses_every_note_at_the_daily_cycle(dynosim_app):
    app = start(dynosim_app, "sqlite-db")
    assert app.post("/notes", {"text": "buy milk"}).status == 201
    assert app.get("/notes").json() == ["buy milk"]
    app.cycle()
    assert app.get("/notes").json() == []  # notes.db went with the dyno's filesystem
    loss = the_loss(app, "notes.db")
    assert (loss.dyno, loss.kind) == ("web.1", "sqlite")  # recognised by its header
    assert "Postgres" in loss.fix and "DATABASE_URL" in loss.fix
    app.logs.wait_for(r"dynosim\[web\.1\]:   SQLite database: notes\.db \(.*\) -> keep data in Postgres")


def test_sqlite_db_fixed_keeps_its_notes_in_postgres(dynosim_app):
    app = start(dynosim_app, "sqlite-db-fixed")
    assert app.addon_urls["DATABASE_URL"].startswith("postgres://")
    assert app.logs.search(r"app\[release\.\d+\]: notes table ready")  # the migration ran in the release phase
    assert app.post("/notes", {"text": "buy milk"}).status == 201
    app.cycle()
    assert app.get("/notes").json() == ["buy milk"]
    assert app.ephemeral.losses == []


# 2. logs written to a file
def test_file_logs_lose_the_log_at_the_daily_cycle(dynosim_app):
    app = start(dynosim_app, "file-logs")
    assert app.post("/signup", {"email": "ada@example.com"}).status == 201
    assert "new sign-up: ada@example.com" in app.get("/log").text
    assert not app.logs.search(r"new sign-up")  # `heroku logs` never sees a line of it
    app.cycle()
    assert "new sign-up" not in app.get("/log").text
    loss = the_loss(app, "logs/app.log")
    assert (loss.dyno, loss.kind) == ("web.1", "log")
    assert "stdout" in loss.fix


def test_file_logs_fixed_logs_to_stdout_and_the_log_stream_keeps_it(dynosim_app):
    app = start(dynosim_app, "file-logs-fixed")
    assert app.post("/signup", {"email": "ada@example.com"}).status == 201
    app.logs.wait_for(r"app\[web\.1\]: INFO signup: new sign-up: ada@example\.com")
    app.cycle()
    assert app.post("/signup", {"email": "bob@example.com"}).status == 201
    app.logs.wait_for(r"app\[web\.1\]: INFO signup: new sign-up: bob@example\.com")
    # the stream (what a log drain receives) holds both, across the cycle
    assert len(app.logs.search(r"app\[web\.1\]: INFO signup: new sign-up")) == 2
    assert app.ephemeral.losses == []


# 3. uploads saved to local disk
def test_local_uploads_are_gone_after_the_daily_cycle(dynosim_app):
    app = start(dynosim_app, "local-uploads")
    body, headers = multipart("avatar", "ada.png", PNG, "image/png")
    assert app.post("/avatars", body, headers=headers).json() == {"url": "/avatars/ada.png"}
    assert app.get("/avatars/ada.png").body == PNG
    app.cycle()
    assert app.get("/avatars/ada.png").status == 404
    loss = the_loss(app, "uploads/ada.png")
    assert (loss.dyno, loss.kind, loss.size) == ("web.1", "upload", len(PNG))
    assert "object storage" in loss.fix


def test_local_uploads_fixed_keeps_uploads_outside_the_dyno(dynosim_app):
    app = start(dynosim_app, "local-uploads-fixed")
    body, headers = multipart("avatar", "ada.png", PNG, "image/png")
    assert app.post("/avatars", body, headers=headers).status == 201
    app.cycle()
    response = app.get("/avatars/ada.png")
    assert (response.status, response.body, response.headers["Content-Type"]) == (200, PNG, "image/png")
    assert app.ephemeral.losses == []


# 4. translations compiled at run time
def test_runtime_compiled_translations_are_compiled_again_after_every_cycle(dynosim_app):
    app = start(dynosim_app, "runtime-compiled")
    assert app.exec("ls locale/fr/LC_MESSAGES") == (0, "messages.po")  # the slug has no .mo
    assert "<h1>Bonjour !</h1>" in app.get("/?lang=fr").text
    app.logs.wait_for(r"app\[web\.1\]: compiling translations: locale/fr/LC_MESSAGES/messages\.po")
    app.cycle()
    mark = len(app.logs)
    assert "<h1>Bonjour !</h1>" in app.get("/?lang=fr").text
    # the .mo went with the dyno's filesystem: the first request after the cycle compiles it again
    app.logs.wait_for(r"app\[web\.1\]: compiling translations: locale/fr/LC_MESSAGES/messages\.po", after=mark)
    loss = the_loss(app, "locale/fr/LC_MESSAGES/messages.mo")
    assert (loss.dyno, loss.kind) == ("web.1", "compiled")
    assert "post_compile" in loss.fix  # into the slug, at build time


def test_runtime_compiled_fixed_builds_the_translations_into_the_slug(dynosim_app):
    app = start(dynosim_app, "runtime-compiled-fixed")
    status, listing = app.exec("ls locale/fr/LC_MESSAGES")
    assert (status, listing.split()) == (0, ["messages.mo", "messages.po"])  # bin/post_compile made it
    assert "<h1>Bonjour !</h1>" in app.get("/?lang=fr").text
    app.cycle()
    assert "<h1>Hallo!</h1>" in app.get("/?lang=de").text
    assert not app.logs.search(r"compiling")
    assert not [write for write in app.ephemeral.writes if write.path.endswith(".mo")]
    assert app.ephemeral.losses == []


# 5. a worker that reads a file the web dyno wrote
def test_shared_file_never_reaches_the_worker_and_the_cycle_drops_the_job(dynosim_app):
    app = start(dynosim_app, "shared-file", formation="web=1,worker=1")
    app.logs.wait_for(r"app\[worker\.1\]: worker: waiting for jobs in jobs/next\.json")
    assert app.post("/signup", {"email": "ada@example.com"}).status == 202
    assert app.get("/").text == "pending: ada@example.com\n"  # the job is on web.1's disk
    time.sleep(2.5)  # five of the worker's polls
    assert not app.logs.search(r"app\[worker\.1\]: worker: sending")  # worker.1 has a disk of its own
    assert app.get("/").text == "pending: ada@example.com\n"
    app.cycle()
    assert app.get("/").text == "pending: none\n"  # and now the job is gone for good
    assert not app.logs.search(r"worker: sending")
    loss = the_loss(app, "jobs/next.json")
    assert (loss.dyno, loss.kind) == ("web.1", "other")
    assert "Redis" in loss.fix
    assert not [loss for loss in app.ephemeral.losses if loss.dyno == "worker.1"]


def test_shared_file_fixed_passes_jobs_through_redis(dynosim_app):
    app = start(dynosim_app, "shared-file-fixed", formation="web=1,worker=1")
    assert app.addon_urls["REDIS_URL"].startswith(("rediss://", "redis://"))  # TLS, as on Heroku, unless turned off
    assert app.post("/signup", {"email": "ada@example.com"}).status == 202
    app.logs.wait_for(r"app\[worker\.1\]: worker: sending welcome email to ada@example\.com", timeout=10)
    app.cycle()
    assert app.post("/signup", {"email": "bob@example.com"}).status == 202
    app.logs.wait_for(r"app\[worker\.1\]: worker: sending welcome email to bob@example\.com", timeout=10)
    assert app.get("/").text == "pending: 0\n"
    assert app.ephemeral.losses == []
