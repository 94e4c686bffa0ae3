"""Add-ons on the docker backend: real containers on a real engine, used through the official clients.

No registry can be reached in CI, so the images are local stand-ins for the official ones, built by
`.ci/docker-images.sh` (Debian's postgresql, redis-server, and dynosim's search stand-in); the tests
point the backend at them with the DYNOSIM_*_IMAGE variables, as a user would point it at a mirror.

Without an engine (or without those images) the tests that need one skip, saying why; with
DYNOSIM_REQUIRE_DOCKER=1 (CI) they fail instead. Every container and volume a test makes is removed
afterwards (by the test app's label); the backend itself never removes a volume.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
from conftest import DOCKER_IMAGES, need_docker, remove_app_containers
from elasticsearch import Elasticsearch

from dynosim.addons import AddonRequest, Addons
from dynosim.addons.backends import load
from dynosim.errors import AddonError

docker = pytest.importorskip("docker")

from dynosim.addons import backends  # noqa: E402
from dynosim.addons.backends.docker import LABEL_APP, app_id  # noqa: E402  (needs docker-py)

PG = AddonRequest("heroku-postgresql")
REDIS = AddonRequest("heroku-redis")
SEARCH = AddonRequest("searchbox")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> None:
    need_docker(monkeypatch)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    app = Path(tempfile.mkdtemp(prefix="dynosim-docker-"))
    state = app / ".dynosim"
    yield state
    remove_app_containers(state)
    shutil.rmtree(app, ignore_errors=True)


def containers(state: Path) -> dict[str, object]:
    """The test app's containers by add-on service: docker-py objects."""
    client = docker.from_env()
    found = client.containers.list(all=True, filters={"label": f"{LABEL_APP}={app_id(state)}"})
    return {c.labels["dynosim.service"]: c for c in found}


def said() -> tuple[list[str], object]:
    lines: list[str] = []
    return lines, lines.append


# --- Postgres --------------------------------------------------------------------------------------


def test_postgres_in_docker_keeps_data_across_stops_and_a_new_container(engine: None, state_dir: Path) -> None:
    lines, say = said()
    addons = Addons(state_dir, [PG], backend="docker", say=say)
    started = time.monotonic()
    [db] = addons.start()
    cold = time.monotonic() - started
    assert (db.service, db.backend) == ("postgres", "docker")
    url = db.config_vars["DATABASE_URL"]
    assert url.startswith("postgres://u") and f"@127.0.0.1:{db.endpoint.split(':')[1]}/d" in url
    first = containers(state_dir)["postgres"]
    assert first.name == f"dynosim-{db.name}"
    assert first.attrs["HostConfig"]["PortBindings"]["5432/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": db.endpoint.split(":")[1]}
    ]
    assert {m["Name"] for m in first.attrs["Mounts"] if m["Type"] == "volume"} == {f"dynosim-{db.name}"}
    volume = docker.from_env().volumes.get(f"dynosim-{db.name}")
    marker = state_dir / "addons" / db.name / "docker-provisioned"  # role and database made for this volume
    assert marker.read_text() == f"dynosim-{db.name}@{volume.attrs['Labels']['dynosim.volume-id']}\n"

    with psycopg.connect(url, autocommit=True) as conn:
        # The app's role owns its database but is no superuser, as on Heroku.
        assert conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (False, False, False)
        assert conn.execute(
            "SELECT pg_get_userbyid(datdba) = current_user FROM pg_database WHERE datname = current_database()"
        ).fetchone() == (True,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE ROLE intruder")
        conn.execute("CREATE TABLE notes (body text)")
        conn.execute("INSERT INTO notes VALUES ('kept')")
    addons.stop()
    first.reload()
    assert first.status == "exited"
    marker_written = marker.stat().st_mtime_ns

    # Warm start: the same container, started again; faster than the first (initdb) start.
    started = time.monotonic()
    [again] = addons.start()
    warm = time.monotonic() - started
    assert dict(again.config_vars) == dict(db.config_vars)
    assert containers(state_dir)["postgres"].id == first.id
    assert warm < cold, (warm, cold)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]
    addons.stop()
    assert marker.stat().st_mtime_ns == marker_written  # not provisioned again

    # The container removed (as `docker rm` or a docker prune would): a new one, on the same volume.
    first.remove()
    [third] = addons.start()
    assert containers(state_dir)["postgres"].id != first.id
    with psycopg.connect(third.config_vars["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]
    addons.stop()
    ready = [line for line in lines if "ready on 127.0.0.1" in line]
    name = f"dynosim-{db.name}"
    assert [line.rsplit("(", 1)[1] for line in ready] == [
        f"new container {name})", f"container {name} started)", f"new container {name})",
    ], ready  # fmt: skip
    assert lines[0] == f"add-ons: docker backend (engine {docker.from_env().version()['Version']} answers)"


# --- Redis and search ------------------------------------------------------------------------------


def test_redis_and_search_in_docker_through_the_official_clients(engine: None, state_dir: Path) -> None:
    with Addons(state_dir, [REDIS, SEARCH], backend="docker", say=lambda _: None) as addons:
        cache, search = addons.start()
        assert (cache.backend, search.backend) == ("docker", "docker")
        client = redis.Redis.from_url(cache.config_vars["REDIS_URL"], ssl_cert_reqs=None)
        assert client.ping() is True
        client.set("greeting", "hello")
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(
                host="127.0.0.1", port=int(cache.endpoint.split(":")[1]), password="wrong", ssl=True, ssl_cert_reqs=None
            ).ping()
        client.close()

        es = Elasticsearch(search.config_vars["SEARCHBOX_URL"])
        assert es.info()["version"]["number"].startswith("8.")
        es.index(index="posts", id="1", document={"title": "Dynos restart daily"}, refresh=True)
        es.index(index="posts", id="2", document={"title": "Add-ons keep their data"}, refresh=True)
        hits = es.search(index="posts", query={"match": {"title": "data"}})["hits"]["hits"]
        assert [hit["_id"] for hit in hits] == ["2"]
        es.close()
        ids = {service: c.id for service, c in containers(state_dir).items()}

        addons.stop()
        cache, search = addons.start()  # the same containers again, with their data
        assert {service: c.id for service, c in containers(state_dir).items()} == ids
        client = redis.Redis.from_url(cache.config_vars["REDIS_URL"], ssl_cert_reqs=None)
        assert client.get("greeting") == b"hello"
        client.close()
        es = Elasticsearch(search.config_vars["SEARCHBOX_URL"])
        assert es.count(index="posts")["count"] == 2
        es.close()


def test_a_changed_setting_replaces_the_container_and_keeps_the_data(engine: None, state_dir: Path) -> None:
    lines, say = said()
    with Addons(state_dir, [REDIS], backend="docker", say=say) as addons:
        [cache] = addons.start()
        client = redis.Redis.from_url(cache.config_vars["REDIS_URL"], ssl_cert_reqs=None)
        client.set("kept", "yes")
        client.close()
        before = containers(state_dir)["redis"].id
        addons.stop()
        # The user frees the port, as the "port is taken" message tells them to: a new port next run.
        state = json.loads((state_dir / "addons.json").read_text())
        del state["addons"][0]["port"]
        (state_dir / "addons.json").write_text(json.dumps(state))
        [moved] = addons.start()
        assert moved.endpoint != cache.endpoint
        assert containers(state_dir)["redis"].id != before
        client = redis.Redis.from_url(moved.config_vars["REDIS_URL"], ssl_cert_reqs=None)
        assert client.get("kept") == b"yes"
        client.close()
    assert any("its settings (image, port, password or command) changed" in line and "replacing it" in line
               for line in lines), lines  # fmt: skip


# --- dynosim killed --------------------------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from dynosim.addons import AddonRequest, Addons

addons = Addons(Path(sys.argv[1]), [AddonRequest("heroku-postgresql"), AddonRequest("heroku-redis")],
                backend="docker", say=lambda line: print(line, flush=True))
for attachment in addons.start():
    print("URL", next(iter(attachment.config_vars.values())), flush=True)
print("ready", flush=True)
time.sleep(600)
"""


def hold(state_dir: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """A dynosim-like process holding the add-ons; returns it once they are ready, with their URLs."""
    script = tmp_path / "holder.py"
    script.write_text(textwrap.dedent(HOLDER))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(state_dir)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    for line in proc.stdout:
        if line.startswith("URL "):
            url = line.split(" ", 1)[1].strip()
            urls[url.split(":", 1)[0]] = url
        if line.strip() == "ready":
            return proc, urls
    raise AssertionError(f"the holder exited with {proc.wait()} before its add-ons were ready")


def test_sigkilled_dynosim_leaves_no_running_container(engine: None, state_dir: Path, tmp_path: Path) -> None:
    proc, urls = hold(state_dir, tmp_path)
    with psycopg.connect(urls["postgres"]) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
    ids = {service: c.id for service, c in containers(state_dir).items()}
    assert {c.status for c in containers(state_dir).values()} == {"running"}

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while {c.status for c in containers(state_dir).values()} != {"exited"}:
        assert time.monotonic() < deadline, {s: c.status for s, c in containers(state_dir).items()}
        time.sleep(0.1)
    log = (state_dir / "addons" / "docker-reaper.log").read_text()
    assert "dynosim exited without stopping its add-ons" in log, log
    client = docker.from_env()
    assert len(client.volumes.list(filters={"label": f"{LABEL_APP}={app_id(state_dir)}"})) == 2  # data kept

    # The next run starts the same containers, with the data.
    lines, say = said()
    with Addons(state_dir, [PG, REDIS], backend="docker", say=say) as addons:
        db, _ = addons.start()
        assert {s: c.id for s, c in containers(state_dir).items()} == ids
        with psycopg.connect(db.config_vars["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert not any("still runs" in line for line in lines), lines


def test_a_run_right_after_a_sigkill_waits_for_the_watcher(engine: None, state_dir: Path, tmp_path: Path) -> None:
    """Without the lock, the new run would adopt a running container that the watcher then stops."""
    proc, _ = hold(state_dir, tmp_path)
    ids = {service: c.id for service, c in containers(state_dir).items()}
    proc.kill()
    proc.wait()
    with Addons(state_dir, [PG, REDIS], backend="docker", say=lambda _: None) as addons:
        _db, cache = addons.start()
        assert {s: c.id for s, c in containers(state_dir).items()} == ids
        time.sleep(1.0)  # the watcher is long done by now; it stopped them before this run started them
        assert {c.status for c in containers(state_dir).values()} == {"running"}
        assert redis.Redis.from_url(cache.config_vars["REDIS_URL"], ssl_cert_reqs=None).ping() is True
    assert "stopped dynosim-" in (state_dir / "addons" / "docker-reaper.log").read_text()


def test_containers_left_running_are_adopted_by_the_next_run(engine: None, state_dir: Path, tmp_path: Path) -> None:
    proc, _ = hold(state_dir, tmp_path)
    [watcher] = psutil.Process(proc.pid).children()  # the watcher goes too: the worst case
    watcher.kill()
    proc.kill()
    proc.wait()
    watcher.wait(10)
    running = containers(state_dir)
    assert {c.status for c in running.values()} == {"running"}

    lines, say = said()
    with Addons(state_dir, [PG, REDIS], backend="docker", say=say) as addons:
        addons.start()
        assert {s: c.id for s, c in containers(state_dir).items()} == {s: c.id for s, c in running.items()}
    assert sum("still runs; reusing it" in line for line in lines) == 2, lines
    assert {c.status for c in containers(state_dir).values()} == {"exited"}  # and this run stopped them


# --- what the user gets wrong ----------------------------------------------------------------------


def test_no_engine_is_one_line(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with Addons(state_dir, [PG], backend="docker", say=lambda _: None) as addons:
        with pytest.raises(AddonError) as caught:
            addons.start()
    assert str(caught.value) == (
        "--addons docker: no Docker engine answers (unix:///nonexistent.sock: no such socket); "
        "start Docker or run with --addons native"
    )
    lines, say = said()
    backend = load("auto", say)
    try:
        assert backend.name == "native"
    finally:
        backend.close()
    assert lines == ["add-ons: native backend (no Docker engine: unix:///nonexistent.sock: no such socket)"]

    # No DOCKER_HOST and no socket where docker-py looks: native, said the same way, without asking docker-py.
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setattr(backends, "DEFAULT_SOCKET", str(state_dir / "docker.sock"))
    lines, say = said()
    load("auto", say).close()
    assert lines == [f"add-ons: native backend (no Docker engine: unix://{state_dir / 'docker.sock'}: no such socket)"]


def test_auto_takes_docker_when_an_engine_answers(engine: None) -> None:
    lines, say = said()
    backend = load("auto", say)
    try:
        assert backend.name == "docker"
    finally:
        backend.close()
    [line] = lines
    assert line.startswith("add-ons: docker backend (engine ") and line.endswith(" answers)"), line


def test_an_image_that_cannot_be_pulled_is_one_line(
    engine: None, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYNOSIM_REDIS_IMAGE", "dynosim-test/no-such-image:1")
    with Addons(state_dir, [PG, REDIS], backend="docker", say=lambda _: None) as addons:
        with pytest.raises(AddonError) as caught:
            addons.start()
    message = str(caught.value)
    assert "\n" not in message
    assert (
        message.startswith("heroku-redis (redis-") and "cannot pull the image dynosim-test/no-such-image:1 (" in message
    )
    assert message.endswith("set DYNOSIM_REDIS_IMAGE to an image this engine has (see `docker images`) or can pull"), (
        message
    )
    left = containers(state_dir)
    assert set(left) == {"postgres"} and left["postgres"].status == "exited"  # nothing left running


# --- an add-on runs where it was created -------------------------------------------------------------


def rows(state: Path) -> list[tuple[str, str, str]]:
    """`dynosim addons`: (name, backend, attached as) of each add-on."""
    from dynosim.addons.manage import inventory

    return [(r.name, r.backend, r.attached_as) for r in inventory(state, [])]


def test_auto_falls_back_once_for_an_image_it_cannot_pull_and_the_addon_stays_with_its_data(
    engine: None, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYNOSIM_POSTGRES_IMAGE", "dynosim-test/no-such-image:1")
    lines, say = said()
    with Addons(state_dir, [PG], backend="auto", say=say) as addons:
        [db] = addons.start()
        assert db.backend == "native"
        with psycopg.connect(db.config_vars["DATABASE_URL"]) as conn:
            conn.execute("CREATE TABLE todo (title text)")
            conn.execute("INSERT INTO todo VALUES ('kept')")
    [fell_back] = [line for line in lines if "could not start it" in line]
    assert fell_back.startswith(f"heroku-postgresql ({db.name}): the docker backend could not start it (")
    assert "cannot pull the image dynosim-test/no-such-image:1" in fell_back
    assert fell_back.endswith("; created on the native backend instead, where it stays")
    assert rows(state_dir) == [(db.name, "native", "DATABASE")]

    # The image can be had now: the add-on still starts where its data is, and docker is not asked.
    monkeypatch.setenv("DYNOSIM_POSTGRES_IMAGE", DOCKER_IMAGES["DYNOSIM_POSTGRES_IMAGE"])
    for backend in ("auto", "docker"):
        lines, say = said()
        with Addons(state_dir, [PG], backend=backend, say=say) as addons:
            [again] = addons.start()
            assert (again.name, again.backend) == (db.name, "native")
            assert again.config_vars["DATABASE_URL"] == db.config_vars["DATABASE_URL"]
            with psycopg.connect(again.config_vars["DATABASE_URL"]) as conn:
                assert conn.execute("SELECT title FROM todo").fetchall() == [("kept",)]
        assert not any("pull" in line or "docker backend" in line for line in lines), lines
        assert rows(state_dir) == [(db.name, "native", "DATABASE")]
    # --addons docker named for it once, where it runs instead
    assert [line for line in lines if "where it was created" in line] == [
        f"heroku-postgresql ({db.name}): runs on native, where it was created and its data is (--addons docker "
        f"chooses for new add-ons only; to begin it again on docker, empty: `dynosim addons:destroy {db.name}`)"
    ]
    assert containers(state_dir) == {}


def test_an_addon_created_on_docker_never_starts_elsewhere(
    engine: None, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Addons(state_dir, [PG], backend="auto", say=lambda _: None) as addons:
        [db] = addons.start()
        assert db.backend == "docker"
    with monkeypatch.context() as engine_gone:  # gone for these starts only: the clean-up needs it back
        engine_gone.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
        for backend in ("auto", "native"):
            with Addons(state_dir, [PG], backend=backend, say=lambda _: None) as addons:
                with pytest.raises(AddonError) as caught:
                    addons.start()
            assert str(caught.value) == (
                f"heroku-postgresql ({db.name}) was created on docker, and its data is in the volume "
                f"dynosim-{db.name}: no Docker engine answers (unix:///nonexistent.sock: no such socket); start "
                f"Docker (or begin again elsewhere, empty: `dynosim addons:destroy {db.name}`)"
            )
    assert rows(state_dir) == [(db.name, "docker", "DATABASE")]
    assert not (state_dir / "addons" / db.name / "data").exists()  # no native server was made beside it


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    from conftest import make_app

    app = make_app(tmp_path)
    yield app
    remove_app_containers(app / ".dynosim")


def test_exec_after_a_native_run_uses_the_apps_addon(engine: None, app: Path) -> None:
    from conftest import run_dynosim

    assert run_dynosim(app, "addons:create", "heroku-postgresql").returncode == 0
    made = run_dynosim(app, "pg:psql", "--addons", "native", "--", "-X", "-c", "create table todo (title text); "
                       "insert into todo values ('kept')")  # fmt: skip
    assert made.returncode == 0, made.stderr
    [(name, backend, _)] = rows(app / ".dynosim")
    assert backend == "native"

    # No run is active and an engine answers: `exec` still uses the app's add-on, where its data is.
    done = run_dynosim(app, "exec", "sh", "-c", 'psql "$DATABASE_URL" -X -A -t -c "select title from todo"')
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kept" in done.stdout.splitlines()
    assert rows(app / ".dynosim") == [(name, "native", "DATABASE")]
    assert containers(app / ".dynosim") == {}


def test_destroy_removes_exactly_the_addon_named(engine: None, app: Path) -> None:
    """An older dynosim's `auto` fallback left a second, empty record beside the real one: both are
    listed, a run refuses them (two add-ons cannot attach as DATABASE), and destroying the empty one by
    its name leaves the real one and its data."""
    from conftest import run_dynosim

    state = app / ".dynosim"
    psql = ("pg:psql", "--addons", "native", "--", "-X", "-A", "-t", "-c")
    assert run_dynosim(app, *psql, "select 1").returncode != 0  # no add-on yet
    assert run_dynosim(app, "addons:create", "heroku-postgresql").returncode == 0
    assert run_dynosim(app, *psql, "create table todo (title text); insert into todo values ('kept')").returncode == 0
    saved = json.loads((state / "addons.json").read_text())
    [real] = saved["addons"]
    empty = {**real, "name": "postgresql-empty-12345", "backend": "docker", "port": real["port"] + 1}
    saved["addons"].append(empty)
    (state / "addons.json").write_text(json.dumps(saved))

    refused = run_dynosim(app, *psql, "select title from todo")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    [error] = [line for line in refused.stderr.splitlines() if line.startswith("dynosim: error: ")]
    assert "heroku-postgresql attached as DATABASE has 2 add-ons" in error
    assert f"{real['name']} on native, postgresql-empty-12345 on docker" in error and "addons:destroy NAME" in error
    assert {r[0] for r in rows(state)} == {real["name"], "postgresql-empty-12345"}

    ambiguous = run_dynosim(app, "addons:destroy", "DATABASE", "--confirm", "app")
    assert ambiguous.returncode != 0 and "could mean 2 add-ons" in ambiguous.stderr
    gone = run_dynosim(app, "addons:destroy", "postgresql-empty-12345", "--confirm", "app")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.strip() == "Destroying postgresql-empty-12345 on ⬢ app... done"
    assert rows(state) == [(real["name"], "native", "DATABASE")]
    kept = run_dynosim(app, *psql, "select title from todo")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.strip() == "kept"
    assert (state / "addons" / real["name"] / "data").exists()
