"""What Heroku's Python buildpack does that a build must do too: collectstatic for Django, and the
builds it fails (with its reason) or warns about. Through the real `dynosim run`/`doctor`, real pip,
real Django, real HTTP through the router."""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import CACHE_DIR, DynosimRun, free_port, run_dynosim

from dynosim.buildpack import build_slug
from dynosim.errors import BuildError

APPS = Path(__file__).parent / "apps"
MINOR = "%d.%d" % sys.version_info[:2]
COLLECT = "-----> $ python manage.py collectstatic --noinput"
UNABLE = " !     Error: Unable to generate Django static files."
# A Pipfile and the _meta.hash.sha256 that pipenv 2026.7.1 (the buildpack's) records for it,
# computed by pipenv itself (with no pip.conf adding sources).
PIPFILE = '[packages]\nSix = "==1.16.0"\n\n[dev-packages]\npytest = "*"\n\n[requires]\npython_version = "3.11"\n'
PIPFILE_HASH = "973b0c91fdccc1720b00e6ed23db138087346f0c2c5b742836d619f38068c920"


def app_copy(tmp_path: Path, name: str, **files: str | None) -> Path:
    """A copy of tests/apps/NAME edited by `files` (None deletes), with a file of its own so that its
    slug is built afresh (the virtualenv stays cached)."""
    app = tmp_path / name
    shutil.copytree(APPS / name, app)
    (app / "build-id.txt").write_text(uuid.uuid4().hex)
    for rel, text in files.items():
        if text is None:
            (app / rel).unlink()
        else:
            (app / rel).parent.mkdir(parents=True, exist_ok=True)
            (app / rel).write_text(text)
    return app


def settings(**changes: str | None) -> str:
    """django_static's settings with lines replaced (None drops the line)."""
    lines = (APPS / "django_static" / "mysite" / "settings.py").read_text().splitlines()
    for name, text in changes.items():
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{name} ="))
        lines[index] = "" if text is None else text
    return "\n".join(lines) + "\n"


def failed_run(app: Path) -> tuple[str, str]:
    """`dynosim run` of an app whose build fails: its output and its error, having checked that it
    exited 1 without starting a dyno."""
    result = run_dynosim(app, "run", "-C", str(app), "--port", str(free_port()))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Starting process" not in result.stdout
    assert "Traceback" not in result.stderr
    [error] = result.stderr.strip().splitlines()
    assert error.startswith("dynosim: error: ")
    return result.stdout, error


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# --- collectstatic ---------------------------------------------------------------------------


def test_whitenoise_manifest_app_serves_its_static_page(tmp_path: Path, dynosim: type[DynosimRun]) -> None:
    run = dynosim(app_copy(tmp_path, "django_static"))
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", timeout=300)
    lines = run.drain()
    collect = lines.index(COLLECT)
    assert any(
        line.startswith("       1 static file copied to '") and line.endswith("', 1 post-processed.")
        for line in lines[collect:]
    )
    status, page = get(f"http://127.0.0.1:{run.port}/")
    assert status == 200, page
    [css] = [word.split('"')[1] for word in page.split() if word.startswith('href="/static/style.')]
    assert css != "/static/style.css"  # the manifest's hashed name
    assert get(f"http://127.0.0.1:{run.port}{css}") == (200, "body { color: #430098; }\n")
    assert run.stop() == 0


def test_disable_collectstatic_skips_it_and_the_manifest_page_fails_as_on_heroku(
    tmp_path: Path, dynosim: type[DynosimRun]
) -> None:
    run = dynosim(app_copy(tmp_path, "django_static", **{".env": "DISABLE_COLLECTSTATIC=1\n"}))
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", timeout=300)
    lines = run.drain()
    assert "-----> Skipping Django collectstatic since the env var DISABLE_COLLECTSTATIC is set." in lines
    assert COLLECT not in lines
    status, _ = get(f"http://127.0.0.1:{run.port}/")
    assert status == 500  # ValueError: Missing staticfiles manifest entry for 'style.css'
    run.wait_for(r"UserWarning: No directory at: .*/staticfiles/")  # all the log says, as on Heroku
    assert run.stop() == 0


def test_collectstatic_without_static_root_fails_the_build(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "django_static", **{"mysite/settings.py": settings(STATIC_ROOT=None)})
    out, error = failed_run(app)
    lines = out.splitlines()
    assert lines[lines.index(COLLECT) + 1].startswith("       Traceback (most recent call last):")
    assert UNABLE in lines
    assert " !     The 'python manage.py collectstatic --noinput' Django" in lines
    assert " !        $ heroku config:set DISABLE_COLLECTSTATIC=1" in lines
    assert error.startswith(
        "dynosim: error: Unable to generate Django static files: 'python manage.py "
        "collectstatic --noinput' failed (exit 1): django.core.exceptions.ImproperlyConfigured: "
        "You're using the staticfiles app without having set the STATIC_ROOT setting"
    )
    assert "DISABLE_COLLECTSTATIC=1" in error


def test_manage_py_one_folder_down_without_the_staticfiles_app_fails_the_build(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "django_static", **{"mysite/settings.py": settings(INSTALLED_APPS="INSTALLED_APPS = []")})
    (app / "backend").mkdir()
    for name in ("manage.py", "mysite", "templates", "static"):
        (app / name).rename(app / "backend" / name)
    out, error = failed_run(app)
    lines = out.splitlines()
    start = lines.index("-----> $ python backend/manage.py collectstatic --noinput")
    assert lines[start + 1] == "       Unknown command: 'collectstatic'"
    assert UNABLE in lines
    assert error.endswith(
        "failed (exit 1): Unknown command: 'collectstatic' (django.contrib.staticfiles is "
        "not in INSTALLED_APPS); fix it (see its output above), or skip it with "
        "DISABLE_COLLECTSTATIC=1 in app.json env, .env or dynosim config:set"
    )


def test_no_manage_py_within_reach_skips_collectstatic(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "django_static")
    deep = app / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (app / "manage.py").rename(deep / "manage.py")
    lines: list[str] = []
    build_slug(app, cache_dir=CACHE_DIR, say=lines.append)
    assert "-----> Skipping Django collectstatic since no manage.py file found." in lines


def test_the_deprecated_disable_file_skips_with_the_buildpacks_warning(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "django_static", **{".heroku/collectstatic_disabled": ""})
    lines: list[str] = []
    build_slug(app, cache_dir=CACHE_DIR, say=lines.append)
    assert "-----> Skipping Django collectstatic since the file '.heroku/collectstatic_disabled' exists." in lines
    assert " !     Warning: The .heroku/collectstatic_disabled file is deprecated." in lines


def test_a_config_var_change_is_another_build(tmp_path: Path) -> None:
    """The build sees config vars, so the same source with DISABLE_COLLECTSTATIC is not the cached slug."""
    app = app_copy(tmp_path, "django_static")
    first: list[str] = []
    build_slug(app, cache_dir=CACHE_DIR, say=first.append)
    assert COLLECT in first
    again: list[str] = []
    build_slug(app, cache_dir=CACHE_DIR, config_vars={"DISABLE_COLLECTSTATIC": "1"}, say=again.append)
    assert "-----> Skipping Django collectstatic since the env var DISABLE_COLLECTSTATIC is set." in again


# --- package manager files -------------------------------------------------------------------


def test_pipfile_lock_out_of_date_fails_the_build(tmp_path: Path) -> None:
    lock = {
        "_meta": {
            "hash": {"sha256": PIPFILE_HASH},
            "pipfile-spec": 6,
            "requires": {"python_version": MINOR},
            "sources": [{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": True}],
        },
        "default": {},
        "develop": {},
    }
    app = app_copy(
        tmp_path, "hello", **{"requirements.txt": None, "Pipfile": PIPFILE, "Pipfile.lock": json.dumps(lock)}
    )
    lines: list[str] = []
    build_slug(app, cache_dir=CACHE_DIR, say=lines.append)  # in date: pipenv's own hash
    assert f"-----> Using Python {MINOR} specified in Pipfile.lock" in lines

    (app / "Pipfile").write_text(PIPFILE.replace('Six = "==1.16.0"', 'six = "==1.16.0"\nrequests = "*"'))
    out, error = failed_run(app)
    lines = out.splitlines()
    install = lines.index("-----> Installing dependencies using 'pipenv install --deploy'")
    assert lines[install + 1].startswith(f"       Your Pipfile.lock ({PIPFILE_HASH}) is out of date. Expected: (")
    assert lines[install + 2] == "       ERROR:: Aborting deploy"
    assert lines[install + 3] == " !     Error: Unable to install dependencies using Pipenv."
    assert error.startswith(
        "dynosim: error: Unable to install dependencies using Pipenv: Pipfile.lock is out of "
        f"date with Pipfile (its _meta.hash.sha256 is {PIPFILE_HASH[:12]}"
    )
    assert error.endswith("run 'pipenv lock' and commit Pipfile.lock")


def test_pyproject_toml_alone_fails_the_build(tmp_path: Path) -> None:
    app = app_copy(
        tmp_path,
        "hello",
        **{"requirements.txt": None, "pyproject.toml": "[project]\nname = 'x'\nversion = '1'\ndependencies = []\n"},
    )
    out, error = failed_run(app)
    assert " !     Error: Couldn't find any supported Python package manager files." in out.splitlines()
    assert " !     pyproject.toml" in out.splitlines()  # the root's contents, listed as the buildpack does
    assert error.startswith("dynosim: error: Couldn't find any supported Python package manager files: ")
    assert "pyproject.toml alone is not enough: lock it (uv lock, poetry lock) or add a requirements.txt" in error


# --- Python versions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "error"),
    [
        (
            {".python-version": "3.9\n"},
            (
                "The requested Python version has reached end-of-life: Heroku's Python "
                "buildpack refuses Python 3.9; ask for at least 3.10 in .python-version"
            ),
        ),
        ({".python-version": "3.15\n"}, "The requested Python version isn't recognised"),
        ({".python-version": "python-3.12\n"}, "Invalid Python version in .python-version ('python-3.12')"),
        ({".python-version": "3.12\n3.13\n"}, "Multiple Python versions found in .python-version (3.12, 3.13)"),
        ({".python-version": "# only a comment\n"}, "No Python version found in .python-version"),
        ({"python-version.txt": "3.12\n"}, "'python-version.txt' is not read by Heroku's Python buildpack"),
        ({"runtime.txt": "python-3.8.10\n"}, "The requested Python version has reached end-of-life"),
        ({"uv.lock": "version = 1\n", "requirements.txt": None}, "No Python version was specified: with uv"),
    ],
)
def test_python_versions_the_buildpack_refuses(tmp_path: Path, files: dict[str, str | None], error: str) -> None:
    app = app_copy(tmp_path, "hello", **files)
    lines: list[str] = []
    with pytest.raises(BuildError) as failure:
        build_slug(app, cache_dir=CACHE_DIR, say=lines.append)
    assert str(failure.value).startswith(error)
    assert any(line.startswith(" !     Error: ") for line in lines)


def test_python_versions_the_buildpack_warns_about(tmp_path: Path) -> None:
    lines: list[str] = []
    build_slug(app_copy(tmp_path, "hello"), cache_dir=CACHE_DIR, say=lines.append)
    assert " !     Warning: No Python version was specified." in lines
    lines.clear()
    build_slug(
        app_copy(tmp_path / "old", "hello", **{".python-version": "3.10.0\n"}), cache_dir=CACHE_DIR, say=lines.append
    )
    assert " !     Warning: Support for Python 3.10 is deprecated!" in lines
    assert " !     Warning: A Python patch update is available!" in lines
    assert " !     patch release of Python 3.10 available: 3.10.21" in lines


# --- doctor ----------------------------------------------------------------------------------


def doctor(app: Path) -> tuple[int, dict[str, dict[str, object]]]:
    result = run_dynosim(app, "doctor", "--json", "--no-run")
    found: dict[str, dict[str, object]] = {}
    for finding in json.loads(result.stdout):
        found.setdefault(str(finding["code"]), finding)
    return result.returncode, found


def test_doctor_says_when_static_files_would_be_missing(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "django_static")
    code, found = doctor(app)
    assert not {"static-files-missing", "collectstatic-fails"} & set(found)
    (app / "app.json").write_text('{"env": {"DISABLE_COLLECTSTATIC": "1"}}')
    code, found = doctor(app)
    assert code == 1
    missing = found["static-files-missing"]
    assert (missing["severity"], missing["file"], missing["line"]) == ("error", "mysite/settings.py", 16)
    assert "collectstatic is skipped (DISABLE_COLLECTSTATIC=1 in app.json env)" in str(missing["message"])
    assert "answers 500" in str(missing["message"])
    (app / "bin").mkdir()
    (app / "bin" / "post_compile").write_text("#!/bin/sh\npython manage.py collectstatic --noinput\n")
    assert "static-files-missing" not in doctor(app)[1]


def test_doctor_names_the_collectstatic_that_would_fail_the_build(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "django_static", **{"mysite/settings.py": settings(STATIC_ROOT=None)})
    code, found = doctor(app)
    assert code == 1
    assert found["collectstatic-fails"]["severity"] == "error"
    assert "STATIC_ROOT is not set" in str(found["collectstatic-fails"]["message"])
    (app / "mysite" / "settings.py").write_text(settings(INSTALLED_APPS="INSTALLED_APPS = []"))
    code, found = doctor(app)
    assert found["collectstatic-fails"]["line"] == 8
    assert "Unknown command: 'collectstatic'" in str(found["collectstatic-fails"]["message"])
