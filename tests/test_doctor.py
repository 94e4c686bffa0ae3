"""`dynosim doctor`: one tiny app per finding, checked through the real command (and its API for twins)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import psutil
from conftest import FIXTURES, run_dynosim

from dynosim.doctor import diagnose

APPS = Path(__file__).resolve().parent / "doctor_apps"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def app_copy(
    tmp_path: Path,
    name: str,
    *,
    git: bool = True,
    leave: tuple[str, ...] = (),
    files: dict[str, str | None] | None = None,
) -> Path:
    """A copy of tests/doctor_apps/NAME, edited by `files` (None deletes), committed except `leave`."""
    app = tmp_path / name
    shutil.copytree(APPS / name, app)
    for rel, text in (files or {}).items():
        if text is None:
            (app / rel).unlink()
        else:
            (app / rel).write_text(text)
    if git:

        def run(*args: str) -> None:
            subprocess.run(
                ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
                cwd=app,
                env=GIT_ENV,
                check=True,
                capture_output=True,
            )

        run("init", "-q")
        run("add", "-A")
        if leave:
            run("reset", "-q", "--", *leave)
        run("commit", "-qm", "the app")
    return app


def doctor_json(app: Path, *args: str) -> tuple[int, dict[str, dict[str, object]]]:
    """Exit code, and the findings by code (the first of each)."""
    result = run_dynosim(app, "doctor", "--json", *args)
    assert result.stdout.strip().startswith("["), result.stdout + result.stderr
    found: dict[str, dict[str, object]] = {}
    for finding in json.loads(result.stdout):
        assert set(finding) == {"severity", "code", "file", "line", "message", "fix"}
        found.setdefault(str(finding["code"]), finding)
    return result.returncode, found


def codes(app: Path) -> set[str]:
    return {finding.code for finding in diagnose(app, run=False)}


def dyno_processes(token: str) -> list[psutil.Process]:
    """Processes of dynos whose config vars carry `token` (set in the app's .env)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("DOCTOR_TEST_TOKEN") == token:
                found.append(process)
        except psutil.Error:
            continue
    return found


def with_token(app: Path) -> str:
    token = uuid.uuid4().hex
    (app / ".env").write_text(f"DOCTOR_TEST_TOKEN={token}\n")
    return token


# a clean app, and bad input
def test_a_clean_app_runs_and_passes(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "clean")
    result = run_dynosim(app, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "web.1 listened on 0.0.0.0:$PORT" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "doctor: 0 errors, 0 warnings, 1 info"
    assert not (app / ".dynosim").exists()  # the run used a copy: the app's own state is untouched


def test_a_folder_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    result = run_dynosim(tmp_path, "doctor", "-C", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "no such app folder" in result.stderr


# 1. Procfile and web type
def test_no_procfile_suggests_the_web_line(tmp_path: Path) -> None:
    code, found = doctor_json(app_copy(tmp_path, "no_procfile"), "--no-run")
    assert code == 1
    assert found["no-procfile"]["severity"] == "error"
    assert "H14" in str(found["no-procfile"]["message"])
    assert '"web: gunicorn app:app"' in str(found["no-procfile"]["fix"])


def test_no_web_type_renames_the_server_or_suggests_a_line(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "clean", files={"Procfile": "# the app\nserver: python server.py\n"})
    code, found = doctor_json(app, "--no-run")
    assert code == 1
    assert (found["no-web"]["file"], found["no-web"]["line"]) == ("Procfile", 2)
    assert 'rename "server:" to "web:"' in str(found["no-web"]["fix"])
    (app / "Procfile").write_text("clock: python -c 'import time; time.sleep(1e9)'\n")
    [no_web] = [f for f in diagnose(app, run=False) if f.code == "no-web"]
    assert '"web: python server.py"' in no_web.fix


# 2. lines Heroku drops or rewrites
def test_procfile_lines_heroku_drops_are_warnings(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "clean", files={"Procfile": "web: python server.py\nworker:python server.py\n"})
    code, found = doctor_json(app, "--no-run")
    assert code == 0
    line = found["procfile-line"]
    assert (line["severity"], line["file"], line["line"]) == ("warning", "Procfile", 2)
    assert line["fix"] == 'Write "worker: python server.py"'


# 3. what git would not push
def test_an_uncommitted_import_is_an_error_and_an_opened_file_a_warning(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "untracked", leave=("helpers.py", "data.csv"))
    code, found = doctor_json(app, "--no-run")
    assert code == 1
    imported, opened = found["uncommitted-import"], found["uncommitted-file"]
    assert (imported["severity"], imported["file"], imported["line"]) == ("error", "server.py", 4)
    assert "helpers.py" in str(imported["message"]) and "ModuleNotFoundError" in str(imported["message"])
    assert imported["fix"] == "git add helpers.py && git commit"
    assert (opened["severity"], opened["file"], opened["line"]) == ("warning", "server.py", 6)
    assert "data.csv" in str(opened["message"])


def test_an_uncommitted_procfile_and_a_modified_module(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "untracked", leave=("Procfile",))
    (app / "helpers.py").write_text((app / "helpers.py").read_text() + "\nVERSION = 2\n")
    found = {(f.code, f.file): f for f in diagnose(app, run=False)}
    assert found[("uncommitted-file", "Procfile")].severity == "error"
    assert found[("uncommitted-change", "server.py")].severity == "warning"
    assert "helpers.py is modified" in found[("uncommitted-change", "server.py")].message


def test_a_folder_outside_git_is_a_warning(tmp_path: Path) -> None:
    code, found = doctor_json(app_copy(tmp_path, "clean", git=False), "--no-run")
    assert code == 0
    assert found["not-git"]["severity"] == "warning"


# 4. where the web process listens: read, then seen running
def test_loopback_only_is_found_in_the_code_and_confirmed_running(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "loopback")
    token = with_token(app)
    code, found = doctor_json(app)
    assert code == 1
    loopback = found["web-loopback"]
    assert (loopback["severity"], loopback["file"], loopback["line"]) == ("error", "server.py", 5)
    assert "confirmed by running it: web.1 listened on 127.0.0.1:" in str(loopback["message"])
    assert "0.0.0.0" in str(loopback["fix"])
    assert dyno_processes(token) == []
    code, found = doctor_json(app, "--no-run")
    assert code == 1 and "confirmed" not in str(found["web-loopback"]["message"])


def test_a_fixed_port_is_seen_running(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "fixed_port")
    token = with_token(app)
    assert codes(app) == set()  # the port is not a literal: only running it shows the problem
    code, found = doctor_json(app, "--boot-timeout", "2")
    assert code == 1
    fixed = found["web-fixed-port"]
    assert "0.0.0.0:19123" in str(fixed["message"]) and "Error R10" in str(fixed["message"])
    assert "$PORT" in str(fixed["fix"])
    assert dyno_processes(token) == []


def test_loopback_and_fixed_port_in_the_procfile(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "clean", files={"Procfile": "web: gunicorn server:app --bind 127.0.0.1:8000\n"})
    code, found = doctor_json(app, "--no-run")
    assert code == 1
    for name in ("web-loopback", "web-fixed-port"):
        assert (found[name]["file"], found[name]["line"]) == ("Procfile", 1)
        assert "--bind 0.0.0.0:$PORT" in str(found[name]["fix"])
    (app / "Procfile").write_text("web: uvicorn main:app\n")  # uvicorn's defaults: 127.0.0.1:8000
    assert {"web-loopback", "web-fixed-port"} <= codes(app)
    (app / "Procfile").write_text("web: uvicorn main:app --host 0.0.0.0 --port $PORT\n")
    assert not {"web-loopback", "web-fixed-port"} & codes(app)


def test_a_crash_at_boot_shows_the_last_lines(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "crash")
    token = with_token(app)
    code, found = doctor_json(app)
    assert code == 1
    crash = str(found["boot-crash"]["message"])
    assert "booting" in crash and "KeyError: 'SECRET_KEY'" in crash
    assert dyno_processes(token) == []


# 5. DATABASE_URL as Heroku sets it, handed to SQLAlchemy
def test_database_url_into_sqlalchemy_without_the_postgresql_rewrite(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "sqlalchemy", git=False)
    code, found = doctor_json(app, "--no-run")
    assert code == 1
    scheme = found["postgres-scheme"]
    assert (scheme["severity"], scheme["file"], scheme["line"]) == ("error", "app.py", 7)
    assert 'replace("postgres://", "postgresql://"' in str(scheme["fix"])
    text = (
        (app / "app.py")
        .read_text()
        .replace('os.environ["DATABASE_URL"]', 'os.environ["DATABASE_URL"].replace("postgres://", "postgresql://", 1)')
    )
    (app / "app.py").write_text(text)
    assert "postgres-scheme" not in codes(app)


# 6, 7, 8. Django: SQLite, migrations without a release phase, an HTTPS redirect loop
def test_django_sqlite_migrations_and_https_redirect(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "django")
    result = run_dynosim(app, "doctor", "--no-run")
    assert result.returncode == 0, result.stdout  # warnings only
    assert result.stdout.strip().splitlines()[-1] == "doctor: 0 errors, 3 warnings"
    assert "warning mysite/settings.py:7 [sqlite]" in result.stdout
    assert "warning mysite/settings.py:3 [ssl-redirect-loop]" in result.stdout
    assert 'fix: add "release: python manage.py migrate" to the Procfile' in result.stdout


def test_migrations_at_boot_or_in_the_release_phase(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "django", git=False)
    web = "web: waitress-serve --port=$PORT mysite.wsgi:application\n"
    (app / "Procfile").write_text(web.replace("web: ", "web: python manage.py migrate && "))
    assert "migrate-at-boot" in codes(app) and "no-release-phase" not in codes(app)
    (app / "Procfile").write_text(web + "release: python manage.py migrate\n")
    assert not {"migrate-at-boot", "no-release-phase"} & codes(app)


def test_https_redirect_is_fine_with_the_proxy_header_or_gunicorn(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "django", git=False)
    settings = app / "mysite/settings.py"
    settings.write_text(settings.read_text() + 'SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")\n')
    assert "ssl-redirect-loop" not in codes(app)
    settings.write_text(settings.read_text().replace("SECURE_PROXY_SSL_HEADER", "# "))
    (app / "Procfile").write_text("web: gunicorn mysite.wsgi\n")  # the buildpack makes gunicorn trust the header
    assert "ssl-redirect-loop" not in codes(app)


def test_a_sqlite_fallback_for_database_url(tmp_path: Path) -> None:
    config = 'import os\n\nSQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL", "sqlite:///app.db")\n'
    app = app_copy(tmp_path, "clean", git=False, files={"config.py": config})
    [sqlite] = [f for f in diagnose(app, run=False) if f.code == "sqlite"]
    assert (sqlite.file, sqlite.line) == ("config.py", 3) and "falls back to SQLite" in sqlite.message
    (app / "tests").mkdir()
    (app / "tests/test_app.py").write_text('URL = "sqlite://"\n')  # tests may use SQLite
    assert [f.file for f in diagnose(app, run=False) if f.code == "sqlite"] == ["config.py"]


def test_herokus_own_local_sqlite_fallback_is_no_warning(tmp_path: Path) -> None:
    """python-getting-started: SQLite only where IS_HEROKU_APP is false, i.e. never on a dyno."""
    app = tmp_path / "getting-started"
    shutil.copytree(FIXTURES / "getting-started", app)
    code, found = doctor_json(app, "--no-run")
    assert code == 0 and "sqlite" not in found
    sqlite = '{"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}'
    for local_only in (
        f'import os\nif "DYNO" not in os.environ:\n    DATABASES = {sqlite}\n',
        f'import os\nON_HEROKU = os.environ.get("ON_HEROKU")\nDATABASES = {{}} if ON_HEROKU else {sqlite}\n',
        f'import os\nIS_HEROKU_APP = "DYNO" in os.environ and "CI" not in os.environ\nif not IS_HEROKU_APP:\n    DATABASES = {sqlite}\n',
    ):
        (app / "gettingstarted/settings.py").write_text(local_only)
        assert "sqlite" not in codes(app), local_only
    (app / "gettingstarted/settings.py").write_text(f'import os\nif "DYNO" in os.environ:\n    DATABASES = {sqlite}\n')
    [on_heroku] = [f for f in diagnose(app, run=False) if f.code == "sqlite"]  # the wrong way round
    assert (on_heroku.file, on_heroku.line) == ("gettingstarted/settings.py", 3)


def test_sqlite3_connect_is_a_sqlite_database(tmp_path: Path) -> None:
    app = tmp_path / "sqlite-db"
    shutil.copytree(FIXTURES / "ephemeral/sqlite-db", app)
    result = run_dynosim(app, "doctor", "--no-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "warning app.py:13 [sqlite] the app keeps its data in a SQLite file (sqlite3.connect(DATABASE)): on Heroku "
        "a SQLite file lives in the dyno's ephemeral filesystem and is lost at every restart, deploy and daily cycle, "
        "and each dyno (web.2, a worker, a one-off) has its own copy"
    ) in result.stdout
    assert "fix: use the heroku-postgresql add-on through DATABASE_URL" in result.stdout
    (app / "app.py").write_text(
        "from sqlite3 import connect as db\n\ncache = db(':memory:')\nnotes = db(database='notes.db')\n"
    )
    assert [(f.file, f.line) for f in diagnose(app, run=False) if f.code == "sqlite"] == [("app.py", 4)]
    shutil.rmtree(app)
    shutil.copytree(FIXTURES / "ephemeral/sqlite-db-fixed", app)
    assert "sqlite" not in codes(app)


def test_uploads_saved_under_the_app_folder(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "flask_uploads")
    code, found = doctor_json(app, "--no-run")
    assert code == 0  # a warning
    uploads = found["local-uploads"]
    assert (uploads["severity"], uploads["file"], uploads["line"]) == ("warning", "app.py", 15)
    assert str(uploads["message"]) == (
        "uploaded files are saved to the dyno's disk (photo.save(os.path.join(app.config['UPLOAD_FOLDER'], name))): on "
        "Heroku that filesystem is ephemeral: every upload is lost at the next restart, deploy and daily cycle, and a "
        "file web.1 saved is not there for web.2 or a worker"
    )
    assert str(uploads["fix"]).startswith("store uploads in object storage: S3")
    source = (app / "app.py").read_text()
    (app / "app.py").write_text(source.replace('"uploads"', 'os.path.join(tempfile.gettempdir(), "uploads")'))
    assert "local-uploads" not in codes(app)  # scratch in /tmp, e.g. to resize before it goes elsewhere
    (app / "app.py").write_text(source.replace('request.files["photo"]', "photo_field()"))  # not followed…
    [setting] = [f for f in diagnose(app, run=False) if f.code == "local-uploads"]
    assert (setting.file, setting.line) == ("app.py", 8)  # …the setting says where uploads go
    assert setting.message.startswith("uploads go to UPLOAD_FOLDER = 'uploads', a folder on the dyno's disk: on Heroku")
    for name, expected in (("local-uploads", {("app.py", 16)}), ("local-uploads-fixed", set())):
        shutil.copytree(FIXTURES / "ephemeral" / name, tmp_path / name)
        assert {(f.file, f.line) for f in diagnose(tmp_path / name, run=False) if f.code == "local-uploads"} == expected


def test_no_dependency_file_and_runtime_txt(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "clean", files={"requirements.txt": None, "runtime.txt": "python-3.12.4\n"})
    code, found = doctor_json(app, "--no-run")
    assert code == 1
    assert found["no-dependency-file"]["severity"] == "error"
    assert found["runtime-txt"]["severity"] == "warning"
    assert '.python-version file containing "3.12"' in str(found["runtime-txt"]["fix"])


def test_the_text_report_groups_by_severity(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "untracked", leave=("helpers.py", "data.csv"))
    result = run_dynosim(app, "doctor", "--no-run")
    assert result.returncode == 1
    out = result.stdout
    assert out.index("Errors") < out.index("error server.py:4 [uncommitted-import]") < out.index("Warnings")
    assert "      fix: git add helpers.py && git commit" in out
    assert out.strip().splitlines()[-1] == "doctor: 1 error, 1 warning"
