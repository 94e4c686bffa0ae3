"""The Procfile, read the way Heroku reads it, with a warning for everything Heroku hides.

Heroku's parser (ported in heroku/buildpacks-procfile from the slug compiler) keeps
every line matching one loose regex and silently drops the rest. dynosim runs exactly
the processes Heroku would run and warns about each line where the user probably
meant something else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from dynosim.errors import ProcfileError

# Heroku's regex verbatim; [[:space:]] is spelled out because Python has no POSIX classes.
_HEROKU_LINE = re.compile(r"^[ \t\n\r\f\v]*([a-zA-Z0-9_-]+):?\s+(.*)[ \t\n\r\f\v]*")
# What a line that Heroku drops was probably meant to be, to explain why it was dropped.
_NAME_COLON_REST = re.compile(r"^[ \t\f\v]*([^\s:]*):(.*)$")
# Cloud Native Buildpacks accept only lowercase DNS labels and rewrite other names.
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_EXAMPLE = "'web: python app.py'"
# Linux's MAX_ARG_STRLEN: the most one argument (or NAME=value of the environment) can be, its final NUL
# included. A dyno's command reaches exec as one (bash -c), after the lines dynosim sources before it.
MAX_ARG_STRLEN = 131072
MAX_COMMAND = MAX_ARG_STRLEN - 1024


@dataclass(frozen=True)
class ProcessType:
    name: str
    command: str
    line: int  # 1-based line in the Procfile


@dataclass(frozen=True)
class Procfile:
    path: Path
    processes: Mapping[str, ProcessType]  # file order of each type's winning line
    warnings: tuple[str, ...]

    @property
    def release(self) -> ProcessType | None:
        return self.processes.get("release")

    @property
    def formation_types(self) -> tuple[str, ...]:
        return tuple(name for name in self.processes if name != "release")


def load_procfile(app_dir: Path, file: Path | None = None) -> Procfile:
    """The app's Procfile, or `file` instead (`dynosim run -f`)."""
    if file is not None:
        return _read_procfile(file)
    try:
        names = sorted(entry.name for entry in app_dir.iterdir())
    except OSError as error:
        raise ProcfileError(f"{app_dir}: cannot read the app folder ({error.strerror}). Check the path") from None
    # Compare names rather than test the path: on a case-insensitive disk `procfile`
    # would pass for `Procfile`, and Heroku (case-sensitive) would not find it.
    if "Procfile" not in names:
        misnamed = [name for name in names if name.lower() == "procfile"]
        if misnamed:
            raise ProcfileError(
                f"{app_dir}: found {misnamed[0]!r} but Heroku only reads a file named exactly 'Procfile'."
                " Rename it to Procfile"
            )
        raise ProcfileError(
            f"{app_dir}: no Procfile. Add a file named Procfile with a line like 'web: gunicorn app:app'"
        )
    return _read_procfile(app_dir / "Procfile")


def _read_procfile(path: Path) -> Procfile:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ProcfileError(f"{path}: cannot read it ({error.strerror}). Make it a readable file") from None
    except UnicodeDecodeError as error:
        raise ProcfileError(f"{path}: byte {error.start} is not UTF-8. Save the Procfile as UTF-8 text") from None
    return parse_procfile(text, path)


def parse_procfile(text: str, path: Path) -> Procfile:
    processes: dict[str, ProcessType] = {}
    warnings: list[str] = []
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        where = f"{path.name}:{number}"
        line = raw.strip().lstrip("\ufeff")
        if not line or line.startswith("#"):
            continue
        match = _HEROKU_LINE.match(raw)
        if match is None or not match.group(2).strip():
            warnings.append(f"{where}: ignored {_quote(line)}: {_why_dropped(raw)}")
            continue
        name, command = match.group(1), match.group(2).strip()
        if raw[match.end(1) : match.end(1) + 1] != ":":
            meant = command.removeprefix(":").strip() or command
            warnings.append(
                f"{where}: {_quote(line)} has no colon right after the type; Heroku runs type {_quote(name)}"
                f" with command {_quote(command)}, other tools skip it. Write {_quote(name + ': ' + meant)}"
            )
        if not _DNS_LABEL.match(name):
            fixed = name.replace("_", "-").lower()
            warnings.append(
                f"{where}: type {_quote(name)} is not a lowercase DNS label; Heroku accepts it but Cloud Native"
                f" Buildpacks rename it {_quote(fixed)}. Use lowercase letters, digits and -"
            )
        problem = command_problem(command)
        if problem:
            raise ProcfileError(f"{where}: {_cut(name)}'s command {problem}")
        previous = processes.pop(name, None)
        if previous is not None:
            warnings.append(
                f"{where}: {_quote(name)} defined again, replacing line {previous.line} (Heroku keeps the last)"
            )
        processes[name] = ProcessType(name=name, command=command, line=number)
    if not processes:
        hint = f" ({warnings[0]})" if warnings else ""
        raise ProcfileError(f"{path}: no process type found{hint}. Add a line like {_EXAMPLE}")
    return Procfile(path=path, processes=MappingProxyType(processes), warnings=tuple(warnings))


def command_problem(command: str) -> str | None:
    """Why no dyno could run `command`, said to follow "<where>'s command", or None."""
    if "\x00" in command:
        return "holds a NUL byte, which no command can carry; remove it"
    size = len(command.encode("utf-8", "surrogateescape"))
    if size > MAX_COMMAND:
        return (
            f"is {size:,} bytes, past the {MAX_COMMAND:,} a dyno's command can be (exec takes {MAX_ARG_STRLEN:,} "
            "an argument); put it in a script and run that"
        )
    return None


def _why_dropped(raw: str) -> str:
    """Why Heroku's regex skipped a line, in terms of the fix."""
    if raw.startswith("\ufeff"):
        return "it starts with an invisible byte-order mark; save the Procfile as UTF-8 without BOM"
    guess = _NAME_COLON_REST.match(raw)
    if guess is None:
        return f"not a '<type>: <command>' line; write it like {_EXAMPLE}"
    name, rest = guess.groups()
    if not name:
        return f"no process type before the colon; write it like {_EXAMPLE}"
    if not re.fullmatch(r"[a-zA-Z0-9_-]+", name):
        return f"type {_quote(name)} may only use letters, digits, _ and -"
    if not rest.strip():
        return f"{_quote(name)} has no command; put the command after the colon"
    return f"Heroku needs a space after the colon; write {_quote(name + ': ' + rest.strip())}"


def _quote(text: str) -> str:
    """A line or a part of one, quoted in a message: what would break the message's line escaped, cut short."""
    shown = "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in _cut(text, 100))
    return f'"{shown}"'


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
