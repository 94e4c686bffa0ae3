"""What Heroku's Python buildpack does to a slug: pick the interpreter, install the dependencies
into a shared virtualenv, and run bin/pre_compile and bin/post_compile."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path


from dynosim.errors import BuildError

STEP = "-----> "
INDENT = "       "
WARN = " !     "
COMPLETE = ".complete"  # written last into a virtualenv: it is whole and can be shared
KEY_LENGTH = 32  # hex digits naming a virtualenv; short enough to keep script shebangs short
# The buildpack needs exactly one of these; each names the tool that reads it.
LOCK_FILES = {"requirements.txt": "pip", "Pipfile.lock": "pipenv", "poetry.lock": "poetry", "uv.lock": "uv"}
EXPORT_COMMANDS = {
    "uv.lock": ("uv", "export", "--frozen", "--format", "requirements-txt", "--no-hashes",
                "--no-dev", "--no-emit-project"),
    "poetry.lock": ("poetry", "export", "--format", "requirements.txt", "--without-hashes",
                    "--only", "main"),
}
INCLUDE = re.compile(r"^\s*(?:-r|-c|--requirement|--constraint)[\s=]*(\S+)")
RUNTIME_TXT = re.compile(r"python-(\d+\.\d+(?:\.\d+)?)")
VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?")
PRINT_VERSION = "import sys; print('%d.%d.%d' % sys.version_info[:3])"

Say = Callable[[str], None]


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


def find_python(slug_dir: Path, say: Say) -> Interpreter:
    """The interpreter for the app: the requested minor version if this machine has it."""
    current = Interpreter(sys.executable, "%d.%d.%d" % sys.version_info[:3])
    requested, source = _requested_version(slug_dir)
    if requested is None:
        say(f"{STEP}No Python version was specified. Using dynosim's own: Python {current.version}")
        return current
    wanted = _minor(requested)
    if _minor(current.version) == wanted:
        say(f"{STEP}Using Python {requested} specified in {source}")
        return current
    found = _interpreter_on_path(wanted)
    if found is None:
        say(f"{WARN}{source} asks for Python {wanted}; this machine has {current.version}, "
            f"using it (Heroku would install {requested})")
        return current
    say(f"{STEP}Using Python {requested} specified in {source}")
    say(f"{INDENT}{found.executable} ({found.version})")
    return found


def find_dependencies(slug_dir: Path, say: Say) -> Dependencies | None:
    """The one dependency file, read; None (with a warning) when the app declares none."""
    present = [name for name in LOCK_FILES if (slug_dir / name).is_file()]
    if len(present) > 1:
        raise BuildError(f"several Python dependency files ({', '.join(present)}): Heroku's Python "
                         "buildpack needs exactly one; delete the others or list them in .slugignore")
    if present == ["requirements.txt"]:
        return Dependencies("requirements.txt", _requirements_fingerprint(slug_dir), None)
    if present == ["Pipfile.lock"]:
        lines = _pipfile_lock_requirements(slug_dir / "Pipfile.lock")
        return Dependencies("Pipfile.lock", _fingerprint("\n".join(lines)), lines)
    if present:
        return Dependencies(present[0], _fingerprint((slug_dir / present[0]).read_text(errors="replace")),
                            None)
    if (slug_dir / "Pipfile").is_file():
        raise BuildError("Pipfile has no Pipfile.lock: run 'pipenv lock' and commit Pipfile.lock")
    project_deps = _pyproject_requirements(slug_dir / "pyproject.toml")
    if project_deps is not None:
        say(f"{WARN}pyproject.toml without requirements.txt or a lock file: Heroku's Python buildpack "
            "would refuse this app; installing its [project] dependencies with pip")
        return Dependencies("pyproject.toml", _fingerprint("\n".join(project_deps)), project_deps)
    say(f"{WARN}No requirements.txt (or Pipfile.lock, poetry.lock, uv.lock): Heroku's Python buildpack "
        "would refuse this app; building it without dependencies")
    return None


def env_key(python: Interpreter, deps: Dependencies | None) -> str:
    """Names the dependency environment: the same interpreter and dependencies share one virtualenv."""
    material = f"{python.version}\0{os.path.realpath(python.executable)}\0"
    if deps is not None:
        material += f"{deps.file}\0{deps.fingerprint}"
    return _fingerprint(material)[:KEY_LENGTH]


def install_dependencies(deps: Dependencies, *, python: Interpreter, slug_dir: Path, venv: Path,
                         say: Say) -> None:
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


def run_hook(name: str, *, slug_dir: Path, venv: Path | None, env: Mapping[str, str], say: Say) -> None:
    """Run bin/<name> in the slug being built, as the buildpack does, if the app has one."""
    script = slug_dir / "bin" / name
    if not script.is_file():
        return
    say(f"{STEP}Running bin/{name} hook")
    if not script.is_symlink():  # chmod would follow a symlink out of the slug
        script.chmod(script.stat().st_mode | 0o111)
    try:
        code, _ = _stream([str(script)], cwd=slug_dir, env=build_env(venv, env), say=say)
    except OSError as error:
        raise BuildError(f"bin/{name} could not be started ({error.strerror}): "
                         "give it a #! line, e.g. #!/usr/bin/env bash") from None
    if code != 0:
        raise BuildError(f"bin/{name} failed (exit {code}): fix the errors in its output above, "
                         "or remove the script")


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


def _requested_version(slug_dir: Path) -> tuple[str | None, str]:
    runtime_txt = slug_dir / "runtime.txt"
    if runtime_txt.is_file():
        text = runtime_txt.read_text(errors="replace").strip()
        match = RUNTIME_TXT.fullmatch(text)
        if match is None:
            raise BuildError(f"runtime.txt: '{text}' is not a Python version; write e.g. python-3.12")
        return match.group(1), "runtime.txt"
    python_version = slug_dir / ".python-version"
    if not python_version.is_file():
        return None, ""
    lines = [line.strip() for line in python_version.read_text(errors="replace").splitlines()]
    versions = [line for line in lines if line and not line.startswith("#")]
    if len(versions) != 1 or VERSION.fullmatch(versions[0]) is None:
        raise BuildError(f".python-version: expected one version like 3.12, found {versions or 'none'}; "
                         "fix the file")
    return versions[0], ".python-version"


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _interpreter_on_path(minor: str) -> Interpreter | None:
    executable = shutil.which(f"python{minor}")
    if executable is None:
        return None
    try:
        proc = subprocess.run([executable, "-c", PRINT_VERSION], capture_output=True, text=True,
                              timeout=30)
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
        pending += [path.parent / match.group(1)
                    for match in map(INCLUDE.match, seen[path].splitlines()) if match]
    return _fingerprint("".join(f"{path.relative_to(slug_dir)}\0{text}\0"
                                for path, text in sorted(seen.items())))


def _pipfile_lock_requirements(path: Path) -> tuple[str, ...]:
    try:
        packages = json.loads(path.read_text()).get("default", {})
    except (ValueError, AttributeError) as error:
        raise BuildError(f"Pipfile.lock is not valid ({error}): run 'pipenv lock' again") from None
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
            raise BuildError(f"Pipfile.lock: dynosim cannot install '{name}' (a local path?); "
                             "export a requirements.txt instead")
        lines.append(requirement + markers)
    return tuple(lines)


def _pyproject_requirements(path: Path) -> tuple[str, ...] | None:
    """[project] dependencies, or None when pyproject.toml is absent or does not list them."""
    if not path.is_file():
        return None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise BuildError("reading pyproject.toml needs Python 3.11+: run dynosim with it, "
                         "or add a requirements.txt") from None
    try:
        dependencies = tomllib.loads(path.read_text()).get("project", {}).get("dependencies")
    except tomllib.TOMLDecodeError as error:
        raise BuildError(f"pyproject.toml is not valid TOML ({error}): fix it") from None
    if dependencies is None:
        return None
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise BuildError("pyproject.toml: [project] dependencies must be a list of strings; fix it")
    return tuple(dependencies)


def _build_venv(deps: Dependencies, python: Interpreter, slug_dir: Path, venv: Path, say: Say) -> None:
    say(f"{STEP}Creating virtualenv with Python {python.version}")
    proc = subprocess.run([python.executable, "-m", "venv", "--without-pip", str(venv)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"creating a virtualenv with {python.executable} failed: "
                         f"{_last_line(proc.stderr + proc.stdout)}; check that this Python works")
    requirements = _requirements_file(deps, slug_dir, venv, say)
    lines = [line.strip() for line in requirements.read_text(errors="replace").splitlines()]
    if not any(line and not line.startswith("#") for line in lines):
        say(f"{INDENT}{deps.file} lists no packages")
        return
    what = "requirements" if deps.file == "requirements.txt" else f"dependencies from {deps.file}"
    say(f"{STEP}Installing {what} with pip")
    code, error = _pip_install(requirements, venv, slug_dir, say)
    if code != 0:
        raise BuildError(f"pip install failed (exit {code}): {error} – fix {deps.file}")


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
        raise BuildError(f"{deps.file} needs the {tool} tool, which is not on PATH: install {tool}, "
                         f"or export a requirements.txt and list {deps.file} in .slugignore")
    say(f"{STEP}Exporting {deps.file} with {tool}")
    proc = subprocess.run(command, cwd=slug_dir, capture_output=True, text=True,
                          env=build_env(None, {}))
    if proc.returncode != 0:
        raise BuildError(f"{tool} export failed (exit {proc.returncode}): "
                         f"{_last_line(proc.stderr + proc.stdout)}; export a requirements.txt instead")
    written.write_text(proc.stdout)
    return written


def _pip_install(requirements: Path, venv: Path, slug_dir: Path, say: Say) -> tuple[int, str]:
    """pip of the running interpreter installs into the virtualenv (--python), so the virtualenv
    needs no pip of its own; pip's download cache is shared as usual. The path is relative to the
    slug, so pip's lines read "-r requirements.txt" as in Heroku's build log."""
    command = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
               "--progress-bar", "off", "-r", os.path.relpath(requirements, slug_dir)]
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
        return _stream(command, cwd=slug_dir, env=build_env(venv, {}), say=say, watch=show_progress)


def _stream(command: list[str], *, cwd: Path, env: Mapping[str, str], say: Say,
            watch: Callable[[str], None] | None = None) -> tuple[int, str]:
    """Run `command`, passing each output line to `say` indented as it comes; return its exit code
    and the line that best says why it failed (its last ERROR line, else its last line)."""
    last = error = ""
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            say(f"{INDENT}{line}")
            if watch is not None:
                watch(line)
            if line.strip():
                last = line.strip()
            if line.startswith("ERROR:"):
                error = line.strip()
    return proc.returncode, error or last or "no output"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
