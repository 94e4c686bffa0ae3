"""What Heroku's Python buildpack does to a slug: refuse what it refuses, pick the interpreter, install
the dependencies into a shared virtualenv, and run bin/pre_compile and bin/post_compile."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from dynosim.buildpack import python_version
from dynosim.buildpack.messages import INDENT, STEP, WARN, Say, failure
from dynosim.errors import BuildError

COMPLETE = ".complete"  # written last into a virtualenv: it is whole and can be shared
KEY_LENGTH = 32  # hex digits naming a virtualenv; short enough to keep script shebangs short
# The buildpack needs exactly one of these; each names the tool that reads it, as its errors do.
LOCK_FILES = {"Pipfile.lock": "pipenv", "requirements.txt": "pip", "poetry.lock": "poetry", "uv.lock": "uv"}
TOOL_NAMES = {"Pipfile.lock": "Pipenv", "requirements.txt": "pip", "poetry.lock": "Poetry", "uv.lock": "uv"}
EXPORT_COMMANDS = {
    # --locked, as the buildpack's `uv sync --locked`: a uv.lock behind pyproject.toml fails the build.
    "uv.lock": (
        "uv",
        "export",
        "--locked",
        "--format",
        "requirements-txt",
        "--no-hashes",
        "--no-dev",
        "--no-emit-project",
    ),
    "poetry.lock": ("poetry", "export", "--format", "requirements.txt", "--without-hashes", "--only", "main"),
}
# What the buildpack's `poetry sync` refuses before installing: a poetry.lock behind pyproject.toml.
LOCK_CHECKS = {"poetry.lock": ("poetry", "check", "--lock")}
INCLUDE = re.compile(r"^\s*(?:-r|-c|--requirement|--constraint)[\s=]*(\S+)")
PRINT_VERSION = "import sys; print('%d.%d.%d' % sys.version_info[:3])"
# Config vars the buildpack never exports into the build (buildpack-stdlib's export_env blacklist).
NOT_EXPORTED = frozenset({"PATH", "CPATH", "CPPATH", "LD_PRELOAD", "LIBRARY_PATH", "LD_LIBRARY_PATH", "PYTHONHOME"})
# The default source plette adds to a Pipfile without one, before hashing it.
PIPENV_DEFAULT_SOURCE = {"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": True}
PIPFILE_SECTIONS = frozenset(
    {"source", "packages", "dev-packages", "requires", "scripts", "pipfile", "pipenv", "default", "develop"}
)


@dataclass(frozen=True)
class Interpreter:
    executable: str
    version: str  # "3.11.7"


@dataclass(frozen=True)
class Dependencies:
    file: str  # the dependency file the buildpack would pick
    fingerprint: str  # sha256 of everything that decides what gets installed
    # Requirement lines already read from `file`; None when pip reads `file` itself (requirements.txt)
    # or when uv/poetry must export it at install time.
    requirements: tuple[str, ...] | None

    @property
    def package_manager(self) -> str:
        return LOCK_FILES[self.file]


def check_source(slug_dir: Path, say: Say) -> None:
    """What the buildpack refuses to find in an app's source: its own install folder, a virtualenv."""
    if (slug_dir / ".heroku" / "python").exists():
        raise failure(
            say,
            "Existing '.heroku/python/' directory found.",
            [
                "",
                "Your app's source code contains an existing directory named",
                "'.heroku/python/', which is where the Python buildpack needs",
                "to install its files.",
            ],
            "Existing '.heroku/python/' directory found: Heroku's Python buildpack fails the build; "
            "delete it from the repository (or the hook that makes it)",
        )
    for name in (".venv", "venv"):
        if (slug_dir / name / "pyvenv.cfg").is_file():
            raise failure(
                say,
                f"Existing '{name}/' directory found.",
                [
                    "",
                    "Your app's source code contains an existing directory named",
                    f"'{name}/', which looks like a Python virtual environment.",
                ],
                f"Existing '{name}/' directory found: Heroku's Python buildpack fails the build; "
                f"run 'git rm --cached -r {name}/', add {name}/ to .gitignore and commit",
            )


def find_python(slug_dir: Path, deps: Dependencies, say: Say) -> Interpreter:
    """The interpreter for the app: the requested minor version if this machine has it."""
    current = Interpreter(sys.executable, "%d.%d.%d" % sys.version_info[:3])
    request = python_version.requested(slug_dir, deps.package_manager, say)
    if request.version is None:
        say(
            f"{STEP}No Python version was specified. Using dynosim's own: Python {current.version} "
            f"(Heroku's buildpack would use Python {python_version.DEFAULT})"
        )
        python_version.check(request, deps.package_manager, say)
        return current
    say(f"{STEP}Using Python {request.version} specified in {request.origin}")
    python_version.check(request, deps.package_manager, say)
    wanted = request.major
    assert wanted is not None
    if _minor(current.version) == wanted:
        return current
    found = _interpreter_on_path(wanted)
    if found is None:
        say(
            f"{WARN}{request.origin} asks for Python {wanted}; this machine has {current.version}, "
            f"using it (Heroku would install {request.version})"
        )
        return current
    say(f"{INDENT}{found.executable} ({found.version})")
    return found


def find_dependencies(slug_dir: Path, say: Say) -> Dependencies:
    """The one package manager file, read, as the buildpack picks it; anything else fails the build."""
    if not (slug_dir / "Pipfile.lock").is_file() and (slug_dir / "Pipfile").is_file():
        raise failure(
            say,
            "No 'Pipfile.lock' found!",
            ["", "A 'Pipfile' file was found, however, the associated 'Pipfile.lock'", "Pipenv lockfile wasn't."],
            "No 'Pipfile.lock' found: Heroku's Python buildpack fails the build; run 'pipenv lock' "
            "and commit Pipfile.lock",
        )
    present = [name for name in LOCK_FILES if (slug_dir / name).is_file()]
    if len(present) > 1:
        raise failure(
            say,
            "Multiple Python package manager files were found.",
            [
                "",
                "Exactly one package manager file should be present in your app's",
                "source code, however, several were found:",
                "",
                *(f"{name} ({TOOL_NAMES[name]})" for name in present),
            ],
            f"Multiple Python package manager files were found ({', '.join(present)}): Heroku's "
            "Python buildpack needs exactly one; delete the others or list them in .slugignore",
        )
    if not present:
        raise _no_package_manager(slug_dir, say)
    [file] = present
    if file == "requirements.txt":
        return Dependencies(file, _requirements_fingerprint(slug_dir), None)
    if file == "Pipfile.lock":
        lines = _pipfile_lock_requirements(slug_dir / file, say)
        return Dependencies(file, _fingerprint("\n".join(lines)), lines)
    # The export reads pyproject.toml too: a change there must be seen (and its lock checked again).
    texts = [
        (slug_dir / name).read_text(errors="replace") if (slug_dir / name).is_file() else ""
        for name in (file, "pyproject.toml")
    ]
    return Dependencies(file, _fingerprint("\0".join(texts)), None)


def check_lockfile(deps: Dependencies, slug_dir: Path, say: Say) -> None:
    """pipenv install --deploy, which the buildpack runs, refuses a Pipfile.lock whose
    _meta.hash.sha256 is not the Pipfile's hash (a Pipfile edited after `pipenv lock`)."""
    if deps.file != "Pipfile.lock" or not (slug_dir / "Pipfile").is_file():
        return
    expected = _pipfile_hash(slug_dir / "Pipfile", say)
    if expected is None:
        return
    lock = json.loads((slug_dir / "Pipfile.lock").read_text(errors="replace"))
    recorded = str((lock.get("_meta") or {}).get("hash", {}).get("sha256") or "")
    if recorded == expected:
        return
    say(f"{STEP}Installing dependencies using 'pipenv install --deploy'")
    say(f"{INDENT}Your Pipfile.lock ({recorded}) is out of date. Expected: ({expected}).")
    say(f"{INDENT}ERROR:: Aborting deploy")
    raise failure(
        say,
        "Unable to install dependencies using Pipenv.",
        ["", "See the log output above for more information."],
        "Unable to install dependencies using Pipenv: Pipfile.lock is out of date with Pipfile "
        f"(its _meta.hash.sha256 is {recorded[:12] or 'missing'}…, the Pipfile's is "
        f"{expected[:12]}…); run 'pipenv lock' and commit Pipfile.lock",
    )


def exported_config(config_vars: Mapping[str, str]) -> dict[str, str]:
    """The config vars the buildpack exports into its hooks and collectstatic."""
    return {name: value for name, value in config_vars.items() if name not in NOT_EXPORTED}


def env_key(python: Interpreter, deps: Dependencies) -> str:
    """Names the dependency environment: the same interpreter and dependencies share one virtualenv."""
    material = f"{python.version}\0{os.path.realpath(python.executable)}\0{deps.file}\0{deps.fingerprint}"
    return _fingerprint(material)[:KEY_LENGTH]


def install_dependencies(deps: Dependencies, *, python: Interpreter, slug_dir: Path, venv: Path, say: Say) -> None:
    """Make `venv` hold `deps` unless it already does. It is built at its final path because a
    virtualenv's scripts hold absolute paths; the lock lets parallel builds share it."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / COMPLETE).exists():
            say(f"{STEP}Using cached dependencies ({venv.name[:12]})")
            return
        shutil.rmtree(venv, ignore_errors=True)  # what a build that died left behind
        try:
            _build_venv(deps, python, slug_dir, venv, say)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        (venv / COMPLETE).touch()


def run_hook(name: str, *, slug_dir: Path, venv: Path, env: Mapping[str, str], say: Say) -> None:
    """Run bin/<name> in the slug being built, as the buildpack does (with the app's config vars in
    `env`), if the app has one."""
    script = slug_dir / "bin" / name
    if not script.is_file():
        return
    say(f"{STEP}Running bin/{name} hook")
    if not script.is_symlink():  # chmod would follow a symlink out of the slug
        script.chmod(script.stat().st_mode | 0o111)
    try:
        code, _ = stream([str(script)], cwd=slug_dir, env=build_env(venv, env), say=say)
    except OSError as error:
        raise BuildError(
            f"bin/{name} could not be started ({error.strerror}): give it a #! line, e.g. #!/usr/bin/env bash"
        ) from None
    if code != 0:
        raise failure(
            say,
            f"Failed to run the bin/{name} script.",
            [
                "",
                f"We found a 'bin/{name}' script in your app source, so ran",
                "it to allow for customisation of the build process.",
                "",
                "However, this script exited with a non-zero exit status.",
            ],
            f"bin/{name} failed (exit {code}): fix the errors in its output above, or remove the script",
        )


def build_env(venv: Path | None, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of pip and the hooks: like the buildpack's, with the virtualenv first on PATH."""
    # The bytecode belongs in the virtualenv and the slug, as Heroku's build leaves it: a dyno that
    # compiles at every boot starts slower and writes into its own layer, which each restart wipes.
    dropped = ("PYTHONHOME", "PYTHONPATH", "PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE")
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **extra)
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    return env


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _interpreter_on_path(minor: str) -> Interpreter | None:
    executable = shutil.which(f"python{minor}")
    if executable is None:
        return None
    try:
        proc = subprocess.run(
            [executable, "-c", PRINT_VERSION], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = proc.stdout.strip()
    # A pyenv shim for a version that is not selected is on PATH but fails when run.
    if proc.returncode != 0 or _minor(version) != minor:
        return None
    return Interpreter(executable, version)


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _requirements_fingerprint(slug_dir: Path) -> str:
    """requirements.txt and the files it includes with -r/-c, which change what pip installs."""
    seen: dict[Path, str] = {}
    pending = [slug_dir / "requirements.txt"]
    while pending:
        path = pending.pop()
        if path in seen or not path.is_file() or not path.resolve().is_relative_to(slug_dir.resolve()):
            continue  # a missing or outside include is pip's to report
        seen[path] = path.read_text(errors="replace")
        pending += [path.parent / match.group(1) for match in map(INCLUDE.match, seen[path].splitlines()) if match]
    return _fingerprint("".join(f"{path.relative_to(slug_dir)}\0{text}\0" for path, text in sorted(seen.items())))


def _pipfile_lock_requirements(path: Path, say: Say) -> tuple[str, ...]:
    try:
        packages = json.loads(path.read_text(errors="replace")).get("default", {})
    except (ValueError, AttributeError) as error:
        raise failure(
            say,
            "Can't parse Pipfile.lock.",
            ["", "A Pipfile.lock file was found, however, it couldn't be parsed:", str(error)],
            f"Can't parse Pipfile.lock ({error}): run 'pipenv lock' to regenerate it",
        ) from None
    lines = []
    for name, entry in sorted(packages.items()):
        extras = f"[{','.join(entry['extras'])}]" if entry.get("extras") else ""
        markers = f" ; {entry['markers']}" if entry.get("markers") else ""
        if "version" in entry:
            requirement = f"{name}{extras}{entry['version']}"
        elif "git" in entry:
            url = entry["git"] if entry["git"].startswith("git+") else f"git+{entry['git']}"
            requirement = f"{name}{extras} @ {url}" + (f"@{entry['ref']}" if entry.get("ref") else "")
        elif "file" in entry:
            requirement = f"{name}{extras} @ {entry['file']}"
        else:
            raise BuildError(
                f"Pipfile.lock: dynosim cannot install '{name}' (a local path?); export a requirements.txt instead"
            )
        lines.append(requirement + markers)
    return tuple(lines)


def _no_package_manager(slug_dir: Path, say: Say) -> BuildError:
    if (slug_dir / "setup.py").is_file():
        return failure(
            say,
            "Implicit setup.py file support has been sunset.",
            ["", "Your app currently only has a setup.py file and no Python", "package manager files."],
            "Implicit setup.py file support has been sunset: Heroku's Python buildpack fails the "
            "build; add a requirements.txt holding the line --editable .",
        )
    contents = sorted(f"{p.name}/" if p.is_dir() and not p.is_symlink() else p.name for p in slug_dir.iterdir())
    pyproject = (
        "pyproject.toml alone is not enough: lock it (uv lock, poetry lock) or " if "pyproject.toml" in contents else ""
    )
    return failure(
        say,
        "Couldn't find any supported Python package manager files.",
        [
            "",
            "A Python app on Heroku must have either a 'requirements.txt',",
            "'Pipfile.lock', 'poetry.lock' or 'uv.lock' package manager file",
            "in the root directory of its source code.",
            "",
            "Currently the root directory of your app contains:",
            "",
            *contents,
            "",
            "If your app has no dependencies, then create an empty 'requirements.txt' file.",
        ],
        "Couldn't find any supported Python package manager files: Heroku's Python buildpack "
        f"fails the build; {pyproject}add a requirements.txt (an empty one if the app needs no "
        "packages) and commit it",
    )


def _pipfile_hash(path: Path, say: Say) -> str | None:
    """The hash pipenv records in Pipfile.lock: plette's Pipfile.get_hash() with package names in
    their PEP 503 form, as pipenv 2026.7.1 (the buildpack's) computes it. None where Python cannot
    read TOML (3.10)."""
    try:
        import tomllib  # only apps with a Pipfile pay for it
    except ModuleNotFoundError:
        say(
            f"{WARN}dynosim on Python 3.10 cannot read Pipfile: it does not check that Pipfile.lock is "
            "up to date, as Heroku's build does (run dynosim with Python 3.11+)"
        )
        return None

    try:
        data = tomllib.loads(path.read_text(errors="replace"))
    except tomllib.TOMLDecodeError as error:
        raise failure(
            say,
            "Unable to install dependencies using Pipenv.",
            ["", f"Pipfile is not valid TOML: {error}"],
            f"Pipfile is not valid TOML ({error}): fix it and run 'pipenv lock'",
        ) from None

    def canonical(section: object) -> object:
        if not isinstance(section, dict):
            return section
        return {re.sub(r"[-_.]+", "-", name).lower(): value for name, value in section.items()}

    content = {
        "_meta": {"sources": data.get("source", [PIPENV_DEFAULT_SOURCE]), "requires": data.get("requires", {})},
        "default": canonical(data.get("packages", {})),
        "develop": canonical(data.get("dev-packages", {})),
        **{category: canonical(values) for category, values in data.items() if category not in PIPFILE_SECTIONS},
    }
    return _fingerprint(json.dumps(content, sort_keys=True, separators=(",", ":")))


def _build_venv(deps: Dependencies, python: Interpreter, slug_dir: Path, venv: Path, say: Say) -> None:
    say(f"{STEP}Creating virtualenv with Python {python.version}")
    proc = subprocess.run(
        [python.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BuildError(
            f"creating a virtualenv with {python.executable} failed: "
            f"{_last_line(proc.stderr + proc.stdout)}; check that this Python works"
        )
    requirements = _requirements_file(deps, slug_dir, venv, say)
    lines = [line.strip() for line in requirements.read_text(errors="replace").splitlines()]
    if not any(line and not line.startswith("#") for line in lines):
        say(f"{INDENT}{deps.file} lists no packages")
        return
    what = "requirements" if deps.file == "requirements.txt" else f"dependencies from {deps.file}"
    say(f"{STEP}Installing {what} with pip")
    code, error = _pip_install(requirements, venv, slug_dir, say)
    if code != 0:
        raise failure(
            say,
            f"Unable to install dependencies using {TOOL_NAMES[deps.file]}.",
            ["", "See the log output above for more information."],
            f"pip install failed (exit {code}): {error} – fix {deps.file}",
        )


def _requirements_file(deps: Dependencies, slug_dir: Path, venv: Path, say: Say) -> Path:
    if deps.file == "requirements.txt":
        return slug_dir / deps.file  # read in place, so its relative -r includes resolve
    # Kept in the virtualenv: a record of what it was built from, outside the slug.
    written = venv / "dynosim-requirements.txt"
    if deps.requirements is not None:
        written.write_text("".join(f"{line}\n" for line in deps.requirements))
        return written
    command = EXPORT_COMMANDS[deps.file]
    tool = command[0]
    if shutil.which(tool) is None:
        raise BuildError(
            f"{deps.file} needs the {tool} tool, which is not on PATH: install {tool}, "
            f"or export a requirements.txt and list {deps.file} in .slugignore"
        )
    for step in (LOCK_CHECKS.get(deps.file), command):
        if step is None:
            continue
        say(
            f"{STEP}Running '{' '.join(step[:3])}'"
            if step is not command
            else f"{STEP}Exporting {deps.file} with {tool}"
        )
        proc = subprocess.run(step, cwd=slug_dir, capture_output=True, text=True, env=build_env(None, {}), check=False)
        if proc.returncode != 0:
            for line in (proc.stderr + proc.stdout).splitlines():
                say(f"{INDENT}{line}")
            raise failure(
                say,
                f"Unable to install dependencies using {TOOL_NAMES[deps.file]}.",
                ["", "See the log output above for more information."],
                f"'{' '.join(step[:3])}' failed (exit {proc.returncode}): {_last_line(proc.stderr + proc.stdout)}",
            )
    written.write_text(proc.stdout)
    return written


def _pip_install(requirements: Path, venv: Path, slug_dir: Path, say: Say) -> tuple[int, str]:
    """pip of the running interpreter installs into the virtualenv (--python), so the virtualenv
    needs no pip of its own; pip's download cache is shared as usual. The path is relative to the
    slug, so pip's lines read "-r requirements.txt" as in Heroku's build log."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(venv / "bin" / "python"),
        "install",
        "--progress-bar",
        "off",
        "-r",
        os.path.relpath(requirements, slug_dir),
    ]
    from rich.console import Console  # only now: an unchanged rebuild never pays for importing rich

    console = Console()
    # On a terminal a status line counts pip's steps; elsewhere its lines are enough.
    status = console.status("pip: starting") if console.is_terminal else None
    collected = 0

    def show_progress(line: str) -> None:
        nonlocal collected
        if status is not None and line.startswith("Collecting "):
            collected += 1
            status.update(f"pip: collecting ({collected} so far)")
        elif status is not None and line.startswith("Installing collected packages"):
            status.update(f"pip: installing ({collected} collected)")

    with status if status is not None else nullcontext():
        return stream(command, cwd=slug_dir, env=build_env(venv, {}), say=say, watch=show_progress)


def stream(
    command: list[str], *, cwd: Path, env: Mapping[str, str], say: Say, watch: Callable[[str], None] | None = None
) -> tuple[int, str]:
    """Run `command`, passing each output line to `say` indented as it comes; return its exit code
    and the line that best says why it failed (its last ERROR line, else its last line)."""
    last = error = ""
    # its own process group, which an interrupted build kills whole: Popen's own exit leaves a child
    # running on KeyboardInterrupt (the terminal's Ctrl-C would have reached it; a `kill -INT` does not),
    # and a hook's children (a shell script's) outlive their shell
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        process_group=0,
    ) as proc:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.rstrip()
                say(f"{INDENT}{line}")
                if watch is not None:
                    watch(line)
                if line.strip():
                    last = line.strip()
                if line.startswith("ERROR:"):
                    error = line.strip()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return proc.returncode, error or last or "no output"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
