"""`dynosim doctor` warns when pool × workers × web dynos exceeds the Postgres plan's connection limit,
from what it can read as plain literals; one tiny app per case, made in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_dynosim

from dynosim.doctor import Finding, diagnose


def app(
    tmp_path: Path, procfile: str, files: dict[str, str], addons: str = '["heroku-postgresql:essential-0"]'
) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "Procfile").write_text(procfile)
    (root / "requirements.txt").write_text("gunicorn\nSQLAlchemy\n")
    manifest = json.loads(files.pop("app.json", "{}"))
    manifest.setdefault("addons", json.loads(addons))
    (root / "app.json").write_text(json.dumps(manifest))
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def pool_findings(root: Path) -> list[Finding]:
    return [f for f in diagnose(root, run=False) if f.code == "pool-exceeds-plan"]


ENGINE = "import os\nfrom sqlalchemy import create_engine\nengine = create_engine(os.environ['DATABASE_URL']{args})\n"


def test_the_finding_names_the_numbers_and_the_fix(tmp_path: Path) -> None:
    root = app(
        tmp_path,
        "web: gunicorn -w 4 app:app\n",
        {
            "app.py": ENGINE.format(args=", pool_size=5, max_overflow=0"),
            "app.json": '{"formation": {"web": {"quantity": 2}}}',
        },
    )
    result = run_dynosim(root, "doctor", "--no-run")
    assert "warning app.py:3 [pool-exceeds-plan] 5 × 4 workers × 2 web dynos = 40 connections > essential-0's 20" in (
        result.stdout
    ), result.stdout
    assert "(pool: create_engine(pool_size=5, max_overflow=0) = 5 each; workers: gunicorn --workers 4" in result.stdout
    assert "fix: keep pool × workers × web dynos within 20: e.g. a pool of 2 per process" in result.stdout
    assert "(heroku-postgresql:essential-2 allows 40)" in result.stdout


def test_within_the_plan_there_is_no_finding(tmp_path: Path) -> None:
    root = app(
        tmp_path, "web: gunicorn --workers=2 app:app\n", {"app.py": ENGINE.format(args=", pool_size=5, max_overflow=5")}
    )
    assert pool_findings(root) == []  # 10 × 2 × 1 = 20: at the limit, not past it


def test_sqlalchemy_defaults_and_gunicorn_conf_workers(tmp_path: Path) -> None:
    root = app(
        tmp_path,
        "web: gunicorn app:app\n",
        {
            "app.py": ENGINE.format(args=""),
            "gunicorn.conf.py": "workers = 3\nthreads = 4\n",
            ".env": "WEB_CONCURRENCY=9\n",
        },
    )
    (finding,) = pool_findings(root)
    assert finding.message.startswith("15 × 3 workers × 1 web dyno = 45 connections > essential-0's 20"), (
        finding.message
    )
    assert "create_engine(pool_size=5, max_overflow=10) = 15 each; workers: workers = 3 in gunicorn.conf.py" in (
        finding.message
    )


def test_web_concurrency_and_flask_sqlalchemy_engine_options(tmp_path: Path) -> None:
    flask = (
        "from flask import Flask\nfrom flask_sqlalchemy import SQLAlchemy\napp = Flask(__name__)\n"
        'app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 2, "max_overflow": 1}\ndb = SQLAlchemy(app)\n'
    )
    root = app(
        tmp_path,
        "web: gunicorn app:app\n",
        {"app.py": flask, ".env": "WEB_CONCURRENCY=4\n", "app.json": '{"formation": {"web": {"quantity": 2}}}'},
    )
    (finding,) = pool_findings(root)
    assert finding.message.startswith("3 × 4 workers × 2 web dynos = 24 connections > essential-0's 20"), (
        finding.message
    )
    assert "SQLALCHEMY_ENGINE_OPTIONS(pool_size=2, max_overflow=1)" in finding.message
    assert "WEB_CONCURRENCY=4 from .env" in finding.message


def test_flask_sqlalchemy_without_options_and_the_buildpack_default_workers(tmp_path: Path) -> None:
    flask = "from flask_sqlalchemy import SQLAlchemy\ndb = SQLAlchemy()\n"
    root = app(tmp_path, "web: gunicorn app:app\n", {"app.py": flask})
    (finding,) = pool_findings(root)
    assert finding.message.startswith("15 × 2 workers × 1 web dyno = 30 connections"), finding.message
    assert "WEB_CONCURRENCY=2, which Heroku's Python buildpack sets on standard-1x dynos" in finding.message


def test_django_persistent_connections_count_one_per_thread(tmp_path: Path) -> None:
    settings = 'DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "CONN_MAX_AGE": 600}}\n'
    root = app(tmp_path, "web: gunicorn -w 3 --threads 8 mysite.wsgi\n", {"mysite/settings.py": settings})
    (finding,) = pool_findings(root)
    assert finding.message.startswith(
        "1 per thread × 8 threads × 3 workers × 1 web dyno = 24 connections > essential-0's 20"
    ), finding.message
    assert "Django, one connection per thread, kept open (CONN_MAX_AGE)" in finding.message
    assert finding.where == "mysite/settings.py:1"


def test_the_plan_from_addons_create_and_what_is_not_a_literal(tmp_path: Path) -> None:
    root = app(tmp_path, "web: gunicorn -w 4 app:app\n", {"app.py": ENGINE.format(args=", pool_size=10")}, addons="[]")
    state = root / ".dynosim"
    state.mkdir()
    (state / "addons.json").write_text(
        json.dumps({"addons": [], "declared": [{"plan": "heroku-postgresql:standard-0"}]})
    )
    assert pool_findings(root) == []  # 20 × 4 = 80 ≤ standard-0's 120
    (state / "addons.json").write_text(json.dumps({"addons": [], "declared": [{"plan": "heroku-postgresql"}]}))
    (finding,) = pool_findings(root)  # no plan: essential-0, Heroku's default
    assert finding.message.startswith("20 × 4 workers × 1 web dyno = 80 connections > essential-0's 20")
    (root / "app.py").write_text(ENGINE.format(args=", pool_size=int(os.environ['POOL'])"))
    assert pool_findings(root) == []  # not a literal: not guessed


def test_no_postgres_no_finding(tmp_path: Path) -> None:
    root = app(tmp_path, "web: gunicorn -w 8 app:app\n", {"app.py": ENGINE.format(args="")}, addons="[]")
    assert pool_findings(root) == []
