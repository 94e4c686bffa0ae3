"""What every writer shares about the files it writes: the first line that marks a file as an export's (an
export writes again only over its own files, never over the user's), YAML as engines read it, env files,
and private files for what holds secrets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dynosim.export.model import AppModel, ExportError
from dynosim.privatefile import write_private

MARK = "Written by `dynosim export"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def header(model: AppModel, fmt: str, *notes: str, comment: str = "#") -> str:
    """The marking first line, then a line per note, as comments."""
    release = f"v{model.release_version}" if model.release_version is not None else "no release yet"
    lines = [f"{MARK} {fmt}` from {model.app} ({release}, image {model.image}); the next export replaces it.", *notes]
    return "".join(f"{comment} {line}\n" if line else f"{comment}\n" for line in lines)


def ours(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return MARK in handle.readline()
    except OSError:
        return False


def check_file(path: Path, fmt: str) -> None:
    """ExportError unless `path` is free or a file an export wrote."""
    if path.is_dir():
        raise ExportError(f"{path} is a folder; `dynosim export {fmt}` writes files: name a file (or leave PATH out)")
    if path.exists() and not ours(path):
        raise ExportError(
            f"{path} exists and is not a file `dynosim export` wrote; name another PATH, or move that file away"
        )
    if not path.parent.is_dir():
        raise ExportError(f"{path.parent}: no such folder; make it first, or name a PATH in an existing folder")


def clear_folder(path: Path, fmt: str) -> None:
    """Makes `path` an empty folder for the export to write into: free, or holding only files an export wrote
    and folders of them (systemd's drop-ins), deleted here: a process type gone from the Procfile leaves no
    file behind."""
    if path.exists() and not path.is_dir():
        raise ExportError(
            f"{path} is a file; `dynosim export {fmt}` writes a folder of files: name a folder (or leave PATH out)"
        )
    if not path.exists():
        if not path.parent.is_dir():
            raise ExportError(f"{path.parent}: no such folder; make it first, or name a PATH in an existing folder")
        path.mkdir()
        return
    stale: list[Path] = []
    for entry in sorted(path.iterdir()):
        if entry.is_dir():
            inner = list(entry.iterdir())
            if all(f.is_file() and ours(f) for f in inner):
                stale += [*inner, entry]
                continue
        elif entry.is_file() and ours(entry):
            stale.append(entry)
            continue
        raise ExportError(
            f"{path} holds {entry.name}, which `dynosim export` did not write; name an empty or new folder for "
            f"`dynosim export {fmt}`, or move it away"
        )
    for entry in stale:
        if entry.is_dir():
            entry.rmdir()
        else:
            entry.unlink()


def secrets_folder(path: Path) -> None:
    """A folder of one file per secret (Docker secrets' files): free, or holding only such files (replaced)."""
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path} is a file; the export keeps its secrets in a folder there: move the file away")
    if path.exists():
        entries = list(path.iterdir())
        foreign = [e.name for e in entries if not (e.is_file() and _ENV_NAME.fullmatch(e.name))]
        if foreign:
            raise ExportError(
                f"{path} holds {foreign[0]}, which `dynosim export` did not write; move it away or name another PATH"
            )
        for entry in entries:
            entry.unlink()
    else:
        path.mkdir(mode=0o700)
    path.chmod(0o700)


def write(path: Path, text: str, *, private: bool = False) -> Path:
    """`path`'s new contents, replaced whole; 0600 when it holds secrets."""
    try:
        write_private(path, text, 0o600 if private else 0o644)
    except OSError as error:
        raise ExportError(f"{path}: cannot write it ({error.strerror}); check the folder's permissions") from None
    return path


def to_yaml(*documents: Any) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a value shared by two services is written out twice, never as &id001 and *id001

    return "---\n".join(
        yaml.dump(document, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)
        for document in documents
    )


def env_lines(values: Mapping[str, str]) -> str:
    """KEY=VALUE lines as the docker CLI reads an env file: the value verbatim to the end of the line."""
    return "".join(f"{name}={value}\n" for name, value in values.items())


def one_line(value: str) -> bool:
    """Whether an env file can hold the value: the docker CLI's reader takes no quotes and no newlines."""
    return "\n" not in value and "\r" not in value and value == value.lstrip()
