"""Heroku CI on this machine: `dynosim ci` is a test run.

The slug is built as for a deploy; app.json's `environments.test` (or `--environment review`) is
applied over its base keys; its add-ons are fresh ones in a folder of the run's own
(`.dynosim/ci/<run id>/`), so no test run sees the app's data or leaves any behind: an `in-dyno`
plan is each test dyno's own, as on Heroku, other plans the run's, shared by its dynos; `scripts.test-setup` then `scripts.test` run in `test` dynos with Heroku CI's
variables, their output streamed here; the exit status is the test command's. When the run ends,
its add-ons are stopped and their folder removed.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .addons import Addons, manage, manifest_requests
from .addons.catalogue import offering_for, resolve
from .app import load_app
from .buildpack import build_slug, default_cache_dir
from .errors import AddonError, DynosimError, ManifestError
from .formation import DEFAULT_SIZE, dyno_size
from .logs import LogLine, LogStream
from .manifest import AddonSpec, Environment, load_environment
from .releases import Release
from .runtime.dyno import Dyno, DynoSpec, Timeouts
from .runtime.ports import free_port
from .runtime.sandbox import Sandbox, choose_sandbox, remove_if_empty

IN_DYNO = ":in-dyno"  # heroku-postgresql:in-dyno, heroku-redis:in-dyno


@dataclass(frozen=True)
class CiOptions:
    environment: str = "test"
    parallel: int | None = None  # test dynos; None: environments.test.formation's, else 1
    sandbox: str = "auto"
    addons_backend: str = "native"  # throwaway services: nothing to keep, nothing to reap
    cache_dir: Path | None = None


def run_ci(app_dir: Path, options: CiOptions = CiOptions(), out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """One test run; its exit status is the test command's (the first failing dyno's)."""
    app = load_app(app_dir)
    environment = load_environment(app.path, options.environment)
    where = f"app.json: environments.{options.environment}"
    test = environment.scripts.get("test")
    if test is None:
        raise ManifestError(
            f"{where} has no scripts.test, and Heroku's Python buildpack has no default test command; "
            f'add one like "environments": {{"{options.environment}": {{"scripts": {{"test": "pytest"}}}}}}'
        )
    _check_addons(environment, where)
    nodes = _node_total(environment, options)
    size = dyno_size(_size(environment), f"{where}.formation.test.size")

    def say(line: str) -> None:
        err.write(line + "\n")
        err.flush()

    # a stop while the slug builds or the add-ons start still removes what the run made (below)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run_id = str(uuid.uuid4())
    run_dir = app.state_dir / "ci" / run_id
    runtime_dir = app.runtime_dir.with_name(f"{app.runtime_dir.name}.ci-{run_id[:8]}")
    slug = build_slug(
        app.path, cache_dir=options.cache_dir or default_cache_dir(), config_vars=environment.env, say=say
    )
    # an in-dyno datastore is each test dyno's own, as on Heroku; other add-ons are the run's, shared
    in_dyno = [spec for spec in environment.addons if spec.plan.endswith(IN_DYNO)]
    shared = [spec for spec in environment.addons if not spec.plan.endswith(IN_DYNO)]
    names = [_dyno_name(index, nodes) for index in range(nodes)]

    def addons_in(folder: str, specs: Sequence[AddonSpec]) -> Addons:
        return Addons(run_dir / folder, manifest_requests(specs), backend=options.addons_backend, say=say)

    started = [addons_in("shared", shared), *(addons_in(name, in_dyno) for name in names)]
    try:
        shared_vars = {**environment.env, **_ci_vars(app.path, run_id, nodes)}
        for attachment in started[0].start():
            shared_vars.update(attachment.config_vars)
        releases = []
        for index, addons in enumerate(started[1:]):
            node_vars = {**shared_vars, "CI_NODE_INDEX": str(index)}
            for attachment in addons.start():
                node_vars.update(attachment.config_vars)
            releases.append(Release(0, slug, node_vars, slug.description, 0.0))
        setup = environment.scripts.get("test-setup")
        command = f"{setup} && {test}" if setup else test
        sandbox = choose_sandbox(options.sandbox, runtime_dir, protect=[app.path])
        say(f"Test run {run_id}: `{command}` on {nodes} test dyno{'s' if nodes > 1 else ''} ({size.name})")
        specs = [DynoSpec(name, "test", command, free_port(), size) for name in names]
        return asyncio.run(_run_nodes(specs, releases, sandbox, out, nodes > 1))
    finally:
        try:
            for addons in reversed(started):
                addons.stop()
                _delete(addons, say)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            remove_if_empty(run_dir.parent)
            remove_if_empty(runtime_dir)


def _delete(addons: Addons, say: Callable[[str], None]) -> None:
    """The run's add-ons deleted as `addons:destroy` deletes one: a docker add-on's container and
    volume too, which removing the run's folder would leave."""
    requests = [entry.request for entry in addons.resolved]
    for info in manage.inventory(addons.state_dir, requests):
        if info.backend:
            manage.destroy(addons.state_dir, requests, info, lambda line: None)


def _check_addons(environment: Environment, where: str) -> None:
    """An unknown add-on is app.json's mistake, found before anything starts."""
    for index, spec in enumerate(environment.addons):
        try:
            offering_for(spec.plan)
        except AddonError as error:
            raise ManifestError(f"{where}.addons[{index}]: {error}") from None
    try:
        resolve(manifest_requests(environment.addons))  # two attached under one name
    except AddonError as error:
        raise ManifestError(f"{where}.addons: {error}") from None


def _node_total(environment: Environment, options: CiOptions) -> int:
    if options.parallel is not None:
        if options.parallel < 1:
            raise DynosimError(f"--parallel {options.parallel}: give a number of test dynos, 1 or more")
        return options.parallel
    formation = environment.formation.get("test")
    return max(formation.quantity, 1) if formation is not None else 1


def _size(environment: Environment) -> str:
    formation = environment.formation.get("test")
    return formation.size if formation is not None and formation.size else DEFAULT_SIZE


def _dyno_name(index: int, nodes: int) -> str:
    return "test" if nodes == 1 else f"test.{index + 1}"


def _ci_vars(app_dir: Path, run_id: str, nodes: int) -> dict[str, str]:
    """Heroku CI's variables; CI_NODE_INDEX is each dyno's own."""
    return {
        "CI": "true",
        "HEROKU_TEST_RUN_ID": run_id,
        "HEROKU_TEST_RUN_BRANCH": _git(app_dir, "rev-parse", "--abbrev-ref", "HEAD"),
        "HEROKU_TEST_RUN_COMMIT_VERSION": _git(app_dir, "rev-parse", "HEAD"),
        "CI_NODE_TOTAL": str(nodes),
    }


def _git(app_dir: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=app_dir, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


async def _run_nodes(
    specs: Sequence[DynoSpec], releases: Sequence[Release], sandbox: Sandbox, out: TextIO, prefix: bool
) -> int:
    logs = LogStream()
    logs.subscribe(_printer(out, prefix))
    dynos = []
    for spec, release in zip(specs, releases, strict=True):
        dyno = Dyno(spec, release, sandbox, logs, Timeouts(), f"ci/{spec.name}")
        dyno.end_reason = "the end of the test run"
        dynos.append(dyno)
    interrupted: list[int] = []
    stopping: list[asyncio.Task[None]] = []

    def interrupt(signum: int) -> None:  # the dynos are stopped, then the run's add-ons and folder go
        interrupted.append(signum)
        for dyno in dynos:
            if dyno.process is not None:
                stopping.append(asyncio.ensure_future(dyno.stop("the interrupted test run")))

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt, signum)
    try:
        for dyno in dynos:
            await dyno.boot("down")
        statuses = [await dyno.wait() for dyno in dynos]
    finally:
        for dyno in dynos:
            if dyno.process is not None and dyno.state != "complete":
                await dyno.stop("the end of the test run")
        await asyncio.gather(*stopping)
    for dyno in dynos:
        dyno.set_state("complete")
    if interrupted:
        return 128 + interrupted[0]
    return next((status for status in statuses if status != 0), 0)


def _printer(out: TextIO, prefix: bool) -> Callable[[Sequence[LogLine]], None]:
    """The test dynos' own output as it comes; each line named by its dyno when there are several."""

    def show(lines: Sequence[LogLine]) -> None:
        for line in lines:
            if line.source == "app":
                out.write(f"{line.dyno}: {line.text}\n" if prefix else f"{line.text}\n")
        out.flush()

    return show
