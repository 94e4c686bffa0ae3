"""Add-ons: time from `Addons(...).start()` until the add-on accepts a real client connection.

Postgres, native and docker, cold (first run: empty state folder, so initdb and provisioning) and
warm (the data exists), and Redis native cold and warm. Readiness is a client connection that
succeeds: `psycopg.connect(DATABASE_URL)` (the server has SSL on; the plain URL negotiates it) and a
redis-py PING on the rediss:// REDIS_URL (`ssl_cert_reqs=None`). dynosim's start() already waits until
the server accepts connections, so the first connection normally succeeds; clients are polled every
millisecond when not.

Baseline, side by side in the same run: `pg_ctl start -W` (it does not wait), then a client polled
the same way until it connects, on the same data folder, with the same port and the same `-c` options
dynosim gives postgres (SSL among them: the data's pg_hba.conf takes only SSL over TCP), run as uid
1000 in a user namespace as dynosim's native backend runs it as root (`unshare --user
--map-user=1000 --map-group=1000`). Warm runs alternate (dynosim, pg_ctl, dynosim…); each is stopped
(Addons.stop / pg_ctl stop -m fast) before the next. Cold runs each use a new state folder. Docker
uses DYNOSIM_POSTGRES_IMAGE (dynosim-test/postgres:15 unless set; see .ci/docker-images.sh) and is
skipped with a note when no Docker engine answers. Goal (issue 21): warm native Postgres within 1.15x
of bare `pg_ctl start -W` plus polling.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import WORK_DIR, median, spread

GOAL = 1.15
POLL = 0.001  # as tight as dynosim's own wait, so the baseline loses no time between polls
LIMIT = 30.0
os.environ.setdefault("DYNOSIM_POSTGRES_IMAGE", "dynosim-test/postgres:15")
os.environ.setdefault("DYNOSIM_REDIS_IMAGE", "dynosim-test/redis:7")
ROOT = WORK_DIR / "addons"
AS_USER = ["unshare", "--user", "--map-user=1000", "--map-group=1000", "--"] if os.geteuid() == 0 else []


def quiet(_: str) -> None:
    pass


def _until(connect) -> float:  # type: ignore[no-untyped-def]
    deadline = time.perf_counter() + LIMIT
    while True:
        try:
            connect()
            return time.perf_counter()
        except Exception:
            if time.perf_counter() > deadline:
                raise
            time.sleep(POLL)


def pg_ready(url: str) -> float:
    import psycopg

    return _until(lambda: psycopg.connect(url, connect_timeout=5).close())


def redis_ready(url: str) -> float:
    import redis

    def ping() -> None:
        client = redis.Redis.from_url(url, ssl_cert_reqs=None, socket_connect_timeout=5)
        try:
            client.ping()
        finally:
            client.close()

    return _until(ping)


def timed_addon(state: Path, plan: str, backend: str) -> tuple[float, str]:
    """One start of dynosim's add-on until a client gets in; stopped before returning."""
    from dynosim.addons import AddonRequest, Addons

    var, ready = ("DATABASE_URL", pg_ready) if plan == "heroku-postgresql" else ("REDIS_URL", redis_ready)
    addons = Addons(state, [AddonRequest(plan)], backend=backend, say=quiet)
    start = time.perf_counter()
    try:
        url = addons.start()[0].config_vars[var]
        took = ready(url) - start
    finally:
        addons.stop()
    return took, url


def pg_ctl_argv(state: Path) -> tuple[list[str], list[str], str]:
    """pg_ctl start/stop of the add-on's data with the options dynosim gives postgres, and its URL."""
    from dynosim.addons.backends.native import NativeBackend
    from dynosim.addons.plans import postgres_plan
    from dynosim.addons.services.postgres import ADMIN_CONNECTIONS
    from dynosim.addons.services.postgres_native import find_binaries

    record = json.loads((state / "addons.json").read_text())["addons"][0]
    folder = state / "addons" / record["name"]
    bins = find_binaries(NativeBackend(quiet))
    data = folder / "data"
    (folder / "run").mkdir(mode=0o700, exist_ok=True)  # dynosim makes it at each start; it may be gone
    options = " ".join([
        f"-p {record['port']}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={folder / 'run'}",
        "-c ssl=on", f"-c ssl_cert_file={folder / 'tls/server.crt'}", f"-c ssl_key_file={folder / 'tls/server.key'}",
        "-c ssl_min_protocol_version=TLSv1.2", "-c fsync=on", "-c logging_collector=off", "-c log_destination=stderr",
        *([f"-c max_connections={c}"] if (c := postgres_plan(record["plan"]).connections + ADMIN_CONNECTIONS) > 100 else []),
    ])  # fmt: skip
    start = [
        *AS_USER,
        bins["pg_ctl"],
        "start",
        "-W",
        "-s",
        "-D",
        str(data),
        "-l",
        str(folder / "pg_ctl.log"),
        "-o",
        options,
    ]
    stop = [*AS_USER, bins["pg_ctl"], "stop", "-w", "-s", "-m", "fast", "-D", str(data)]
    url = f"postgres://{record['user']}:{record['password']}@127.0.0.1:{record['port']}/{record['database']}"
    return start, stop, url


def timed_pg_ctl(start: list[str], stop: list[str], url: str) -> float:
    began = time.perf_counter()
    subprocess.run(start, check=True, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        return pg_ready(url) - began
    finally:
        subprocess.run(stop, check=True, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def docker_answers() -> str | None:
    """None when a Docker engine answers and has the image, else why docker is skipped."""
    if shutil.which("docker") is None:
        return "no docker client"
    if subprocess.run(["docker", "info"], check=False, capture_output=True, timeout=20).returncode != 0:
        return "no Docker engine answers"
    image = os.environ["DYNOSIM_POSTGRES_IMAGE"]
    if (
        subprocess.run(["docker", "image", "inspect", image], check=False, capture_output=True, timeout=20).returncode
        != 0
    ):
        return f"image {image} is missing (.ci/docker-images.sh builds it)"
    return None


def fresh_state(name: str) -> Path:
    """An empty state folder; the containers and volumes an earlier run of the docker case made for it go
    too (the backend keeps them: they are the add-on's data)."""
    state = ROOT / name
    if name.startswith("docker-") and state.exists() and docker_answers() is None:
        import docker

        from dynosim.addons.backends.docker import LABEL_APP, app_id

        client = docker.from_env(timeout=30)
        label = f"{LABEL_APP}={app_id(state)}"
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True, v=True)
        for volume in client.volumes.list(filters={"label": label}):
            volume.remove(force=True)
        client.close()
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    return state


def cold_and_warm(
    label: str, folder: str, plan: str, backend: str, cold_runs: int, times: dict[str, list[float]]
) -> Path:
    """Cold runs in new state folders, then returns the last one (its data exists) for warm runs."""
    state = ROOT
    for i in range(cold_runs):
        state = fresh_state(f"{folder}-cold-{i}")  # short, no spaces: pg_ctl -o splits on them
        times[f"{label} cold"].append(timed_addon(state, plan, backend)[0])
    return state


def measure(warm_runs: int, cold_runs: int) -> dict[str, object]:
    from collections import defaultdict

    times: dict[str, list[float]] = defaultdict(list)
    notes: list[str] = []
    # Postgres native: cold, then warm alternated with pg_ctl on that same data
    pg_state = cold_and_warm("native postgres", "pg", "heroku-postgresql", "native", cold_runs, times)
    start, stop, url = pg_ctl_argv(pg_state)
    timed_pg_ctl(start, stop, url)  # untimed warm-up of the baseline (page cache, binaries)
    for _ in range(warm_runs):
        times["native postgres warm"].append(timed_addon(pg_state, "heroku-postgresql", "native")[0])
        times["pg_ctl start (baseline)"].append(timed_pg_ctl(start, stop, url))
    # Redis native
    redis_state = cold_and_warm("native redis", "redis", "heroku-redis", "native", cold_runs, times)
    for _ in range(warm_runs):
        times["native redis warm"].append(timed_addon(redis_state, "heroku-redis", "native")[0])
    # Postgres docker
    why = docker_answers()
    if why is None:
        try:
            docker_state = cold_and_warm(
                "docker postgres", "docker-pg", "heroku-postgresql", "docker", cold_runs, times
            )
            for _ in range(warm_runs):
                times["docker postgres warm"].append(timed_addon(docker_state, "heroku-postgresql", "docker")[0])
        except Exception as error:
            notes.append(f"docker postgres failed: {type(error).__name__}: {error}")
    else:
        notes.append(f"docker skipped: {why}")
    d, b = median(times["native postgres warm"]), median(times["pg_ctl start (baseline)"])
    return {
        "name": "add-on ready (warm native Postgres)",
        "dynosim": f"{d * 1000:.0f} ms (range {spread([t * 1000 for t in times['native postgres warm']])})",
        "baseline": f"pg_ctl start {b * 1000:.0f} ms (range {spread([t * 1000 for t in times['pg_ctl start (baseline)']])})",
        "ratio": d / b,
        "goal": f"≤ {GOAL}x",
        "met": d / b <= GOAL,
        "raw": dict(times),
        "notes": notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=7, help="warm runs of each (default 7)")
    parser.add_argument("--cold", type=int, default=3, help="cold runs of each (default 3)")
    args = parser.parse_args()
    result = measure(args.runs, args.cold)
    baseline = median(result["raw"]["pg_ctl start (baseline)"])  # type: ignore[index]
    print(f"{'case':26} {'median':>9} {'range (ms)':>16} {'vs pg_ctl':>9}  runs (ms)")
    for case, values in result["raw"].items():  # type: ignore[union-attr]
        ms = [v * 1000 for v in values]
        print(
            f"{case:26} {median(ms):7.0f}ms {spread(ms):>16} {median(values) / baseline:8.2f}x  "
            + " ".join(f"{v:.0f}" for v in ms)
        )
    for note in result["notes"]:  # type: ignore[union-attr]
        print(f"note: {note}")
    print(f"dynosim {result['dynosim']}; {result['baseline']}")
    print(
        f"ratio warm native Postgres / pg_ctl: {result['ratio']:.2f}x (goal {result['goal']}): "
        f"{'met' if result['met'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
