"""`dynosim deploy --to swarm` until the first HTTP 200 through the published port, against the same image
started by hand as a swarm service through the SDK, in the same run.

The app is a one-file stdlib web server (`web: python web.py`, web=1, no release phase, no add-on), so
the figure is what dynosim itself adds to a deploy. Each round, each side starts from nothing of the app
on the swarm, with its image already built (a first, untimed deploy builds it; its time is printed for
the record), and is timed from its start until a GET through the published port answers 200 (polled
every 50 ms from this process):

- dynosim: `dynosim deploy --to swarm` as a user runs it (a Python process start, the slug found in its
  cache, the release, the app's overlay network, web's health-checked service, and here, where the kernel
  has no IPVS for the routing mesh, the router service publishing the port). Its whole command's time
  is printed beside it.
- the baseline: `docker service create` of the same image by hand through the SDK, in this process: one
  replicated service with the same command and environment (PORT, DYNO), the port published as dynosim
  publishes it here (through the routing mesh where the kernel has IPVS, else in host mode), no network
  of its own, no health check.

Each side's services are removed between rounds (dynosim's by `destroy_swarm`), untimed; rounds alternate
which side goes first. Issue 23 asks for the time printed, with no goal. The swarm is taken under the
tests' lock (/tmp/dynosim-test-swarm.lock: one swarm user at a time on the engine), initialised when it
is not one and left again at the end; every service and image made here is removed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE_DIR, WORK_DIR, Unavailable, free_port, median, spread

os.environ.setdefault("DYNOSIM_IMAGE_BASE", "dynosim-test/python:3.11")
os.environ["DYNOSIM_CACHE_DIR"] = str(CACHE_DIR)
ROOT = WORK_DIR / "swarm"
APP_NAME = "bench-swarm"
BASELINE = "bench-swarm-baseline"
LOCK = "/tmp/dynosim-test-swarm.lock"
POLL = 0.05
LIMIT = 300.0
WEB = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["DYNO"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def git(app: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args], cwd=app, check=True)


def prepare() -> Path:
    shutil.rmtree(ROOT, ignore_errors=True)
    app = ROOT / "app"
    app.mkdir(parents=True)
    files = {"Procfile": "web: python web.py\n", "requirements.txt": "", "web.py": WEB}
    for name, text in {**files, "app.json": json.dumps({"name": APP_NAME})}.items():
        (app / name).write_text(text)
    git(app, "init", "-q")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "bench")
    return app


def first_200(url: str, began: float) -> float:
    """Seconds from `began` until `url` answers 200."""
    deadline = began + LIMIT
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return time.perf_counter() - began
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(POLL)
    raise RuntimeError(f"{url} gave no 200 within {LIMIT:.0f}s")


def dynosim_deploy(app: Path) -> tuple[float, float]:
    """`dynosim deploy --to swarm`: seconds to the first 200, and to the command's end."""
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    began = time.perf_counter()
    deploy = subprocess.Popen(
        [sys.executable, "-m", "dynosim", "deploy", "--to", "swarm", "-C", str(app)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = first_200(f"http://127.0.0.1:{port}/", began)
        out, _ = deploy.communicate(timeout=LIMIT)
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()
    if deploy.returncode != 0:
        raise RuntimeError(f"dynosim deploy --to swarm failed: {out.strip().splitlines()[-1:]}")
    return first, time.perf_counter() - began


def baseline_deploy(client: Any, image: str, mesh: bool) -> float:
    """`docker service create` of the same image by hand: seconds to the first 200."""
    from docker.types import ContainerSpec, EndpointSpec, RestartPolicy, ServiceMode, TaskTemplate

    port = free_port()
    began = time.perf_counter()
    spec = ContainerSpec(image, args=["bash", "-c", "python web.py"], env={"PORT": "5000", "DYNO": "web.1"})
    client.api.create_service(
        TaskTemplate(spec, restart_policy=RestartPolicy("any")),
        name=BASELINE,
        mode=ServiceMode("replicated", replicas=1),
        endpoint_spec=EndpointSpec(ports={port: 5000} if mesh else {port: (5000, "tcp", "host")}),
    )
    return first_200(f"http://127.0.0.1:{port}/", began)


def remove_baseline(client: Any) -> None:
    for service in client.api.services(filters={"name": BASELINE}):
        client.api.remove_service(service["ID"])
    deadline = time.monotonic() + 60
    while client.api.containers(all=True, filters={"label": f"com.docker.swarm.service.name={BASELINE}"}):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{BASELINE}'s task did not stop within 60 s")
        time.sleep(POLL)


def quiet(_: str) -> None:
    pass


@contextmanager
def swarm() -> Iterator[Any]:
    """The engine as a swarm manager, one swarm user at a time; left as it was found."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as error:
        raise Unavailable(f"no Docker engine answers ({error})") from None
    if not client.images.list(name=os.environ["DYNOSIM_IMAGE_BASE"]):
        raise Unavailable(f"{os.environ['DYNOSIM_IMAGE_BASE']} missing; run .ci/docker-images.sh")
    with open(os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        was = (client.info().get("Swarm") or {}).get("LocalNodeState")
        if was != "active":
            try:
                client.swarm.init()
            except docker.errors.APIError:
                client.swarm.init(advertise_addr="127.0.0.1")  # several interfaces: loopback serves one node
        try:
            yield client
        finally:
            if was != "active":
                client.swarm.leave(force=True)
            client.close()


def measure(rounds: int) -> dict[str, object]:
    from dynosim.export.model import image_tag
    from dynosim.releases import ReleaseHistory
    from dynosim.swarm import destroy_swarm

    with swarm() as client:
        app = prepare()
        mesh = Path("/proc/sys/net/ipv4/vs").is_dir()  # where the routing mesh can route (swarm.py's check)
        times: dict[str, list[float]] = {"dynosim": [], "baseline": [], "command": []}
        try:
            cold, _ = dynosim_deploy(app)  # builds the slug and the image: untimed in the medians
            version = ReleaseHistory(app / ".dynosim").current_version()
            image = image_tag(APP_NAME, version)
            destroy_swarm(APP_NAME, say=quiet)
            for round_ in range(rounds):
                sides: list[Callable[[], None]] = [
                    lambda: record_dynosim(app, times),
                    lambda: times["baseline"].append(baseline_deploy(client, image, mesh)),
                ]
                for side in sides if round_ % 2 == 0 else reversed(sides):
                    side()
                    destroy_swarm(APP_NAME, say=quiet)
                    remove_baseline(client)
        finally:
            destroy_swarm(APP_NAME, say=quiet)
            remove_baseline(client)
            for found in client.api.images(filters={"label": f"dynosim.app={APP_NAME}"}):
                client.api.remove_image(found["Id"], force=True)
            shutil.rmtree(ROOT, ignore_errors=True)
    ms = {who: [t * 1000 for t in values] for who, values in times.items()}
    ours, theirs = median(ms["dynosim"]), median(ms["baseline"])
    published = "the routing mesh" if mesh else "the router service (no IPVS here)"
    return {
        "name": "deploy --to swarm to the first 200",
        "dynosim": (
            f"{ours / 1000:.2f} s (range {spread([t / 1000 for t in ms['dynosim']])}) through {published}; "
            f"the command {median(ms['command']) / 1000:.2f} s; the first, building the image, {cold:.1f} s"
        ),
        "baseline": f"docker service create by hand {theirs / 1000:.2f} s (range {spread([t / 1000 for t in ms['baseline']])})",
        "ratio": ours / theirs,
        "goal": "printed (issue 23 sets none)",
        "met": True,
        "raw": ms,
    }


def record_dynosim(app: Path, times: dict[str, list[float]]) -> None:
    first, whole = dynosim_deploy(app)
    times["dynosim"].append(first)
    times["command"].append(whole)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    row = measure(parser.parse_args().rounds)
    print(row["name"])
    print(f"  dynosim {row['dynosim']}")
    print(f"  {row['baseline']}")
    print(f"  ratio {row['ratio']:.2f}x; goal: {row['goal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
