"""Config vars: app.json env, .env and config:set, merged the way a dyno will see them."""

from __future__ import annotations

import io
import json
import re
import secrets
from collections.abc import Container, Mapping
from pathlib import Path
from typing import Any

from dynosim.errors import ConfigError
from dynosim.manifest import ENV_NAME, LONG_VALUE, MAX_ARG_STRLEN, NUL, NUL_VALUE, Manifest, variable_size
from dynosim.privatefile import write_private

_NAME_RULE = "use letters, digits and _, not starting with a digit"


def state_dir(app_dir: Path) -> Path:
    """<app>/.dynosim, made private and kept out of git and slugs by its own .gitignore."""
    path = app_dir / ".dynosim"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        ignore = path / ".gitignore"
        if not ignore.exists():
            write_private(ignore, "*\n")  # 0600 as every file in the state folder
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot create dynosim's state folder ({error.strerror}). Check its permissions"
        ) from None
    return path


def load_dotenv(path: Path) -> dict[str, str]:
    """The variables of a .env file as python-dotenv reads them, without touching os.environ."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror}). Make it a readable file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: byte {error.start} is not UTF-8. Save it as UTF-8 text") from None
    from dotenv import dotenv_values  # only for an app that has a .env
    from dotenv.parser import parse_stream

    # python-dotenv only logs a line it cannot parse and skips it; a skipped line would be a
    # missing config var at run time, so find those lines first and refuse them.
    lines: dict[str, str] = {}  # each name's last line: the value dotenv_values keeps
    for binding in parse_stream(io.StringIO(text)):
        where = f"{path.name}:{_line_of(binding)}"
        if binding.error:
            statement = binding.original.string.strip()
            raise ConfigError(f"{where}: cannot parse {_cut(statement)!r}. Write KEY=VALUE (quote values with spaces)")
        if binding.key is None:
            continue
        if not ENV_NAME.match(binding.key):
            raise ConfigError(f"{where}: {_cut(binding.key)!r} is not a valid variable name; {_NAME_RULE}")
        if binding.value is None:
            name = _cut(binding.key)
            raise ConfigError(f"{where}: {name} has no value; write {name}= for an empty value")
        if NUL in binding.value:
            raise ConfigError(NUL_VALUE.format(where=f"{where}: {_cut(binding.key)}'s value"))
        lines[binding.key] = where
    parsed = dotenv_values(stream=io.StringIO(text), interpolate=True)
    values = {key: value for key, value in parsed.items() if value is not None}
    for key, value in values.items():  # after interpolation, which can make a value grow
        if variable_size(key, value) > MAX_ARG_STRLEN:
            where = f"{lines.get(key, path.name)}: {_cut(key)}'s value"
            raise ConfigError(LONG_VALUE.format(where=where, size=variable_size(key, value)))
    return values


def _cut(text: str) -> str:
    """What a message quotes of a line or a name: its start, so the message stays readable."""
    return text if len(text) <= 60 else text[:57] + "..."


def _line_of(binding: Any) -> int:  # a dotenv.parser.Binding
    # A binding's line is where its leading blank lines start, not where its text does.
    original = binding.original.string
    leading = original[: len(original) - len(original.lstrip())]
    return binding.original.line + len(re.findall(r"\r\n|\n|\r", leading))


class ConfigStore:
    """Config vars kept in <app>/.dynosim/config.json, mode 0600 (secrets live there)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "config.json"

    def load(self) -> dict[str, str]:
        """The vars set with config:set."""
        return self._read()["vars"]

    def save(self, values: Mapping[str, str]) -> None:
        for name in values:
            if not ENV_NAME.match(name):
                raise ConfigError(f"{_cut(name)!r} is not a valid config var name; {_NAME_RULE}")
        self._write({**self._read(), "vars": dict(values)})

    def change(self, changes: Mapping[str, str | None], elsewhere: Container[str] = ()) -> None:
        """`config:set` (a value) and `config:unset` (None); `elsewhere` are the names .env or app.json set.
        The one change of config vars: the CLI's, with or without a run active, and the supervisor's."""
        for name in changes:  # before anything changes, a name to unset included
            if not ENV_NAME.match(name):
                raise ConfigError(f"{_cut(name)!r} is not a valid config var name; {_NAME_RULE}")
        for name, value in changes.items():
            if value is not None and NUL in value:
                raise ConfigError(NUL_VALUE.format(where=f"config:set {_cut(name)}'s value"))
            if value is not None and variable_size(name, value) > MAX_ARG_STRLEN:
                where = f"config:set {_cut(name)}'s value"
                raise ConfigError(LONG_VALUE.format(where=where, size=variable_size(name, value)))
        stored = self.load()
        for name, value in changes.items():
            if value is not None:
                stored[name] = value
            elif name in stored:
                del stored[name]
            else:
                where = " (it comes from .env or app.json)" if name in elsewhere else ""
                raise ConfigError(f"config:unset: {name} is not set with config:set{where}")
        self.save(stored)

    def generated_secret(self, name: str) -> str:
        """app.json's generator "secret": made once, then the same value on every run."""
        data = self._read()
        if name not in data["generated"]:
            # Heroku's generated secrets are 64 hex characters.
            data["generated"][name] = secrets.token_hex(32)
            self._write(data)
        return data["generated"][name]

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"vars": {}, "generated": {}}
        except (OSError, ValueError) as error:
            raise self._corrupt(str(error)) from None
        if not isinstance(data, dict):
            raise self._corrupt("expected a JSON object")
        sections = {key: data.get(key, {}) for key in ("vars", "generated")}
        for key, section in sections.items():
            if not isinstance(section, dict) or not all(isinstance(value, str) for value in section.values()):
                raise self._corrupt(f'"{key}" must map names to strings')
        return sections

    def _corrupt(self, detail: str) -> ConfigError:
        return ConfigError(
            f"{self.path}: unreadable config vars ({detail}). Fix the file or delete it and set them again"
        )

    def _write(self, data: Mapping[str, Mapping[str, str]]) -> None:
        try:
            write_private(self.path, json.dumps(data, indent=2, sort_keys=True))
        except OSError as error:
            raise ConfigError(
                f"{self.path}: cannot write config vars ({error.strerror}). Check the folder's permissions"
            ) from None


def resolve_config_vars(
    app_dir: Path, manifest: Manifest, store: ConfigStore, env_file: Path | None = None
) -> dict[str, str]:
    """Precedence, lowest first: app.json env (and its generated secrets) < .env (or `env_file`) < config:set."""
    overrides = {**load_dotenv(env_file or app_dir / ".env"), **store.load()}
    values: dict[str, str] = {}
    for name, spec in manifest.env.items():
        if spec.value is not None:
            values[name] = spec.value
        elif spec.generator == "secret" and name not in overrides:
            values[name] = store.generated_secret(name)
    values.update(overrides)
    for name, spec in manifest.env.items():
        if spec.required and name not in values:
            raise ConfigError(
                f"app.json: env {name} is required; set it in .env ({name}=...) or with dynosim config:set {name}=..."
            )
    return values
