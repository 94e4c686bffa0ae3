"""app.json: the env, formation, add-ons and scripts Heroku reads when it creates an app.

Only the keys dynosim acts on are checked; app.json has many others (logo, keywords,
environments, buildpacks...) and Heroku tolerates them, so they are ignored here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Literal, NoReturn

from dynosim.errors import ManifestError
from dynosim.procfile import MAX_ARG_STRLEN, command_problem

ENV_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: "$" would let a name end in a line break
# Heroku upper-cases an attachment name, so lowercase letters are fine here.
_ATTACHMENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class EnvSpec:
    name: str
    value: str | None
    required: bool
    generator: str | None  # only "secret" exists
    description: str | None


@dataclass(frozen=True)
class FormationSpec:
    quantity: int
    size: str | None


@dataclass(frozen=True)
class AddonSpec:
    plan: str  # "heroku-postgresql" or "heroku-postgresql:essential-0"
    as_name: str | None  # the attachment name, app.json's "as"
    options: Mapping[str, object]


ConcurrencyPolicy = Literal["allow", "forbid", "replace"]
CONCURRENCY_POLICIES: tuple[ConcurrencyPolicy, ...] = ("allow", "forbid", "replace")


@dataclass(frozen=True)
class CronSpec:
    """One entry of app.json's `cron` list, in Dokku's format."""

    command: str
    schedule: str  # 5-field cron or a macro like @daily, in UTC
    concurrency_policy: ConcurrencyPolicy


@dataclass(frozen=True)
class PostdeploySpec:
    """app.json's `scripts.postdeploy`: a command, or Heroku's object form `{"command": ..., "size": ...}`."""

    command: str
    size: str | None


@dataclass(frozen=True)
class Manifest:
    name: str | None
    env: Mapping[str, EnvSpec]
    formation: Mapping[str, FormationSpec]
    addons: tuple[AddonSpec, ...]
    scripts: Mapping[str, str]
    cron: tuple[CronSpec, ...] = ()
    postdeploy: PostdeploySpec | None = None

    EMPTY: ClassVar[Manifest]  # an app without app.json


Manifest.EMPTY = Manifest(
    name=None, env=MappingProxyType({}), formation=MappingProxyType({}), addons=(), scripts=MappingProxyType({})
)


def load_manifest(app_dir: Path) -> Manifest:
    path = app_dir / "app.json"
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return Manifest.EMPTY
    except OSError as error:
        raise ManifestError(f"{path}: cannot read it ({error.strerror}). Make it a readable file") from None
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path}: byte {error.start} is not UTF-8. Save app.json as UTF-8 text") from None
    return parse_manifest(text, path)


def parse_manifest(text: str, path: Path) -> Manifest:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ManifestError(
            f"{path.name}:{error.lineno}: not valid JSON: {error.msg} (column {error.colno}). Fix the syntax there"
        ) from None
    fail = _Failer(path.name)
    top = fail.mapping(data, "the top level")
    postdeploy = _postdeploy_spec(fail, fail.mapping_at(top, "scripts").get("postdeploy"))
    return Manifest(
        name=fail.optional_string(top, "name", ""),
        env=MappingProxyType({key: _env_spec(fail, key, raw) for key, raw in fail.mapping_at(top, "env").items()}),
        formation=MappingProxyType(
            {key: _formation_spec(fail, key, raw) for key, raw in fail.mapping_at(top, "formation").items()}
        ),
        addons=tuple(_addon_spec(fail, index, raw) for index, raw in enumerate(fail.list_at(top, "addons"))),
        scripts=MappingProxyType(
            {
                # postdeploy's object form is read by _postdeploy_spec; here it is its command
                key: postdeploy.command
                if postdeploy is not None and key == "postdeploy"
                else fail.string(raw, f"scripts.{_key(key)}")
                for key, raw in fail.mapping_at(top, "scripts").items()
            }
        ),
        cron=tuple(_cron_spec(fail, index, raw) for index, raw in enumerate(fail.list_at(top, "cron"))),
        postdeploy=postdeploy,
    )


def _postdeploy_spec(fail: _Failer, raw: object) -> PostdeploySpec | None:
    where = "scripts.postdeploy"
    if raw is None:
        return None
    if isinstance(raw, str):
        command, size = raw, None
    else:
        spec = fail.mapping(
            raw, where, 'a command string or an object like {"command": "python seed.py", "size": "standard-2x"}'
        )
        if "command" not in spec:
            fail(f'{where} has no "command"; add one like "command": "python seed.py"')
        command, size = fail.string(spec["command"], f"{where}.command"), fail.optional_string(spec, "size", where)
    if not command.strip():
        fail(f"{where} is empty; give the command to run once after the app's first release")
    problem = command_problem(command)
    if problem:
        fail(f"{where}'s command {problem}")
    return PostdeploySpec(command=command, size=size)


NUL = "\x00"
# no process's environment can carry one: the dyno would not start, as on Heroku its slug would not run
NUL_VALUE = "{where} holds a NUL byte, which no environment variable can carry; remove it"
LONG_VALUE = (
    "{where} is {size:,} bytes with its name, and a variable of a process's environment (NAME=value) can be "
    f"{MAX_ARG_STRLEN - 1:,} at most; keep large data in a file or an add-on"
)


def variable_size(name: str, value: str) -> int:
    """The bytes NAME=value takes in a process's environment, its final NUL included."""
    return len(name.encode()) + 1 + len(value.encode("utf-8", "surrogateescape")) + 1


def _env_spec(fail: _Failer, name: str, raw: object) -> EnvSpec:
    where = f"env.{_key(name)}"
    if not ENV_NAME.match(name):
        fail(
            f"env name {quoted(name)} is not a valid variable name;"
            " use letters, digits and _, not starting with a digit"
        )
    # Scalars go through string() so that a number gets the "quote it" hint.
    if isinstance(raw, (str, int, float)):
        value = fail.string(raw, where)
        if NUL in value:
            fail(NUL_VALUE.format(where=where))
        if variable_size(name, value) > MAX_ARG_STRLEN:
            fail(LONG_VALUE.format(where=where, size=variable_size(name, value)))
        return EnvSpec(name=name, value=value, required=False, generator=None, description=None)
    spec = fail.mapping(raw, where, 'a string or an object like {"value": "...", "required": true}')
    if NUL in str(spec.get("value", "")):
        fail(NUL_VALUE.format(where=f"{where}.value"))
    if variable_size(name, str(spec.get("value", ""))) > MAX_ARG_STRLEN:
        fail(LONG_VALUE.format(where=f"{where}.value", size=variable_size(name, str(spec.get("value", "")))))
    generator = fail.optional_string(spec, "generator", where)
    if generator not in (None, "secret"):
        fail(f'{where}.generator must be "secret" (the only generator Heroku has), got {quoted(generator)}')
    required = spec.get("required", False)
    if not isinstance(required, bool):
        fail(f"{where}.required must be true or false, got {quoted(required)}")
    return EnvSpec(
        name=name,
        value=fail.optional_string(spec, "value", where),
        required=required,
        generator=generator,
        description=fail.optional_string(spec, "description", where),
    )


def _formation_spec(fail: _Failer, process_type: str, raw: object) -> FormationSpec:
    where = f"formation.{_key(process_type)}"
    spec = fail.mapping(raw, where, 'an object like {"quantity": 1}')
    quantity = spec.get("quantity")
    # bool is an int in Python, but `true` is not a dyno count.
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
        got = "nothing" if quantity is None else quoted(quantity)
        fail(f"{where}.quantity must be a whole number >= 0, got {got}")
    return FormationSpec(quantity=quantity, size=fail.optional_string(spec, "size", where))


def _addon_spec(fail: _Failer, index: int, raw: object, under: str = "") -> AddonSpec:
    where = f"{under}addons[{index}]"  # `under`: "environments.test." for a test environment's
    if isinstance(raw, str):
        return AddonSpec(plan=fail.plan(raw, where), as_name=None, options=MappingProxyType({}))
    spec = fail.mapping(raw, where, 'a string like "heroku-postgresql" or an object like {"plan": "heroku-postgresql"}')
    if "plan" not in spec:
        fail(f'{where} has no "plan"; add one like "plan": "heroku-postgresql"')
    as_name = fail.optional_string(spec, "as", where)
    if as_name is not None and not _ATTACHMENT_NAME.match(as_name):
        fail(f"{where}.as must be letters, digits and _ starting with a letter, got {quoted(as_name)}")
    return AddonSpec(
        plan=fail.plan(spec["plan"], f"{where}.plan"),
        as_name=as_name,
        options=MappingProxyType(dict(fail.mapping_at(spec, "options", where))),
    )


def _cron_spec(fail: _Failer, index: int, raw: object) -> CronSpec:
    where = f"cron[{index}]"
    spec = fail.mapping(raw, where, 'an object like {"command": "python task.py", "schedule": "@daily"}')
    for key in ("command", "schedule"):
        if key not in spec:
            fail(f'{where} has no "{key}"; add one like "command": "python task.py", "schedule": "@daily"')
    command = fail.string(spec["command"], f"{where}.command")
    if not command.strip():
        fail(f"{where}.command is empty; give the command the job runs")
    problem = command_problem(command)
    if problem:
        fail(f"{where}.command {problem}")
    schedule = fail.string(spec["schedule"], f"{where}.schedule").strip()
    # imported here, for an app.json with a cron: croniter's import runs `file -b` (5-12 ms of every start)
    from croniter import CroniterBadDateError, croniter

    # croniter reads a sixth field as seconds, which Dokku's cron (and Heroku's Scheduler) do not have
    fields = schedule.split()
    if not croniter.is_valid(schedule) or (not schedule.startswith("@") and len(fields) != 5):
        fail(
            f"{where}.schedule {json.dumps(schedule)} is not a cron schedule;"
            ' write 5 fields like "*/10 * * * *" or a macro like "@hourly" or "@daily"'
        )
    try:
        croniter(schedule, datetime.now(UTC)).get_next(datetime)
    except CroniterBadDateError:
        fail(f"{where}.schedule {json.dumps(schedule)} never comes (no such date); fix its day and month")
    given = spec.get("concurrency_policy", "allow")
    policy = next((known for known in CONCURRENCY_POLICIES if known == given), None)
    if policy is None:
        fail(f"{where}.concurrency_policy must be one of allow, forbid, replace, got {quoted(given)}")
    return CronSpec(command=command, schedule=schedule, concurrency_policy=policy)


class _Failer:
    """Type checks that raise a one-line ManifestError naming the file and key path."""

    def __init__(self, file_name: str) -> None:
        self.file_name = file_name

    def __call__(self, message: str) -> NoReturn:
        raise ManifestError(f"{self.file_name}: {message}")

    def mapping(self, value: object, where: str, example: str = "an object") -> dict[str, object]:
        if not isinstance(value, dict):
            self(f"{where} must be {example}, got {quoted(value)}")
        return value

    def mapping_at(self, parent: dict[str, object], key: str, where: str = "") -> dict[str, object]:
        return self.mapping(parent.get(key, {}), _join(where, key))

    def list_at(self, parent: dict[str, object], key: str) -> list[object]:
        value = parent.get(key, [])
        if not isinstance(value, list):
            self(f"{key} must be a list, got {quoted(value)}")
        return value

    def string(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            quote = f"; quote it: {json.dumps(json.dumps(value))}" if isinstance(value, (int, float)) else ""
            self(f"{where} must be a string, got {quoted(value)}{quote}")
        return value

    def optional_string(self, parent: dict[str, object], key: str, where: str) -> str | None:
        value = parent.get(key)
        return None if value is None else self.string(value, _join(where, key))

    def plan(self, value: object, where: str) -> str:
        plan = self.string(value, where)
        if not re.fullmatch(r"[^\s:]+(:[^\s:]+)?", plan):
            self(f'{where} must look like "heroku-postgresql" or "heroku-postgresql:essential-0", got {quoted(plan)}')
        return plan


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,40}")


def _key(key: str) -> str:
    """A key of app.json as a message's path names it: as written when plain, else quoted (one line, short)."""
    return key if _PLAIN_KEY.fullmatch(key) else quoted(key)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def quoted(value: object, limit: int = 40) -> str:
    """How a message quotes what the user wrote: as JSON (control characters and line breaks escaped, so
    the message stays one line), cut short past `limit` characters."""
    shown = json.dumps(value, default=str)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


@dataclass(frozen=True)
class Environment:
    """app.json with one of its `environments` (Heroku CI's `test`, review apps' `review`) applied: its
    keys override the matching base keys."""

    name: str
    scripts: Mapping[str, str]
    env: Mapping[str, str]  # the values the run gets (an env spec without a value sets nothing)
    addons: tuple[AddonSpec, ...]
    formation: Mapping[str, FormationSpec]


def load_environment(app_dir: Path, name: str) -> Environment:
    """app.json's `environments.<name>` over its base keys; an app without app.json has none of them."""
    path = app_dir / "app.json"
    base = load_manifest(app_dir)
    top = json.loads(path.read_text(encoding="utf-8")) if base is not Manifest.EMPTY else {}
    fail = _Failer(path.name)
    where = f"environments.{name}"
    overrides = fail.mapping_at(fail.mapping_at(top, "environments"), name, "environments")
    scripts = {
        key: fail.string(raw, f"{where}.scripts.{_key(key)}")
        for key, raw in fail.mapping_at(overrides, "scripts", where).items()
    }
    env = {key: _env_spec(fail, key, raw) for key, raw in fail.mapping_at(overrides, "env", where).items()}
    addons = base.addons
    if "addons" in overrides:
        if not isinstance(overrides["addons"], list):
            fail(f"{where}.addons must be a list, got {quoted(overrides['addons'])}")
        addons = tuple(_addon_spec(fail, index, raw, f"{where}.") for index, raw in enumerate(overrides["addons"]))
    formation = {
        key: _formation_spec(fail, key, raw) for key, raw in fail.mapping_at(overrides, "formation", where).items()
    }
    values = {key: spec.value for key, spec in {**base.env, **env}.items() if spec.value is not None}
    return Environment(
        name=name,
        scripts=MappingProxyType({**base.scripts, **scripts}),
        env=MappingProxyType(values),
        addons=addons,
        formation=MappingProxyType({**base.formation, **formation}),
    )
