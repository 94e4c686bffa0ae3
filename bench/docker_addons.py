"""Docker add-ons: `Addons(...).start()` on the docker backend until a real client gets in, against
testcontainers starting the same image alone.

heroku-postgresql and heroku-redis, on DYNOSIM_POSTGRES_IMAGE and DYNOSIM_REDIS_IMAGE
(dynosim-test/postgres:15 and dynosim-test/redis:7 unless set; .ci/docker-images.sh builds them).
Each case is timed from making the object (`Addons(state, [AddonRequest(plan)], backend="docker")`,
testcontainers' `PostgresContainer`/`RedisContainer`: both ask the engine its API version there) to
a client that connects: `psycopg.connect(url)` and a redis-py PING (`ssl_cert_reqs=None` on dynosim's
rediss://), polled every millisecond once start() returns. Cases:

- dynosim warm: the state folder of an earlier run, so its container exists, stopped, and its volume
  holds the data: what a second `dynosim run` does (start the container, no initdb, no provisioning);
- dynosim cold: a new state folder, so a new volume and container (created through testcontainers),
  initdb in it, then the app's role and database;
- testcontainers (the baseline): `PostgresContainer(image)` / `RedisContainer(image, password=…)` as
  a user writes them, their port published on 127.0.0.1 at a free port as dynosim publishes its own,
  Ryuk off (its image cannot be pulled here; dynosim has its own watcher), Postgres' database
  `postgres`, as dynosim's container is made (another makes the image's first boot start and stop a
  temporary server to create it, which dynosim's does not). Their own readiness waits
  are replaced by the client poll above (PostgresContainer's runs psql in the container once a second,
  RedisContainer's asks the engine for the port at every poll): the same wait as dynosim's side. The
  image runs as it is: no TLS, no role or database beyond the image's own. So dynosim's figures hold
  what its TLS costs the client too (redis-py builds an SSL context for each rediss:// client, ≈ 25 ms
  here; libpq's handshake), as an app on Heroku pays it.

testcontainers has no second start: every start() creates a new container (and initdb in it), so
its one figure is the baseline of both. Two ratios each: cold vs testcontainers is like for like
(both create a container and initialise its data; dynosim also provisions and serves TLS), warm vs
testcontainers is what a user of each waits for at a second run. Goal (issue 21): ≤ 1.1x, applied to
the like-for-like cold ratio of each add-on (the worse one is the row's ratio). Rounds alternate
(dynosim warm, dynosim cold, testcontainers, in turn first); every container and volume made here is
removed (dynosim's by its app label, as tests/conftest.py's remove_app_containers does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import WORK_DIR, Unavailable, free_port, median, spread

GOAL = 1.1
POLL = 0.001  # as tight as a wait can usefully be: neither side loses time between polls
LIMIT = 60.0
os.environ.setdefault("DYNOSIM_POSTGRES_IMAGE", "dynosim-test/postgres:15")
os.environ.setdefault("DYNOSIM_REDIS_IMAGE", "dynosim-test/redis:7")
ROOT = WORK_DIR / "docker-addons"
BASELINE_PASSWORD = "bench-baseline"


@dataclass(frozen=True)
class Case:
    """One add-on: its plan, the config var holding its URL, its image's variable, and its client."""

    title: str
    plan: str
    var: str
    image_var: str
    ready: Callable[[str], float]


def quiet(_: str) -> None:
    pass


def _until(connect: Callable[[], object], refused: tuple[type[Exception], ...]) -> float:
    """When `connect` first succeeds, tried every POLL while it raises one of `refused` (not yet up)."""
    deadline = time.perf_counter() + LIMIT
    while True:
        try:
            connect()
            return time.perf_counter()
        except refused:
            if time.perf_counter() > deadline:
                raise
            time.sleep(POLL)


def pg_ready(url: str) -> float:
    import psycopg

    return _until(lambda: psycopg.connect(url, connect_timeout=5).close(), (psycopg.OperationalError,))


def redis_ready(url: str) -> float:
    import redis

    def ping() -> None:
        tls = {"ssl_cert_reqs": None} if url.startswith("rediss:") else {}  # dynosim's: a certificate no one trusts
        client = redis.Redis.from_url(url, socket_connect_timeout=5, **tls)
        try:
            client.ping()
        finally:
            client.close()

    return _until(ping, (redis.ConnectionError, redis.TimeoutError))


CASES = (
    Case("Postgres", "heroku-postgresql", "DATABASE_URL", "DYNOSIM_POSTGRES_IMAGE", pg_ready),
    Case("Redis", "heroku-redis", "REDIS_URL", "DYNOSIM_REDIS_IMAGE", redis_ready),
)


# --- dynosim ----------------------------------------------------------------------------------------


def timed_dynosim(state: Path, case: Case) -> float:
    """One start of the add-on on the docker backend until its client gets in; stopped before returning."""
    from dynosim.addons import AddonRequest, Addons

    began = time.perf_counter()
    addons = Addons(state, [AddonRequest(case.plan)], backend="docker", say=quiet)
    try:
        url = addons.start()[0].config_vars[case.var]
        return case.ready(url) - began
    finally:
        addons.stop()


def remove_app(client: Any, state: Path) -> None:
    """The containers and volumes of the app whose state folder this is (the backend never removes them)."""
    from dynosim.addons.backends.docker import LABEL_APP, app_id

    label = f"{LABEL_APP}={app_id(state)}"
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"label": label}):
        volume.remove(force=True)
    shutil.rmtree(state, ignore_errors=True)


def fresh_state(name: str) -> Path:
    state = ROOT / name
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    return state


# --- testcontainers ---------------------------------------------------------------------------------


def baseline_container(case: Case, port: int) -> tuple[Any, str]:
    """testcontainers' own container for the image, its port on 127.0.0.1:`port`, and its client's URL.
    Its readiness wait is the bench's client poll, after start() (see the module's docstring)."""
    from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

    try:
        from testcontainers.community.postgres import PostgresContainer
        from testcontainers.community.redis import RedisContainer
    except ImportError:  # testcontainers before the community packages
        from testcontainers.postgres import PostgresContainer
        from testcontainers.redis import RedisContainer

    image = os.environ[case.image_var]
    if case.plan == "heroku-postgresql":

        class Postgres(PostgresContainer):  # type: ignore[misc]
            def _connect(self) -> None:
                pass  # the bench's client poll waits instead

        pg = Postgres(image, dbname="postgres", driver=None)
        pg.ports["5432/tcp"] = ("127.0.0.1", port)
        return pg, f"postgresql://{pg.username}:{pg.password}@127.0.0.1:{port}/{pg.dbname}"

    class Started(WaitStrategy):  # type: ignore[misc]
        def wait_until_ready(self, container: WaitStrategyTarget) -> None:
            pass  # the bench's client poll waits instead

    rd = RedisContainer(image, password=BASELINE_PASSWORD)
    rd.ports["6379/tcp"] = ("127.0.0.1", port)
    rd.waiting_for(Started())
    return rd, f"redis://:{BASELINE_PASSWORD}@127.0.0.1:{port}"


def timed_testcontainers(case: Case) -> float:
    """testcontainers starting the image until the same client gets in; the container removed after."""
    from testcontainers.core.config import testcontainers_config

    ryuk = testcontainers_config.ryuk_disabled
    testcontainers_config.ryuk_disabled = True  # its image cannot be pulled here; stop() removes the container
    began = time.perf_counter()
    try:
        container, url = baseline_container(case, free_port())
        try:
            container.start()
            return case.ready(url) - began
        finally:
            container.stop()  # removes it, with its anonymous volumes
    finally:
        testcontainers_config.ryuk_disabled = ryuk


# --- the measurement --------------------------------------------------------------------------------


def engine() -> Any:
    """A client of the Docker engine, once it has the images; Unavailable otherwise."""
    try:
        import docker
        import testcontainers  # noqa: F401
    except ImportError as error:
        raise Unavailable(f"{error.name} is not installed (pip install -e '.[test]')") from None
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as error:
        raise Unavailable(f"no Docker engine answers ({type(error).__name__}); start Docker") from None
    missing = [os.environ[case.image_var] for case in CASES if not client.images.list(name=os.environ[case.image_var])]
    if missing:
        client.close()
        raise Unavailable(f"the images {', '.join(missing)} are missing (.ci/docker-images.sh builds them)")
    return client


def measure(rounds: int) -> dict[str, object]:
    client = engine()
    times: dict[str, list[float]] = {}
    made: list[Path] = []
    try:
        for case in CASES:
            warm = fresh_state(f"{case.title.lower()}-warm")
            made.append(warm)
            timed_dynosim(warm, case)  # untimed: makes the container and data the warm runs start
            timed_testcontainers(case)  # untimed too: the baseline's first start pays for the page cache
            runs: dict[str, Callable[[int], float]] = {
                f"{case.title} dynosim warm": lambda _, c=case, s=warm: timed_dynosim(s, c),
                f"{case.title} dynosim cold": lambda i, c=case: cold_run(client, c, i),
                f"{case.title} testcontainers": lambda _, c=case: timed_testcontainers(c),
            }
            order = list(runs)
            for i in range(rounds):
                for label in order[i % 3 :] + order[: i % 3]:
                    times.setdefault(label, []).append(runs[label](i))
    finally:
        for state in made:
            remove_app(client, state)
        client.close()
    ratios: dict[str, float] = {}
    for case in CASES:
        baseline = median(times[f"{case.title} testcontainers"])
        for kind in ("cold", "warm"):
            ratios[f"{case.title} {kind}"] = median(times[f"{case.title} dynosim {kind}"]) / baseline
    worst = max(ratios[f"{case.title} cold"] for case in CASES)

    def ms(label: str) -> str:
        return f"{median(times[label]) * 1000:.0f} ms"

    return {
        "name": "docker add-on ready (cold, vs testcontainers)",
        "dynosim": "; ".join(
            f"{c.title} cold {ms(f'{c.title} dynosim cold')}, warm {ms(f'{c.title} dynosim warm')}" for c in CASES
        ),
        "baseline": "testcontainers " + ", ".join(f"{c.title} {ms(f'{c.title} testcontainers')}" for c in CASES),
        "ratio": worst,
        "goal": f"≤ {GOAL}x (cold vs testcontainers)",
        "met": worst <= GOAL,
        "ratios": ratios,
        "raw": times,
    }


def cold_run(client: Any, case: Case, i: int) -> float:
    state = fresh_state(f"{case.title.lower()}-cold-{i}")
    try:
        return timed_dynosim(state, case)
    finally:
        with suppress(Exception):  # a failed cleanup must not hide the run's own error
            remove_app(client, state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=7, help="rounds of each case (default 7)")
    args = parser.parse_args()
    try:
        result = measure(args.rounds)
    except Unavailable as error:
        print(f"docker add-ons skipped: {error}")
        return
    raw: dict[str, list[float]] = result["raw"]  # type: ignore[assignment]
    print(f"{'case':30} {'median':>9} {'range (ms)':>16}  runs (ms)")
    for case, values in raw.items():
        values_ms = [v * 1000 for v in values]
        print(
            f"{case:30} {median(values_ms):7.0f}ms {spread(values_ms):>16}  " + " ".join(f"{v:.0f}" for v in values_ms)
        )
    ratios: dict[str, float] = result["ratios"]  # type: ignore[assignment]
    for label, ratio in ratios.items():
        print(f"ratio {label} / testcontainers: {ratio:.2f}x")
    print(f"dynosim {result['dynosim']}; {result['baseline']}")
    print(f"worst cold ratio: {result['ratio']:.2f}x (goal {result['goal']}): {'met' if result['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
