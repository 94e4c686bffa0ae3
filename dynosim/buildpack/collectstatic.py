"""Django's collectstatic, run at build time as Heroku's Python buildpack runs it for every Django app
(bin/steps/collectstatic at heroku/heroku-buildpack-python b4e7e72): the files land in the slug, so
WhiteNoise finds them in every dyno; when it fails, the build fails."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from dynosim.buildpack.messages import INDENT, STEP, Say, failure, warning
from dynosim.buildpack.python import build_env, exported_config, stream

DISABLED_FILE = ".heroku/collectstatic_disabled"  # the buildpack's deprecated switch
MANAGE_DEPTH = 3  # `find . -maxdepth 3`: manage.py at the top or up to two folders down
FIND_DJANGO = "import sys, importlib.util; sys.exit(0 if importlib.util.find_spec('django') else 1)"
UNKNOWN_COMMAND = "Unknown command: 'collectstatic'"


def collectstatic(slug_dir: Path, venv: Path, config_vars: Mapping[str, str], say: Say) -> None:
    """Run `python manage.py collectstatic --noinput` in the slug being built, if Django is installed,
    unless DISABLE_COLLECTSTATIC (a config var, or dynosim's own environment) says not to."""
    env = build_env(venv, exported_config(config_vars))
    if (slug_dir / DISABLED_FILE).is_file():
        say(f"{STEP}Skipping Django collectstatic since the file '{DISABLED_FILE}' exists.")
        warning(
            say,
            "The .heroku/collectstatic_disabled file is deprecated.",
            ["", "Please remove the file and set the env var DISABLE_COLLECTSTATIC=1 instead."],
        )
        return
    if env.get("DISABLE_COLLECTSTATIC", "0") != "0":
        say(f"{STEP}Skipping Django collectstatic since the env var DISABLE_COLLECTSTATIC is set.")
        return
    python = str(venv / "bin" / "python")
    if subprocess.run([python, "-c", FIND_DJANGO], cwd=slug_dir, env=env, check=False).returncode != 0:
        return
    manage = find_manage_py(slug_dir)
    if manage is None:
        say(f"{STEP}Skipping Django collectstatic since no manage.py file found.")
        return
    command = f"python {manage} collectstatic --noinput"
    say(f"{STEP}$ {command}")
    env.setdefault("PYTHONPATH", ".")
    output: list[str] = []
    code, _ = stream([python, manage, "collectstatic", "--noinput", "--traceback"], cwd=slug_dir, env=env, say=say,
                     watch=output.append)  # fmt: skip
    if code == 0:
        return
    error = failure(
        say,
        "Unable to generate Django static files.",
        [
            "",
            f"The '{command}' Django",
            "management command to generate static files failed.",
            "",
            "See the traceback above for details.",
            "",
            "You may need to update application code to resolve this error.",
            "Or, you can disable collectstatic for this application:",
            "",
            "   $ heroku config:set DISABLE_COLLECTSTATIC=1",
            "",
            "https://devcenter.heroku.com/articles/django-assets",
        ],
        f"Unable to generate Django static files: '{command}' failed (exit {code}): "
        f"{_reason(output)}; fix it (see its output above), or skip it with "
        "DISABLE_COLLECTSTATIC=1 in app.json env, .env or dynosim config:set",
    )
    if env.get("DEBUG_COLLECTSTATIC", "0") == "1":
        say("****** Collectstatic environment variables:")
        for name, value in env.items():
            say(f"{INDENT}{name}={value}")
    raise error


def find_manage_py(root: Path) -> str | None:
    """The buildpack's pick: the shallowest manage.py within MANAGE_DEPTH, then by path; symlinks
    are neither followed nor counted (`find -type f`)."""
    found: list[tuple[int, str]] = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        depth = len(here.relative_to(root).parts) + 1  # of a file in `here`, as find counts it
        if depth >= MANAGE_DEPTH:
            dirs.clear()
        if "manage.py" in files and (here / "manage.py").is_file() and not (here / "manage.py").is_symlink():
            found.append((depth, (here / "manage.py").relative_to(root).as_posix()))
    return min(found)[1] if found else None


def _reason(output: list[str]) -> str:
    """The line of collectstatic's output that says why: Django's own for an unknown command, else
    the traceback's last line (the exception)."""
    if any(line.startswith(UNKNOWN_COMMAND) for line in output):
        return f"{UNKNOWN_COMMAND} (django.contrib.staticfiles is not in INSTALLED_APPS)"
    lines = [line.strip() for line in output if line.strip()]
    return lines[-1] if lines else "no output"
