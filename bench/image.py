"""`dynosim image` of fixtures/sample against `docker build` of an equivalent Dockerfile, in the same run.

Two cases, each timed on both sides, rounds alternating which side goes first:

- warm: nothing changed. dynosim: `build_image` of the app's current release (an unchanged release
  builds nothing: the image labelled with its slug is found). docker: `docker build` of a context whose
  every step is in its cache.
- changed: one file of the app changed and committed. dynosim: what a deploy of the commit does to get
  its image: the slug built (`build_slug`), the release made (`ReleaseHistory.create`) and its image
  built (`build_image`: on the cached dependencies image, one layer of the slug's files). docker: the
  same file changed in its context, `docker build` (its pip layer cached, `COPY app/` and what follows
  rebuilt).

The Dockerfile is what a user would write for the same image: the same base (DYNOSIM_IMAGE_BASE, else
the local dynosim-test/python:3.11), the requirements' wheels installed by pip into a virtualenv, then
the app's files. A build here cannot reach PyPI (the registry's certificates are this machine's), so
its context holds the wheels, downloaded once beforehand by this machine's pip (not timed), as
dynosim's own pip-in-the-build path does. `docker build` is the docker CLI as installed (the classic
builder here; no buildx), the same builder the SDK drives. dynosim's side runs in this process with one
engine client, as a long-lived caller (a test suite, CI) uses the API; the CLI's warm time (a Python
process start, then the same calls) is printed beside it, without a goal. A cold build of each (no
image, no layer cache) is printed once, for the record.

Goals (issue 23): warm ≤ 0.1x, changed ≤ 1x. Every image made here is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE_DIR, REPO, WORK_DIR, median, spread

GOALS = {"warm": 0.1, "changed": 1.0}
os.environ.setdefault("DYNOSIM_IMAGE_BASE", "dynosim-test/python:3.11")
os.environ["DYNOSIM_CACHE_DIR"] = str(CACHE_DIR)
ROOT = WORK_DIR / "image"
APP_NAME = "bench-image"
BASELINE_TAG = "dynosim-bench/image-baseline:latest"
RUN_ID = f"{os.getpid()}-{time.time_ns()}"  # in the Dockerfile's first step: no layer cache of an earlier run
DOCKERFILE = """\
FROM {base}
LABEL dynosim.bench={run}
COPY wheels /tmp/wheels
COPY app/requirements.txt /app/requirements.txt
RUN python3 -m venv /app/.heroku/python \\
 && /app/.heroku/python/bin/pip install -q --no-index --find-links /tmp/wheels -r /app/requirements.txt
COPY app/ /app/
WORKDIR /app
ENV HOME=/app PATH=/app/.heroku/python/bin:/usr/local/bin:/usr/bin:/bin PYTHONUNBUFFERED=1
CMD ["gunicorn", "app:app"]
"""


def git(app: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args], cwd=app, check=True)


def prepare() -> tuple[Path, Path]:
    """The sample app as a repository, and the baseline's context: the Dockerfile, the wheels, the app's files."""
    shutil.rmtree(ROOT, ignore_errors=True)
    app = ROOT / "app"
    shutil.copytree(REPO / "fixtures" / "sample", app, ignore=shutil.ignore_patterns(".dynosim"))
    manifest = json.loads((app / "app.json").read_text())
    (app / "app.json").write_text(json.dumps({**manifest, "name": APP_NAME}, indent=2))
    git(app, "init", "-q")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "sample")
    context = ROOT / "baseline"
    shutil.copytree(app, context / "app", ignore=shutil.ignore_patterns(".git", ".dynosim"))
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=os.environ["DYNOSIM_IMAGE_BASE"], run=RUN_ID))
    wheels = ["--only-binary=:all:", "-d", str(context / "wheels"), "-r", str(app / "requirements.txt")]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", *wheels], check=True, capture_output=True)
    return app, context


def change(app: Path, context: Path, round_: int) -> None:
    """The same one-file change on both sides: a line appended to app.py (committed for dynosim)."""
    line = f"# bench change {round_} {time.time()}\n"
    for folder in (app, context / "app"):
        with open(folder / "app.py", "a") as file:
            file.write(line)
    git(app, "commit", "-qam", f"change {round_}")


def docker_build(context: Path) -> float:
    began = time.perf_counter()
    subprocess.run(["docker", "build", "-q", "-t", BASELINE_TAG, str(context)], check=True, capture_output=True)
    return time.perf_counter() - began


def dynosim_warm(app: Path, client: Any) -> float:
    from dynosim.image import build_image

    began = time.perf_counter()
    image = build_image(app, client=client, say=quiet)
    elapsed = time.perf_counter() - began
    assert not image.built, "the unchanged release was rebuilt"
    return elapsed


def dynosim_changed(app: Path, client: Any) -> float:
    from dynosim.app import load_app
    from dynosim.buildpack import build_slug
    from dynosim.image import build_image
    from dynosim.releases import ReleaseHistory

    began = time.perf_counter()
    loaded = load_app(app)
    slug = build_slug(app, cache_dir=CACHE_DIR, config_vars=loaded.config_vars, say=quiet)
    ReleaseHistory(loaded.state_dir).create(slug, loaded.config_vars, "bench", slug.description, release_phase=False)
    image = build_image(app, client=client, say=quiet)
    elapsed = time.perf_counter() - began
    assert image.built, "the changed release was not built"
    return elapsed


def cli_warm(app: Path) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dynosim", "image", "-C", str(app)], check=True, capture_output=True)
    return time.perf_counter() - began


def quiet(_: str) -> None:
    pass


def remove_images(client: Any) -> None:
    import docker.errors

    for image in client.api.images(filters={"label": f"dynosim.app={APP_NAME}"}):
        client.api.remove_image(image["Id"], force=True)
    # the baseline's images and layer cache: every image of its builds, tops of earlier rounds included
    for image in client.api.images(all=True, filters={"label": f"dynosim.bench={RUN_ID}"}):
        with suppress(docker.errors.APIError):  # gone already, with a child removed before it
            client.api.remove_image(image["Id"], force=True)


def remove_dependencies_images(client: Any) -> bool:
    """The dependencies images gone, so that the first dynosim build is cold; False when one cannot go (another
    app's image is built on it)."""
    import docker.errors

    for image in client.api.images(filters={"label": "dynosim.dependencies"}):
        if "dynosim.slug" not in (image.get("Labels") or {}):
            try:
                client.api.remove_image(image["Id"], force=True)
            except docker.errors.APIError:
                return False
    return True


def measure(rounds: int) -> list[dict[str, object]]:
    from dynosim.image import connect

    client = connect()
    app, context = prepare()
    remove_images(client)
    cold: dict[str, float] = {}
    try:
        cold["docker"] = docker_build(context)
        if remove_dependencies_images(client):  # a cold dynosim image builds its dependencies image too
            cold["dynosim"] = dynosim_changed(app, client)
        else:
            dynosim_changed(app, client)
        times: dict[str, dict[str, list[float]]] = {case: {"dynosim": [], "docker": []} for case in GOALS}
        cli: list[float] = []
        for round_ in range(rounds):
            sides: list[tuple[str, Callable[[], float], Callable[[], float]]] = [
                ("dynosim", lambda: dynosim_warm(app, client), lambda: dynosim_changed(app, client)),
                ("docker", lambda: docker_build(context), lambda: docker_build(context)),
            ]
            if round_ % 2:
                sides.reverse()
            for who, warm, _ in sides:
                times["warm"][who].append(warm())
            change(app, context, round_)
            for who, _, changed in sides:
                times["changed"][who].append(changed())
            cli.append(cli_warm(app))
    finally:
        remove_images(client)
        shutil.rmtree(ROOT, ignore_errors=True)
    rows = []
    for case, goal in GOALS.items():
        ms = {who: [t * 1000 for t in values] for who, values in times[case].items()}
        ours, theirs = median(ms["dynosim"]), median(ms["docker"])
        extra = f"; `dynosim image` CLI {median([t * 1000 for t in cli]):.0f} ms" if case == "warm" else ""
        rows.append(
            {
                "name": f"dynosim image of the sample app, {case}",
                "dynosim": f"{ours:.0f} ms (range {spread(ms['dynosim'])}){extra}",
                "baseline": f"docker build {theirs:.0f} ms (range {spread(ms['docker'])})",
                "ratio": ours / theirs,
                "goal": f"≤ {goal}x",
                "met": ours / theirs <= goal,
                "raw": {**ms, **({"cli": [t * 1000 for t in cli]} if case == "warm" else {})},
                "cold": {who: round(seconds, 2) for who, seconds in cold.items()},
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    rows = measure(parser.parse_args().rounds)
    cold = rows[0]["cold"]
    assert isinstance(cold, dict)
    ours = (
        f"{cold['dynosim']:.1f} s"
        if "dynosim" in cold
        else "not measured (another app's image uses its dependencies image)"
    )
    print(f"cold (no image, no layer cache): dynosim {ours}, docker build {cold['docker']:.1f} s")
    for r in rows:
        print(r["name"])
        print(f"  dynosim {r['dynosim']}")
        print(f"  {r['baseline']}")
        print(f"  ratio {r['ratio']:.2f}x; goal {r['goal']}: {'met' if r['met'] else 'NOT met'}")
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
