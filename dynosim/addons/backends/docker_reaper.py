"""The watcher that stops an app's add-on containers when the dynosim that started them dies.

`python -P -S docker_reaper.py --lock-fd N` (the file, not the module: nothing else of dynosim's is imported;
site only once there is something to stop), started by the docker backend with a
pipe on stdin and the app's docker.lock open as fd N (so the lock stays held while it works). It reads
lines: `watch <container name>` and `release`. At end of input it exits quietly after `release`;
without one, dynosim died (a SIGKILL, a crash), so it stops every watched container that still runs,
gracefully (`docker stop`: the image's stop signal, then SIGKILL after the timeout), never removing a
container or a volume, and writes what it did to its log (`<state_dir>/addons/docker-reaper.log`).

Like testcontainers' Ryuk, but a host process rather than a container (so no image to pull), and it
stops rather than removes: the add-on's data and container are there for the next run to start.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

STOP_TIMEOUT = 30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="docker_reaper.py")
    parser.add_argument("--lock-fd", type=int, help="the app's docker.lock, held until this exits")
    parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the end of the pipe ends this
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watched: list[str] = []
    released = False
    for raw in sys.stdin.buffer:
        line = raw.decode("utf-8", "replace").strip()
        if line.startswith("watch "):
            name = line.split(" ", 1)[1]
            if name not in watched:
                watched.append(name)
        elif line == "release":
            released = True
    if released or not watched:
        return 0
    return reap(watched)


def reap(names: list[str]) -> int:
    import site

    site.main()  # started with -S: the site-packages docker-py is in
    import docker
    import docker.errors

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"{stamp} dynosim exited without stopping its add-ons; stopping {', '.join(names)}", flush=True)
    try:
        client = docker.from_env(timeout=STOP_TIMEOUT + 30)
    except docker.errors.DockerException as error:
        print(f"{stamp} no Docker engine answers ({error}); the next run will find the containers", flush=True)
        return 1
    failed = 0
    for name in names:
        try:
            container = client.containers.get(name)
            if container.status == "running":
                container.stop(timeout=STOP_TIMEOUT)
                print(f"{stamp} stopped {name}", flush=True)
        except docker.errors.NotFound:
            continue
        except docker.errors.DockerException as error:
            failed += 1
            print(f"{stamp} could not stop {name}: {error}", flush=True)
    client.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
