"""`dynosim image`: a real image on the real engine, run as Heroku would run its web dyno.

The base is the local dynosim-test/python:3.11 (.ci/docker-images.sh builds it; no registry can be
reached here), given by DYNOSIM_IMAGE_BASE as a user would point dynosim at a mirror. Every image a
test tags for its app is removed after it; the dependencies image, the cache of every app with the
same packages, stays.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CACHE_DIR, free_port, ok, one_line_error, run_dynosim

docker = pytest.importorskip("docker")

BASE = "dynosim-test/python:3.11"
APP_NAME = "Image_Test"  # a tag holds neither the capital nor the underscore
REPOSITORY = "dynosim/image-test"
WSGI_APP = """\
import os


def app(environ, start_response):
    body = f"{os.environ['DYNO']} {os.environ['HOME']} {os.environ['GREETING']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def image_app(folder: Path) -> Path:
    """A WSGI app on gunicorn (a console script in the slug's virtualenv) with a .profile.d script, committed."""
    folder.mkdir()
    files = {
        "Procfile": "web: gunicorn --bind 0.0.0.0:$PORT app:app\n",
        "requirements.txt": "gunicorn\n",
        "app.py": WSGI_APP,
        "app.json": json.dumps({"name": APP_NAME}),
        ".profile.d/greeting.sh": "export GREETING=hello-from-profile-d\n",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(text)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    subprocess.run(["git", "add", "-A"], cwd=folder, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=folder, check=True)
    return folder


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as error:  # docker-py raises its own errors, requests' and OSError
        pytest.skip(f"no Docker engine answers ({error})")
    if not client.images.list(name=BASE):
        pytest.skip(f"{BASE} is missing; run .ci/docker-images.sh")
    monkeypatch.setenv("DYNOSIM_IMAGE_BASE", BASE)
    yield client
    for image in client.images.list(filters={"label": f"dynosim.app={APP_NAME}"}):
        client.images.remove(image.id, force=True)
    client.close()


def built(app: Path, *args: str) -> dict[str, object]:
    result = run_dynosim(app, "image", "--json", *args, timeout=600)
    return dict(json.loads(ok(result)))


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_image_runs_as_a_web_dyno(tmp_path: Path, engine: docker.DockerClient) -> None:
    app = image_app(tmp_path / "app")
    made = built(app)
    assert made["tag"] == f"{REPOSITORY}:latest" and made["built"] is True
    image = engine.images.get(str(made["id"]))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=app, capture_output=True, text=True, check=True)
    assert image.labels["dynosim.app"] == APP_NAME
    assert image.labels["dynosim.slug_commit"] == head.stdout.strip()
    assert image.labels["dynosim.release"] == ""  # no release yet: the :latest image of HEAD

    port = free_port()
    container = engine.containers.run(
        image.id, detach=True, environment={"PORT": "8123"}, ports={"8123/tcp": ("127.0.0.1", port)}
    )
    try:
        status, body = get(f"http://127.0.0.1:{port}/")
    finally:
        container.remove(force=True)
    # web.1 without an orchestrator's DYNO; HOME is /app; .profile.d ran before the command
    assert (status, body) == (200, "web.1 /app hello-from-profile-d")


def test_unchanged_release_builds_nothing(tmp_path: Path, engine: docker.DockerClient) -> None:
    from dynosim.app import load_app
    from dynosim.buildpack import build_slug
    from dynosim.releases import ReleaseHistory

    app = image_app(tmp_path / "app")
    loaded = load_app(app)
    slug = build_slug(app, cache_dir=CACHE_DIR, config_vars=loaded.config_vars, say=lambda _: None)
    release, _ = ReleaseHistory(loaded.state_dir).create(slug, {}, "test", "Deploy", release_phase=False)

    first = built(app)
    assert first["tag"] == f"{REPOSITORY}:v{release.version}"
    began = time.monotonic()
    second = built(app)
    elapsed = time.monotonic() - began
    assert (second["id"], second["built"]) == (first["id"], False)
    assert elapsed < 5, f"an unchanged release took {elapsed:.1f}s"  # a process start and two engine calls
    assert engine.images.get(str(first["id"])).labels["dynosim.release"] == f"v{release.version}"
    # one DYNO per replica from what an orchestrator sets: the type and its replica number
    out = engine.containers.run(
        str(first["id"]),
        ["bash", "-c", "echo $DYNO"],
        environment={"DYNO_TYPE": "web", "DYNO_REPLICA": "3"},
        remove=True,
    )
    assert out.decode().strip() == "web.3"


def test_base_without_the_image_is_one_line(tmp_path: Path, engine: docker.DockerClient) -> None:
    app = image_app(tmp_path / "app")
    result = run_dynosim(app, "image", "--base", "dynosim-test/no-such-base:1", timeout=300)
    one_line_error(result, "dynosim-test/no-such-base:1", "--base")


def test_base_without_python_is_one_line(tmp_path: Path, engine: docker.DockerClient) -> None:
    app = image_app(tmp_path / "app")
    result = run_dynosim(app, "image", "--base", "dynosim-test/debian:bookworm", timeout=300)
    one_line_error(result, "dynosim-test/debian:bookworm", "python3")


def test_no_engine_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = image_app(tmp_path / "app")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    one_line_error(run_dynosim(app, "image"), "no Docker engine answers", "DOCKER_HOST")


@pytest.mark.parametrize(
    ("tags", "slug_python", "copied"),
    [
        (["py3-none-any"], "3.11.7", True),
        (["cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"], "3.11.7", True),
        (["cp311-cp311-manylinux_2_39_x86_64"], "3.11.7", False),  # newer than the base's glibc (bookworm: 2.36)
        (["cp311-cp311-linux_x86_64"], "3.11.7", False),  # built here from source: this machine's libraries
        (["cp311-cp311-musllinux_1_2_x86_64"], "3.11.7", False),
        (["py3-none-any"], "3.12.1", False),  # another minor version: pip installs for the base's
        ([], "3.12.1", True),  # no packages: nothing to copy, whatever the versions
    ],
)
def test_when_the_slugs_packages_are_copied(tmp_path: Path, tags: list[str], slug_python: str, copied: bool) -> None:
    from dynosim.image import _copy_refusal

    if tags:
        info = tmp_path / "example-1.0.dist-info"
        info.mkdir()
        (info / "WHEEL").write_text("Wheel-Version: 1.0\n" + "".join(f"Tag: {tag}\n" for tag in tags))
    reason = _copy_refusal(tmp_path, slug_python, "3.11.2")
    assert (reason is None) == copied, reason
