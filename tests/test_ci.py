"""`dynosim ci`: Heroku CI's test run, against real Postgres and real test dynos."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import CACHE_DIR, ROOT, make_app, run_dynosim

CI_APP = str(ROOT / "tests" / "apps" / "ci_app")


def git(app: Path, *args: str) -> str:
    who = ["-c", "user.email=dev@example.com", "-c", "user.name=dev"]
    done = subprocess.run(["git", "-C", str(app), *who, *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def ci_app(tmp_path: Path, **files: str) -> Path:
    app = make_app(tmp_path, CI_APP, **files)
    git(app, "init", "-q", "-b", "feature-x")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "ci app")
    return app


def with_test_env(**env: str) -> str:
    manifest = json.loads((Path(CI_APP) / "app.json").read_text())
    manifest["environments"]["test"]["env"].update(env)
    return json.dumps(manifest)


def left_behind(app: Path) -> list[str]:
    """What a test run might leave: its state folder, and any process started in the app's folder."""
    left = [str(path) for path in (app / ".dynosim").glob("ci*")]
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(app) in part for part in proc.info["cmdline"] or []):
            left.append(" ".join(proc.info["cmdline"]))
    return left


def test_a_passing_suite_exits_0_with_its_output_and_heroku_ci_vars(tmp_path: Path) -> None:
    app = ci_app(tmp_path)
    done = run_dynosim(app, "ci", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "test-setup: greetings table ready" in done.stdout
    assert "2 passed" in done.stdout
    seen = json.loads(re.search(r"CI vars: (\{.*\})", done.stdout).group(1).replace("'", '"'))  # type: ignore[union-attr]
    assert seen["CI"] == "true"
    assert seen["CI_NODE_TOTAL"] == "1" and seen["CI_NODE_INDEX"] == "0"
    assert seen["HEROKU_TEST_RUN_BRANCH"] == "feature-x"
    assert seen["HEROKU_TEST_RUN_COMMIT_VERSION"] == git(app, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", seen["HEROKU_TEST_RUN_ID"])
    assert left_behind(app) == []


def test_a_failing_suite_exits_with_its_status_and_leaves_nothing(tmp_path: Path) -> None:
    app = ci_app(tmp_path, app__json=with_test_env(CI_APP_FAIL="1"))
    done = run_dynosim(app, "ci", timeout=300)
    assert done.returncode == 1, done.stderr  # pytest's status for failed tests
    assert "1 failed, 1 passed" in done.stdout
    assert left_behind(app) == []


def test_parallel_runs_that_many_test_dynos_each_with_its_index(tmp_path: Path) -> None:
    manifest = {"environments": {"test": {"scripts": {"test": 'echo "node $CI_NODE_INDEX of $CI_NODE_TOTAL"'}}}}
    app = ci_app(tmp_path, app__json=json.dumps(manifest))
    done = run_dynosim(app, "ci", "--parallel", "2", timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["test.1: node 0 of 2", "test.2: node 1 of 2"]
    assert left_behind(app) == []


def test_each_parallel_test_dyno_has_its_own_in_dyno_database(tmp_path: Path) -> None:
    app = ci_app(tmp_path)  # each dyno's test-setup creates the same table: a shared database would fail it
    done = run_dynosim(app, "ci", "--parallel", "2", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(re.findall(r"^(test\.\d): 2 passed", done.stdout, re.M)) == ["test.1", "test.2"]
    assert left_behind(app) == []


def test_missing_scripts_test_says_how_to_add_it(tmp_path: Path) -> None:
    app = ci_app(tmp_path, app__json='{"environments": {"test": {"addons": ["heroku-postgresql:in-dyno"]}}}')
    done = run_dynosim(app, "ci")
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert "scripts.test" in line and "no default test command" in line and '"test": "pytest"' in line
    assert "Building" not in done.stdout + done.stderr


def test_bad_input_names_app_json_and_the_key(tmp_path: Path) -> None:
    app = ci_app(tmp_path, app__json='{"environments": {"test": {"scripts": {"test": 42}}}}')
    done = run_dynosim(app, "ci")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        'dynosim: error: app.json: environments.test.scripts.test must be a string, got 42; quote it: "42"'
    ]
    app = ci_app(
        tmp_path / "2", app__json='{"environments": {"test": {"addons": ["nosuchdb"], "scripts": {"test": "true"}}}}'
    )
    done = run_dynosim(app, "ci")
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith('dynosim: error: app.json: environments.test.addons[0]: unknown add-on "nosuchdb"')
    assert left_behind(app) == []
    app = ci_app(
        tmp_path / "3", app__json='{"environments": {"test": {"addons": [{"as": "DB"}], "scripts": {"test": "true"}}}}'
    )
    done = run_dynosim(app, "ci")
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith('dynosim: error: app.json: environments.test.addons[0] has no "plan"'), line
    assert left_behind(app) == []


def test_review_environment_applies_instead(tmp_path: Path) -> None:
    manifest = {
        "env": {"WHO": "base"},
        "environments": {
            "test": {"env": {"WHO": "test"}, "scripts": {"test": 'echo "who=$WHO"'}},
            "review": {"env": {"WHO": "review"}, "scripts": {"test": 'echo "who=$WHO"; exit 3'}},
        },
    }
    app = ci_app(tmp_path, app__json=json.dumps(manifest))
    done = run_dynosim(app, "ci", "--environment", "review", timeout=300)
    assert done.returncode == 3
    assert "who=review" in done.stdout.splitlines()


def test_a_stopped_run_exits_143_and_leaves_nothing(tmp_path: Path) -> None:
    manifest = json.loads((Path(CI_APP) / "app.json").read_text())
    manifest["environments"]["test"]["scripts"]["test"] = "echo started; sleep 60"
    app = ci_app(tmp_path, app__json=json.dumps(manifest))
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR)}
    argv = [sys.executable, "-m", "dynosim", "ci"]
    proc = subprocess.Popen(argv, cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "test-setup: greetings table ready\n"
        assert proc.stdout.readline() == "started\n"
        assert (app / ".dynosim" / "ci").is_dir()  # the run's add-on is there while it runs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        proc.kill()
    assert left_behind(app) == []


def test_the_test_formation_and_other_plans_apply(tmp_path: Path) -> None:
    script = 'echo "node $CI_NODE_INDEX: ${REDIS_URL%%:*} ${DATABASE_URL%%:*}"'
    manifest = {
        "environments": {
            "test": {
                "addons": ["heroku-redis:in-dyno", "heroku-postgresql:essential-0"],
                "formation": {"test": {"quantity": 2}},
                "scripts": {"test": script},
            }
        }
    }
    app = ci_app(tmp_path, app__json=json.dumps(manifest))
    done = run_dynosim(app, "ci", timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["test.1: node 0: rediss postgres", "test.2: node 1: rediss postgres"]
    assert left_behind(app) == []


def test_docker_add_ons_leave_no_container_or_volume(tmp_path: Path) -> None:
    image = "dynosim-test/postgres:15"  # .ci/docker-images.sh builds it
    docker = shutil.which("docker")
    inspect = [docker, "image", "inspect", image] if docker else []
    if not inspect or subprocess.run(inspect, capture_output=True, check=False).returncode != 0:
        pytest.skip(f"no Docker engine, or no {image} (.ci/docker-images.sh builds it)")
    app = ci_app(tmp_path)
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR), "DYNOSIM_POSTGRES_IMAGE": image}
    argv = [sys.executable, "-m", "dynosim", "ci", "--addons", "docker"]
    done = subprocess.run(argv, cwd=app, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    [name] = re.findall(r"new container (dynosim-postgresql-[a-z]+-\d+)", done.stderr)
    for kind in ("container", "volume"):
        assert subprocess.run(["docker", kind, "inspect", name], capture_output=True, check=False).returncode != 0
    assert left_behind(app) == []
