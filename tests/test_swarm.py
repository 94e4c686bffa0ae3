"""`dynosim deploy --to swarm` and `dynosim destroy --to swarm` on the real engine as a single-node swarm, and
`ps`, `ps:scale`, `logs` and `restart` with `--on swarm` against what it deployed.

The swarm is left as it was found: one these tests initialise (`--init`) is left again at the end
(`docker swarm leave --force`). Images build on the local dynosim-test/python:3.11 and add-ons run on
dynosim-test/postgres:15 (.ci/docker-images.sh makes both; no registry can be reached here). Where the
kernel has no IPVS (this CI's), the routing mesh cannot route and dynosim publishes web through its
router service instead; the requests below go through whichever the deploy said it used.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, free_port, ok, one_line_error, run_dynosim

from dynosim.formation import SIZES

docker = pytest.importorskip("docker")

BASE = "dynosim-test/python:3.11"
POSTGRES = "dynosim-test/postgres:15"
LABEL = "dynosim.swarm.app"
WEB = '''\
"""Names its dyno and its release's version.txt, and logs each request; on SIGTERM, ends the requests it
has, then exits."""
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = Path("version.txt").read_text().strip()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{os.environ['DYNO']} {VERSION}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        print(f"{os.environ['DYNO']} served {self.path}", flush=True)


server = ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler)
server.daemon_threads = False
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.server_close()
'''
RELEASE = """\
import os, sys
from pathlib import Path

print(f"release phase in {os.environ['DYNO']}", flush=True)
sys.exit(int(Path("release_exit.txt").read_text()) if Path("release_exit.txt").exists() else 0)
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    """The engine, left in the swarm state it had: one initialised here is left at the end."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as error:  # docker-py raises its own errors, requests' and OSError
        pytest.skip(f"no Docker engine answers ({error})")
    missing = [image for image in (BASE, POSTGRES) if not client.images.list(name=image)]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing; run .ci/docker-images.sh")
    yield client
    client.close()


@pytest.fixture(autouse=True)
def one_swarm_test_at_a_time(engine: docker.DockerClient) -> Iterator[None]:
    """The engine has one swarm: a test inits it, another needs it not to be there, a third leaves it. Each
    takes the machine's lock (xdist workers, and another CI run on the engine) and leaves the swarm as found."""
    with open(os.open("/tmp/dynosim-test-swarm.lock", os.O_RDWR | os.O_CREAT, 0o600)) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        was = (engine.info().get("Swarm") or {}).get("LocalNodeState")
        try:
            yield
        finally:
            if was != "active" and (engine.info().get("Swarm") or {}).get("LocalNodeState") == "active":
                engine.swarm.leave(force=True)


@pytest.fixture
def swarm_env(engine: docker.DockerClient, monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv("PORT", str(port))  # where web is published
    monkeypatch.setenv("DYNOSIM_IMAGE_BASE", BASE)
    monkeypatch.setenv("DYNOSIM_POSTGRES_IMAGE", POSTGRES)
    return port


def commit(app: Path, message: str, **files: str) -> None:
    for name, text in files.items():
        (app / name).write_text(text)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "add", "-A"], cwd=app, check=True)
    subprocess.run([*git, "commit", "-qm", message], cwd=app, check=True)


def stdlib_app(folder: Path, name: str) -> Path:
    folder.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    files = {
        "Procfile": "release: python release.py\nweb: python web.py\n",
        "requirements.txt": "",
        "app.json": json.dumps({"name": name}),
        "web.py": WEB,
        "release.py": RELEASE,
        "version.txt": "1\n",
    }
    commit(folder, "first", **files)
    return folder


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def labelled(client: docker.DockerClient, name: str) -> dict[str, int]:
    label = f"{LABEL}={name}"
    return {
        "services": len(client.api.services(filters={"label": label})),
        "networks": len(client.api.networks(filters={"label": label})),
        "volumes": len(client.api.volumes(filters={"label": label}).get("Volumes") or []),
        "secrets": len(client.api.secrets(filters={"label": label})),
        "configs": len(client.api.configs(filters={"label": label})),
        "containers": len(client.api.containers(all=True, filters={"label": label})),
    }


def destroy(app: Path, name: str, client: docker.DockerClient) -> None:
    """The test's teardown: the app off the swarm, and its images (which destroy keeps, as a cache) gone."""
    run_dynosim(app, "destroy", "--to", "swarm", "--confirm", name, timeout=180)
    for image in client.api.images(filters={"label": f"dynosim.app={name}"}):
        client.api.remove_image(image["Id"], force=True)


class ClientLoop(threading.Thread):
    """Requests one after another, each on a new connection, until stopped: every answer or failure kept."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[str] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.answers.append(get(self.url))
            except Exception as error:  # any failed request counts
                self.failures.append(repr(error))
            time.sleep(0.01)


def ps_rows(app: Path) -> dict[str, dict[str, object]]:
    return {str(row["name"]): row for row in json.loads(ok(run_dynosim(app, "ps", "--on", "swarm", "--json")))}


def replicas(client: docker.DockerClient, service: str) -> int:
    found = [s for s in client.api.services(filters={"name": service}) if s["Spec"]["Name"] == service]
    return int(found[0]["Spec"]["Mode"]["Replicated"]["Replicas"])


def logged(app: Path, line: str, *args: str) -> str:
    """`logs --on swarm ARGS` once it shows `line` (the engine's log driver writes it a moment after)."""
    deadline = time.monotonic() + 60
    while True:
        out = ok(run_dynosim(app, "logs", "--on", "swarm", *args))
        if line in out or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def test_not_a_manager_is_one_line(tmp_path: Path, engine: docker.DockerClient, swarm_env: int) -> None:
    if (engine.info().get("Swarm") or {}).get("LocalNodeState") == "active":
        pytest.skip("the engine is a swarm manager already")
    app = stdlib_app(tmp_path / "app", "swarm-refused")
    one_line_error(run_dynosim(app, "deploy", "--to", "swarm"), "docker swarm init", "--init")
    for verb in (["ps"], ["ps:scale", "web=2"], ["logs"], ["restart"]):
        one_line_error(run_dynosim(app, *verb, "--on", "swarm"), "not in a swarm", "deploy --to swarm --init")
    assert (engine.info().get("Swarm") or {}).get("LocalNodeState") != "active"  # asked, not done


def test_no_engine_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = stdlib_app(tmp_path / "app", "swarm-no-engine")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    for verb in (["deploy", "--to", "swarm", "--init"], ["ps", "--on", "swarm"], ["logs", "--on", "swarm"]):
        one_line_error(run_dynosim(app, *verb), "no Docker engine answers", "DOCKER_HOST")


@pytest.mark.parametrize(
    "procfile",
    ["web: python web.py\nmy_worker: sleep 1\nmy-worker: sleep 2\n", "web: python web.py\nrouter: sleep 1\n"],
)
def test_two_types_of_one_service_name_are_refused(
    tmp_path: Path, engine: docker.DockerClient, swarm_env: int, procfile: str
) -> None:
    app = stdlib_app(tmp_path / "app", "swarm-names")
    commit(app, "types", Procfile=procfile)
    was = (engine.info().get("Swarm") or {}).get("LocalNodeState")
    one_line_error(
        run_dynosim(app, "deploy", "--to", "swarm", "--init"), "Procfile", "would be the swarm service", "rename"
    )
    assert (engine.info().get("Swarm") or {}).get("LocalNodeState") == was  # refused before the engine was touched


def test_external_addons_need_their_vars(tmp_path: Path, engine: docker.DockerClient, swarm_env: int) -> None:
    import shutil

    app = tmp_path / "sample"
    shutil.copytree(FIXTURES / "sample", app, ignore=shutil.ignore_patterns(".dynosim"))
    was = (engine.info().get("Swarm") or {}).get("LocalNodeState")
    refused = run_dynosim(app, "deploy", "--to", "swarm", "--init", "--external-addons")
    one_line_error(refused, "DATABASE_URL", "config:set")
    assert (engine.info().get("Swarm") or {}).get("LocalNodeState") == was  # refused before the engine was touched


def test_deploy_spreads_rolls_refuses_a_failed_release_and_tears_down(
    tmp_path: Path, engine: docker.DockerClient, swarm_env: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One deployment, taken through what a user does to it: ps, logs, ps:scale (which the next deploy keeps),
    a release rolled, a restart, then a failed release phase, a failed image build and a formation the swarm
    cannot place, each refused with the previous release still serving."""
    name = "swarm-test"
    app = stdlib_app(tmp_path / "app", name)
    url = f"http://127.0.0.1:{swarm_env}/"
    try:
        ok(run_dynosim(app, "ps:scale", "web=2"))
        out = ok(run_dynosim(app, "deploy", "--to", "swarm", "--init", timeout=600))
        assert "release phase in release.1" in out and f"Released v1 on the swarm: {url}" in out, out

        seen = {get(url) for _ in range(20)}
        assert seen == {"web.1 1", "web.2 1"}  # both replicas answer, each with its own DYNO

        listing = ok(run_dynosim(app, "ps", "--on", "swarm"))
        assert "=== web (Standard-1X): python web.py (2)\n" in listing, listing
        for dyno in ("web.1", "web.2"):
            assert re.search(
                rf"^{dyno}: up \d{{4}}/\d\d/\d\d \d\d:\d\d:\d\d [+-]\d{{4}} \(~ \d+[smhd] ago\)$", listing, re.M
            )

        served = get(url + "probe").split()[0]  # the dyno that answered
        other = ({"web.1", "web.2"} - {served}).pop()
        out = logged(app, f"app[{served}]: {served} served /probe", "--dyno", served)
        assert re.search(rf"^\S+\+00:00 app\[{served}\]: {served} served /probe$", out, re.M), out
        assert f"app[{other}]" not in out  # only the dyno asked for
        assert f"app[{served}]: {served} served /probe" in ok(run_dynosim(app, "logs", "--on", "swarm", "-n", "200"))
        tail = subprocess.Popen(
            [sys.executable, "-m", "dynosim", "logs", "--on", "swarm", "--tail", "-n", "1"],
            cwd=app,
            stdout=subprocess.PIPE,
            text=True,
        )
        timer = threading.Timer(60, tail.kill)  # a line that never comes fails the test, not hangs it
        timer.start()
        try:
            get(url + "tailed")
            assert tail.stdout is not None
            line = next((line for line in tail.stdout if "/tailed" in line), "")
            assert re.search(r"app\[web\.[12]\]: web\.[12] served /tailed$", line.strip()), line
        finally:
            timer.cancel()
            tail.kill()
            tail.wait()

        # ps:scale sets the service's replicas, within Heroku's limits, and keeps the quantity for the next deploy
        out = ok(run_dynosim(app, "ps:scale", "web=3", "--on", "swarm", timeout=600))
        assert "now running web at 3" in out, out
        assert sorted(ps_rows(app)) == ["web.1", "web.2", "web.3"] and replicas(engine, f"{name}-web") == 3
        assert {get(url) for _ in range(30)} == {"web.1 1", "web.2 1", "web.3 1"}
        one_line_error(run_dynosim(app, "ps:scale", "worker=1", "--on", "swarm"), "worker", "Procfile")
        one_line_error(run_dynosim(app, "ps:scale", "web=101", "--on", "swarm"), "101 dynos", "100")

        loop = ClientLoop(url)
        loop.start()
        time.sleep(0.5)
        commit(app, "second", **{"version.txt": "2\n"})
        out = ok(run_dynosim(app, "deploy", "--to", "swarm", timeout=600))
        time.sleep(0.5)
        loop.done.set()
        loop.join(30)
        assert "Released v2 on the swarm" in out, out
        assert loop.failures == [], f"{len(loop.failures)} failed of {len(loop.answers) + len(loop.failures)}"
        assert {"web.1 1", "web.2 1"} & set(loop.answers) and {"web.1 2", "web.2 2"} & set(loop.answers)
        assert {get(url) for _ in range(30)} == {"web.1 2", "web.2 2", "web.3 2"}  # the scaled quantity kept

        ok(run_dynosim(app, "ps:scale", "web=1", "--on", "swarm", timeout=600))
        assert sorted(ps_rows(app)) == ["web.1"] and replicas(engine, f"{name}-web") == 1
        assert {get(url) for _ in range(10)} == {"web.1 2"}

        # a restart rolls the tasks, start-first: no request fails, even to the one dyno
        before = ps_rows(app)
        loop = ClientLoop(url)
        loop.start()
        time.sleep(0.5)
        out = ok(run_dynosim(app, "restart", "--on", "swarm", timeout=600))
        time.sleep(0.5)
        loop.done.set()
        loop.join(30)
        assert "Restarting web.1 dynos on the swarm... done" in out, out
        assert loop.failures == [], f"{len(loop.failures)} failed of {len(loop.answers) + len(loop.failures)}"
        after = ps_rows(app)
        assert list(after) == ["web.1"] and after["web.1"]["task"] != before["web.1"]["task"], (before, after)
        assert after["web.1"]["state"] == "up"
        out = ok(run_dynosim(app, "restart", "web.1", "--on", "swarm", timeout=600))
        assert "Restarting web.1 dynos on the swarm... done" in out, out
        assert ps_rows(app)["web.1"]["task"] != after["web.1"]["task"]
        assert {get(url) for _ in range(10)} == {"web.1 2"}

        commit(app, "third", **{"version.txt": "3\n", "release_exit.txt": "1\n"})
        refused = run_dynosim(app, "deploy", "--to", "swarm", timeout=600)
        one_line_error(refused, "release command of v3 failed", "previous release")
        assert {get(url) for _ in range(10)} == {"web.1 2"}  # v2 still serving, untouched
        releases = json.loads(ok(run_dynosim(app, "releases", "--json")))
        assert [(r["version"], r["status"], r["current"]) for r in releases[:2]] == [
            (3, "failed", False),
            (2, "succeeded", True),
        ]

        # an image that cannot be built changes nothing on the swarm
        commit(app, "fourth", **{"release_exit.txt": "0\n"})
        monkeypatch.setenv("DYNOSIM_IMAGE_BASE", "dynosim-test/no-such-base:1")
        unbuilt = run_dynosim(app, "deploy", "--to", "swarm", timeout=600)
        one_line_error(unbuilt, "dynosim-test/no-such-base:1", "DYNOSIM_IMAGE_BASE")
        monkeypatch.setenv("DYNOSIM_IMAGE_BASE", BASE)
        assert {get(url) for _ in range(10)} == {"web.1 2"}

        # a formation the swarm cannot place (30 GB dynos) is refused, the previous one put back
        ok(run_dynosim(app, "ps:resize", "web=performance-l-ram"))
        unplaced = run_dynosim(app, "deploy", "--to", "swarm", timeout=600)
        one_line_error(unplaced, "cannot place", "previous release keeps serving")
        assert {get(url) for _ in range(10)} == {"web.1 2"}

        # a quantity it cannot place: dynos of a size the node holds once, scaled to two, are put back
        memory = int(engine.info()["MemTotal"])
        once = next((s.name for s in SIZES.values() if s.memory_mb * 2**20 <= memory < 2 * s.memory_mb * 2**20), None)
        if once is not None:
            ok(run_dynosim(app, "ps:resize", f"web={once}"))
            ok(run_dynosim(app, "deploy", "--to", "swarm", timeout=600))
            refused = run_dynosim(app, "ps:scale", "web=2", "--on", "swarm", timeout=600)
            one_line_error(refused, "cannot place web=2", "put back to web=1")
            assert sorted(ps_rows(app)) == ["web.1"] and replicas(engine, f"{name}-web") == 1
            assert json.loads((app / ".dynosim" / "formation.json").read_text())["quantities"] == {"web": 1}
            assert {get(url) for _ in range(10)} == {"web.1 3"}
        for verb, needle in (
            (["restart", "worker"], "no process type 'worker'"),
            (["logs", "--dyno", "worker.1"], "no process type 'worker'"),
            (["logs", "-s", "heroku"], "-s heroku"),
        ):
            one_line_error(run_dynosim(app, *verb, "--on", "swarm"), needle)
    finally:
        destroy(app, name, engine)
    assert labelled(engine, name) == dict.fromkeys(labelled(engine, name), 0)
    one_line_error(
        run_dynosim(app, "ps", "--on", "swarm"), f"{name} is not deployed on this swarm", "deploy --to swarm"
    )


def test_sample_app_with_its_postgres(tmp_path: Path, engine: docker.DockerClient, swarm_env: int) -> None:
    """fixtures/sample: its release phase migrates the Postgres add-on's service, its page counts visits there."""
    import shutil

    app = tmp_path / "sample"
    shutil.copytree(FIXTURES / "sample", app, ignore=shutil.ignore_patterns(".dynosim"))
    subprocess.run(["git", "init", "-q"], cwd=app, check=True)
    commit(app, "sample")
    name = "dynosim-sample"
    url = f"http://127.0.0.1:{swarm_env}/"
    try:
        out = ok(run_dynosim(app, "deploy", "--to", "swarm", "--init", timeout=900))
        assert "database migrated" in out, out
        first, second = get(url), get(url)
        assert "Hello from web.1" in first
        count = int(first.split("id=visits>")[1].split("<")[0])
        assert f"id=visits>{count + 1}<" in second
        assert labelled(engine, name)["volumes"] == 1  # the add-on's data
    finally:
        destroy(app, name, engine)
    assert labelled(engine, name) == dict.fromkeys(labelled(engine, name), 0)
