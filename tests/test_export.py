"""`dynosim export FORMAT`: the sample app (Flask on gunicorn, a worker, a release phase, heroku-postgresql)
and dynolab to every format, each file read back as its engine reads it: YAML, Kubernetes' schemas
(kubernetes-validate, offline), the docker CLI's own stack loader, Compose's where its plugin is, INI."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_app, need_docker, ok, one_line_error, run_dynosim

from dynosim.export.model import app_model

FORMATS = ("compose", "swarm", "kubernetes", "systemd", "supervisord")


def export(app: Path, fmt: str, *args: str) -> str:
    return ok(run_dynosim(app, "export", fmt, *args))


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kubernetes_objects(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for f in sorted(folder.glob("*.yaml")) for doc in load_all(f)}


def validate_kubernetes(folder: Path) -> None:
    """Every manifest against the API's schemas, strictly (an unknown field fails), with no cluster."""
    result = subprocess.run(
        ["kubernetes-validate", "--strict", *map(str, sorted(folder.glob("*.yaml")))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)  # systemd repeats Environment=
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    app = make_app(tmp_path, "sample")
    # web=2 as `ps:scale` would leave it
    assert run_dynosim(app, "ps:scale", "web=2").returncode == 0
    return app


def database_url(app: Path) -> tuple[str, str]:
    """The add-on's name and the URL the export gives the app: its credentials, at its service's name."""
    model = app_model(app)
    [addon] = model.addons
    return addon.name, addon.config_vars["DATABASE_URL"]


# --- compose ---------------------------------------------------------------------------------------


def test_compose_of_the_sample_app(sample: Path) -> None:
    out = export(sample, "compose")
    assert "docker-compose.yml" in out
    [compose] = load_all(sample / "docker-compose.yml")
    services = compose["services"]
    addon, url = database_url(sample)
    assert url.startswith("postgres://") and f"@{addon}:5432/" in url
    assert set(services) == {"release", "web", "worker", addon}

    web, worker, release = services["web"], services["worker"], services["release"]
    assert web["image"] == worker["image"] == release["image"] == "dynosim/dynosim-sample:latest"
    assert web["command"] == ["bash", "-c", "gunicorn app:app"]
    assert web["deploy"]["replicas"] == 2 and worker["deploy"]["replicas"] == 1
    assert web["ports"] == ["5000-5001:5000"]  # one host port per web container: Compose has no router
    assert web["environment"]["PORT"] == "5000"
    # the Python buildpack's profile for the dyno size, as dynosim's own dynos get it
    assert web["environment"]["WEB_CONCURRENCY"] == "2" and web["environment"]["DYNO_RAM"] == "512"
    assert web["deploy"]["resources"] == {"limits": {"memory": "1024M"}, "reservations": {"memory": "512M"}}
    assert web["stop_grace_period"] == "30s" and web["stop_signal"] == "SIGTERM" and web["restart"] == "always"
    assert web["depends_on"]["release"] == {"condition": "service_completed_successfully"}
    assert release["command"] == ["bash", "-c", "python release.py"] and release["restart"] == "no"
    assert release["depends_on"] == {addon: {"condition": "service_healthy"}}

    database = services[addon]
    assert database["image"] == "postgres:17"
    assert database["volumes"] == [f"{addon}:/var/lib/postgresql/data"]
    assert compose["volumes"] == {addon: {}}
    assert database["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]

    env = (sample / "docker-compose.env").read_text()
    assert f"DATABASE_URL='{url}'\n" in env and "SECRET_KEY='" in env
    assert (sample / "docker-compose.env").stat().st_mode & 0o777 == 0o600
    addon_env = (sample / f"docker-compose.{addon}.env").read_text()
    assert "POSTGRES_PASSWORD='p" in addon_env and "POSTGRES_DB='" in addon_env
    assert "POSTGRES_PASSWORD" not in env  # the add-on's own secrets are its alone

    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no `docker compose` plugin on this machine: Compose's own check of the file is skipped")
    checked = subprocess.run(
        ["docker", "compose", "-f", "docker-compose.yml", "config", "--quiet"],
        cwd=sample,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_compose_with_external_addons_needs_their_vars(sample: Path) -> None:
    out = export(sample, "compose", "--external-addons")
    assert "DATABASE_URL" in out
    [compose] = load_all(sample / "docker-compose.yml")
    assert set(compose["services"]) == {"release", "web", "worker"}
    assert "volumes" not in compose
    assert compose["services"]["web"]["environment"]["DATABASE_URL"].startswith("${DATABASE_URL:?")
    assert "DATABASE_URL" not in (sample / "docker-compose.env").read_text()


def test_a_command_s_dollar_is_the_dyno_s(tmp_path: Path) -> None:
    app = make_app(tmp_path, procfile="web: python server.py --port $PORT\n")
    export(app, "compose")
    [compose] = load_all(app / "docker-compose.yml")
    assert compose["services"]["web"]["command"] == ["bash", "-c", "python server.py --port $$PORT"]


# --- swarm -----------------------------------------------------------------------------------------


def test_swarm_stack_of_the_sample_app(sample: Path) -> None:
    export(sample, "swarm")
    [stack] = load_all(sample / "stack.yml")
    services = stack["services"]
    addon, url = database_url(sample)
    web, release = services["web"], services["release"]
    assert web["deploy"]["replicas"] == 2 and services["worker"]["deploy"]["replicas"] == 1
    assert web["ports"] == [{"target": 5000, "published": 5000, "protocol": "tcp", "mode": "ingress"}]
    assert web["deploy"]["resources"]["limits"] == {"memory": "1024M"}
    assert web["deploy"]["restart_policy"]["condition"] == "any"
    assert web["deploy"]["update_config"]["order"] == "start-first"
    assert web["stop_grace_period"] == "30s"
    assert web["environment"]["DYNO_REPLICA"] == "{{.Task.Slot}}"
    assert web["command"][-1] == "gunicorn app:app"
    assert release["deploy"]["restart_policy"] == {"condition": "none"}
    assert release["deploy"]["labels"]["dynosim.release-phase"] == "true"
    assert services[addon]["volumes"] == [f"{addon}:/var/lib/postgresql/data"]

    # secrets as Docker secrets, one file each, none in the env file
    secrets = stack["secrets"]
    assert set(secrets) == {"SECRET_KEY", "DATABASE_URL", "HEROKU_POSTGRESQL_" + url_color(sample) + "_URL"}
    assert (sample / "stack.secrets" / "DATABASE_URL").read_text() == url
    assert (sample / "stack.secrets").stat().st_mode & 0o777 == 0o700
    assert {s["source"] for s in web["secrets"]} == set(secrets)
    assert "DATABASE_URL" not in (sample / "stack.env").read_text()

    # the docker CLI's own loader reads it as `docker stack deploy` would, interpolation included
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI: its own check of the stack file is skipped")
    checked = subprocess.run(
        ["docker", "stack", "config", "-c", "stack.yml"], cwd=sample, capture_output=True, text=True, check=False
    )
    if "unknown command" in checked.stderr or "is not a docker command" in checked.stderr:
        pytest.skip(f"this docker CLI has no `stack config`: {checked.stderr.strip()}")
    assert checked.returncode == 0, checked.stderr
    loaded = yaml.safe_load(checked.stdout)
    assert 'exec bash -c "$1"' in loaded["services"]["web"]["command"][2]  # $$ read back as $


def url_color(app: Path) -> str:
    [addon] = app_model(app).addons
    [color] = [name for name in addon.var_names if name.startswith("HEROKU_POSTGRESQL_")]
    return color.removeprefix("HEROKU_POSTGRESQL_").removesuffix("_URL")


# --- kubernetes ------------------------------------------------------------------------------------


def test_kubernetes_manifests_of_the_sample_app(sample: Path) -> None:
    export(sample, "kubernetes")
    folder = sample / "k8s"
    validate_kubernetes(folder)
    objects = kubernetes_objects(folder)
    addon, url = database_url(sample)

    web = objects[("Deployment", "dynosim-sample-web")]
    assert web["spec"]["replicas"] == 2
    assert objects[("Deployment", "dynosim-sample-worker")]["spec"]["replicas"] == 1
    pod = web["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    [container] = pod["containers"]
    assert container["args"] == ["bash", "-c", "gunicorn app:app"]
    assert container["resources"] == {"requests": {"memory": "512Mi"}, "limits": {"memory": "1024Mi"}}
    assert container["readinessProbe"]["tcpSocket"]["port"] == 5000
    assert {"name": "PORT", "value": "5000"} in container["env"]
    assert {"name": "WEB_CONCURRENCY", "value": "2"} in container["env"]
    assert {"secretRef": {"name": "dynosim-sample-secrets"}} in container["envFrom"]
    assert (
        "readinessProbe"
        not in objects[("Deployment", "dynosim-sample-worker")]["spec"]["template"]["spec"]["containers"][0]
    )
    assert objects[("Service", "dynosim-sample-web")]["spec"]["ports"][0]["targetPort"] == "http"

    job = objects[("Job", "dynosim-sample-release-latest")]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["bash", "-c", "python release.py"]

    secret = objects[("Secret", "dynosim-sample-secrets")]
    assert secret["stringData"]["DATABASE_URL"] == url and "SECRET_KEY" in secret["stringData"]
    assert (folder / "00-config.yaml").stat().st_mode & 0o777 == 0o600

    database = objects[("StatefulSet", addon)]
    [claim] = database["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1024Mi"  # essential-0's 1 GB
    [mount] = database["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert mount["mountPath"] == "/var/lib/postgresql/data"
    assert objects[("Service", addon)]["spec"]["clusterIP"] == "None"

    for (kind, name), doc in objects.items():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "dynosim-sample", (kind, name)
        assert labels["dynosim/release"] == "latest", (kind, name)


def test_kubernetes_with_external_addons_and_a_release(sample: Path) -> None:
    state = sample / ".dynosim"
    # a succeeded release v3 of a commit, as the supervisor records one
    slug = {"id": "s", "path": "/x", "venv": None, "python_version": "3.11.7", "commit": "abc123", "description": ""}
    releases = [{"version": 3, "description": "Deploy abc123", "created_at": 0, "status": "succeeded", "slug": slug}]
    (state / "releases.json").write_text(json.dumps(releases))
    out = export(sample, "kubernetes", "k8s-out", "--external-addons")
    assert "DATABASE_URL" in out and "v3" in out
    folder = sample / "k8s-out"
    validate_kubernetes(folder)
    objects = kubernetes_objects(folder)
    assert not [key for key in objects if key[0] == "StatefulSet"]
    web = objects[("Deployment", "dynosim-sample-web")]
    [container] = web["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "dynosim/dynosim-sample:v3"
    assert {"secretRef": {"name": "dynosim-sample-addons"}} in container["envFrom"]
    assert web["metadata"]["labels"]["dynosim/release"] == "v3"
    assert ("Job", "dynosim-sample-release-v3") in objects
    assert "DATABASE_URL" not in objects[("Secret", "dynosim-sample-secrets")]["stringData"]


def test_kubernetes_maps_names_it_refuses_and_schedules_cron_jobs(tmp_path: Path) -> None:
    manifest = {"name": "My_App", "cron": [{"command": "python report.py", "schedule": "@daily"}]}
    app = make_app(
        tmp_path, procfile="web: python server.py\nmy_worker: python worker.py\n", app__json=json.dumps(manifest)
    )
    export(app, "kubernetes")
    validate_kubernetes(app / "k8s")
    objects = kubernetes_objects(app / "k8s")
    worker = objects[("Deployment", "my-app-my-worker")]
    assert worker["spec"]["template"]["spec"]["containers"][0]["name"] == "my-worker"
    assert {"name": "DYNO_TYPE", "value": "my_worker"} in worker["spec"]["template"]["spec"]["containers"][0]["env"]
    cron = objects[("CronJob", "my-app-scheduler-cron-1")]
    assert cron["spec"]["schedule"] == "@daily" and cron["spec"]["timeZone"] == "Etc/UTC"
    assert app_model(app).image == "dynosim/my-app:latest"


def test_kubernetes_refuses_two_types_of_one_name_in_one_line(tmp_path: Path) -> None:
    app = make_app(
        tmp_path, procfile="web: python server.py\nmy_worker: python worker.py\nmy-worker: python worker.py\n"
    )
    one_line_error(run_dynosim(app, "export", "kubernetes"), '"my_worker" and "my-worker" both become "my-worker"')
    assert not (app / "k8s").exists()


# --- systemd and supervisord, through honcho ----------------------------------------------------------


def test_systemd_units_through_honcho(sample: Path) -> None:
    out = export(sample, "systemd")
    assert "DATABASE_URL" in out  # nothing runs the add-on on a host: the user sets its URL
    folder = sample / "systemd"
    units = {path.name: ini(path) for path in folder.rglob("*") if path.is_file() and path.suffix != ".env"}
    assert "dynosim-sample.target" in units
    for n, port in ((1, "5000"), (2, "5001")):  # honcho's ports: web.1 on 5000, web.2 on 5001
        unit = units[f"dynosim-sample-web-{n}.service"]
        text = (folder / f"dynosim-sample-web-{n}.service").read_text()
        assert f"Environment=PORT={port}\n" in text and f"Environment=DYNO=web.{n}\n" in text
        assert "Environment=WEB_CONCURRENCY=2\n" in text
        assert unit["Service"]["ExecStart"].endswith("gunicorn app:app'")
        assert unit["Service"]["WorkingDirectory"] == "/app"
        assert "SECRET_KEY" not in text  # in the 0600 env file, not in a unit anyone can read
        drop_in = ini(folder / f"dynosim-sample-web-{n}.service.d" / "50-dynosim.conf")
        assert drop_in["Service"]["KillMode"] == "control-group" and drop_in["Service"]["TimeoutStopSec"] == "30"
        assert drop_in["Service"]["MemoryMax"] == "1024M"
        assert drop_in["Unit"]["Requires"] == "dynosim-sample-release.service"
    assert "Environment=PORT=5100\n" in (folder / "dynosim-sample-worker-1.service").read_text()
    release = units["dynosim-sample-release.service"]
    assert release["Service"]["Type"] == "oneshot" and release["Service"]["ExecStart"].endswith("python release.py'")
    env = folder / "dynosim-sample.env"
    assert "SECRET_KEY=" in env.read_text() and "#DATABASE_URL=" in env.read_text()
    assert env.stat().st_mode & 0o777 == 0o600

    # systemd's own reading of the units, each with its drop-in
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze here: systemd's own check of the units is skipped")
    services = sorted(p.name for p in folder.glob("*.service"))
    checked = subprocess.run(
        ["systemd-analyze", "verify", *services], cwd=folder, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_supervisord_programs_through_honcho(sample: Path) -> None:
    export(sample, "supervisord")
    conf = ini(sample / "supervisord.conf")
    assert conf["group:dynosim-sample"]["programs"] == "web-1,web-2,worker-1"
    web = conf["program:web-1"]
    assert "PORT=5000" in web["environment"] and "DYNO=web.1" in web["environment"]
    assert "SECRET_KEY=" in web["environment"]
    assert web["stopsignal"] == "TERM" and web["stopwaitsecs"] == "30" and web["stopasgroup"] == "true"
    assert web["autostart"] == "false"  # the release program starts the group once it succeeded
    release = conf["program:dynosim-sample-release"]
    assert release["command"].endswith("python release.py && supervisorctl start dynosim-sample:*'")
    assert release["autorestart"] == "false"
    assert (sample / "supervisord.conf").stat().st_mode & 0o777 == 0o600


# --- every format, dynolab, and what is refused ----------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_dynolab_to_every_format_and_again(tmp_path: Path, fmt: str) -> None:
    app = make_app(tmp_path)
    first = export(app, fmt)
    second = export(app, fmt)  # over its own files
    assert first == second
    if fmt == "kubernetes":
        validate_kubernetes(app / "k8s")
        assert {key[0] for key in kubernetes_objects(app / "k8s")} == {"Deployment", "Service", "Job"}
    elif fmt in ("compose", "swarm"):
        [document] = load_all(app / ("docker-compose.yml" if fmt == "compose" else "stack.yml"))
        assert set(document["services"]) == {"release", "web", "worker"}


def test_a_process_type_gone_leaves_no_manifest(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    export(app, "kubernetes")
    assert (app / "k8s" / "30-worker.yaml").exists()
    (app / "Procfile").write_text("web: python server.py\n")
    export(app, "kubernetes")
    assert sorted(p.name for p in (app / "k8s").iterdir()) == ["30-web.yaml"]


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    one_line_error(run_dynosim(app, "export", "nomad"), 'unknown format "nomad"', "compose")
    (app / "docker-compose.yml").write_text("services: {}\n")  # the user's own
    one_line_error(run_dynosim(app, "export", "compose"), "docker-compose.yml exists and is not a file")
    assert (app / "docker-compose.yml").read_text() == "services: {}\n"
    (app / "k8s").mkdir()
    (app / "k8s" / "notes.txt").write_text("mine")
    one_line_error(run_dynosim(app, "export", "kubernetes"), "notes.txt")
    one_line_error(run_dynosim(app, "export", "swarm", "k8s"), "k8s is a folder")
    one_line_error(run_dynosim(app, "export", "systemd", "docker-compose.yml"), "is a file")
    (app / "Procfile").write_text("web: python server.py\nworker: python -c 'import worker'\n")
    one_line_error(run_dynosim(app, "export", "systemd", "units"), "the worker command holds a '")
    assert not (app / "units").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(run_dynosim(empty, "export", "compose"), "no Procfile")
    assert not (empty / ".dynosim").exists()


# --- the add-ons' recipes and the secrets' loading, on a real engine -----------------------------------


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_the_stack_s_addons_answer_at_the_vars_the_app_gets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each add-on's service as the stack runs it (its image, env file, command, by its name on one network)
    answers the official client at the URL the app is given, and a dyno's command sees its secrets."""
    need_docker(monkeypatch)
    app = make_app(tmp_path, app__json=json.dumps({"addons": ["heroku-postgresql", "heroku-redis"]}))
    export(app, "swarm")
    [stack] = load_all(app / "stack.yml")
    model = app_model(app)
    network = f"dynosim-export-test-{tmp_path.name[-12:]}".lower()
    containers: list[str] = []
    assert docker("network", "create", network).returncode == 0
    try:
        for addon in model.addons:
            service = stack["services"][addon.name]
            command = [word.replace("$$", "$") for word in service.get("command", [])]
            started = docker(
                "run", "-d", "--network", network, "--network-alias", addon.name,
                "--env-file", str(app / service["env_file"][0]), service["image"], *command,
            )  # fmt: skip
            assert started.returncode == 0, started.stderr
            containers.append(started.stdout.strip())
            health = [word.replace("$$", "$") for word in service["healthcheck"]["test"][1:]]
            for _ in range(120):
                if docker("exec", containers[-1], *health).returncode == 0:
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"{addon.name} never passed its healthcheck: {docker('logs', containers[-1]).stderr}")
        by_service = {addon.service: addon for addon in model.addons}
        postgres, redis = by_service["postgres"], by_service["redis"]
        url = postgres.config_vars["DATABASE_URL"]
        query = docker("run", "--rm", "--network", network, postgres.image, "psql", url, "-Atc", "select current_user")
        assert query.returncode == 0, query.stderr
        assert query.stdout.strip() == postgres.environment["POSTGRES_USER"]
        # Heroku's redis://:PASSWORD@HOST:PORT, its parts given to redis-cli (whose -u sends an empty user name)
        parts = urllib.parse.urlsplit(redis.config_vars["REDIS_URL"])
        assert (parts.scheme, parts.hostname, parts.port) == ("redis", redis.name, 6379)
        login = ("-h", str(parts.hostname), "-p", str(parts.port), "--no-auth-warning", "-a", str(parts.password))
        ping = docker("run", "--rm", "--network", network, redis.image, "redis-cli", *login, "ping")
        assert ping.stdout.strip() == "PONG", ping.stdout + ping.stderr

        # a dyno's command: every Docker secret in the environment before the Procfile's command runs
        web = stack["services"]["web"]
        command = [word.replace("$$", "$") for word in web["command"]]
        command[-1] = 'printf %s "$DATABASE_URL"'
        mount = f"{app / 'stack.secrets'}:/run/secrets:ro"
        seen = docker("run", "--rm", "-v", mount, postgres.image, *command)
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout == url
    finally:
        for container in containers:
            docker("rm", "-f", "-v", container)
        docker("network", "rm", network)
