"""The Python web servers a Procfile's web command runs: how each is found in the command, where
it listens when the command does not say, and how to make it listen where Heroku's router looks
(0.0.0.0:$PORT). Shared by `doctor`, which reads the command, and the dyno, which sees the bind.
"""

from __future__ import annotations

import shlex
from pathlib import Path

# What each server binds when the command does not say.
DEFAULTS = {  # server: (host, port); None: reads $PORT itself
    "gunicorn": None,
    "uvicorn": ("127.0.0.1", "8000"),
    "flask run": ("127.0.0.1", "5000"),
    "hypercorn": ("127.0.0.1", "8000"),
    "daphne": ("127.0.0.1", "8000"),
    "runserver": ("127.0.0.1", "8000"),
    "waitress-serve": ("0.0.0.0", "8080"),
}
FIX = {
    "gunicorn": "--bind 0.0.0.0:$PORT (or drop --bind: gunicorn reads $PORT itself)",
    "uvicorn": "--host 0.0.0.0 --port $PORT",
    "flask run": "--host 0.0.0.0 --port $PORT (better, gunicorn: flask run is a development server)",
    "hypercorn": "--bind 0.0.0.0:$PORT",
    "daphne": "-b 0.0.0.0 -p $PORT",
    "runserver": "gunicorn <project>.wsgi instead (runserver is a development server), or runserver 0.0.0.0:$PORT",
    "waitress-serve": "--listen=0.0.0.0:$PORT",
}
# for a server started from the app's own code
CODE_FIX = 'listen on 0.0.0.0 and the port in $PORT: e.g. app.run(host="0.0.0.0", port=int(os.environ["PORT"]))'


def server(tokens: list[str]) -> str | None:
    """The server a command's words start (a key of FIX), if any."""
    names = [Path(token).name for token in tokens]
    if "runserver" in names:
        return "runserver"
    for index, name in enumerate(names):
        if name == "flask" and "run" in names[index + 1 :]:
            return "flask run"
        if name in DEFAULTS:
            return name
    return None


def bind_fix(command: str) -> str:
    """How to make `command` listen on 0.0.0.0:$PORT, for the server it runs."""
    try:
        found = server(shlex.split(command))
    except ValueError:  # unbalanced quotes: bash would fail on it anyway
        found = None
    return f"for {found}, {FIX[found]}" if found else CODE_FIX
