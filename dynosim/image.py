"""The app's release as an OCI image (`dynosim image`): the slug's files at /app on a Python base image,
its dependencies in /app/.heroku/python (where Heroku's buildpack puts the interpreter), `.profile.d`
sourced at start and an entrypoint that gives each process Heroku's environment.

Two images, each built once: the dependencies image (the base, the slug's packages, the entrypoint),
named by the slug's dependency environment and the base's id, and on it the app image (the slug's
files and the labels), named by the slug id. A one-file change rebuilds only the second, whose context
is the slug's files; an unchanged release builds nothing (its image is found by its labels: app, release,
slug, commit, base as named, in one call to the engine). A base pulled again under the same name serves
from the next release on (the dependencies image is keyed by the base's id), as on Heroku a stack update
reaches an app at its next build.

The dependencies are the slug's own when they can be: its virtualenv's site-packages are copied when the
base's Python has the slug's minor version and every package is pure Python or a manylinux wheel that
the base's glibc runs (a copy is a tar of files, no resolver, no network); otherwise this machine's pip
downloads wheels for the base's Python and platform and the build installs them from its own context,
with no index, since a build's network (its registry, its certificates) is not this machine's.
"""

from __future__ import annotations

import io
import os
import platform
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .app import load_app
from .buildpack import Slug, build_slug, default_cache_dir
from .errors import BuildError, DynosimError
from .export.model import image_tag
from .releases import ReleaseHistory

if TYPE_CHECKING:
    import docker
    import docker.models.images

APP_HOME = "/app"
PYTHON_HOME = "/app/.heroku/python"  # the image's virtualenv, where Heroku's buildpack puts Python
ENTRYPOINT = "/usr/local/bin/dynosim-dyno"
DEFAULT_PORT = "5000"
LABEL_APP = "dynosim.app"
LABEL_RELEASE = "dynosim.release"
LABEL_SLUG = "dynosim.slug"
LABEL_COMMIT = "dynosim.slug_commit"
LABEL_BASE = "dynosim.base"  # the base image as named (--base): another base is another image
LABEL_BASE_ID = "dynosim.base_id"  # the dependencies image's base, by id: a base pulled again is another
LABEL_DEPENDENCIES = "dynosim.dependencies"
DEPENDENCIES_REPOSITORY = "dynosim/dependencies"
BASE_VAR = "DYNOSIM_IMAGE_BASE"
BUILD_TIMEOUT = 900  # seconds the engine may take over one build (a pip install of many wheels)
GLIBC_MAX = 36  # Debian bookworm's glibc 2.36, the python:*-slim images' and the test base's
MANYLINUX_LEGACY = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}

# Heroku's runtime contract for one process. DYNO: what the orchestrator sets, else <type>.<replica>;
# an argument that is a Procfile process type runs its command, through bash as Heroku runs it.
DYNO_ENTRYPOINT = f"""#!/bin/bash
# dynosim's dyno entrypoint: Heroku's environment, .profile.d, then the process type's command
export HOME={APP_HOME} PORT="${{PORT:-{DEFAULT_PORT}}}"
if [ $# -le 1 ] && [ -r {APP_HOME}/Procfile ]; then
    wanted=${{1:-${{DYNO_TYPE:-web}}}}
    while IFS= read -r line || [ -n "$line" ]; do
        line=${{line%$'\\r'}}
        if [[ $line =~ ^([A-Za-z0-9_-]+):[[:space:]]*(.+)$ ]] && [ "${{BASH_REMATCH[1]}}" = "$wanted" ]; then
            export DYNO_TYPE=$wanted
            set -- bash -c "${{BASH_REMATCH[2]}}"
            break
        fi
    done < {APP_HOME}/Procfile
fi
export DYNO="${{DYNO:-${{DYNO_TYPE:-run}}.${{DYNO_REPLICA:-1}}}}"
cd {APP_HOME}
for script in {APP_HOME}/.profile.d/*.sh; do
    if [ -r "$script" ]; then . "$script"; fi
done
exec "$@"
"""


@dataclass(frozen=True)
class Image:
    id: str
    tag: str
    slug_id: str
    built: bool  # False: the image of this slug and release was there already
    dependencies: str  # "copied" (the slug's site-packages), "installed" (pip in the build), "cached"


def default_base(python_version: str) -> str:
    return os.environ.get(BASE_VAR) or f"python:{_minor(python_version)}-slim"


def connect() -> docker.DockerClient:
    """The engine's client, or one line saying there is none and what to do."""
    from .addons.backends.docker import NoEngine, probe

    try:
        client, _ = probe()
    except NoEngine as error:
        raise DynosimError(
            f"no Docker engine answers ({error.reason}): start one (dockerd, Docker Desktop) or set DOCKER_HOST"
        ) from None
    client.api.timeout = BUILD_TIMEOUT
    if client.api.base_url.startswith("http+docker://"):  # a unix socket, which no proxy serves
        client.api.trust_env = False  # requests would read every proxy variable at every call
    return client


def build_image(
    app_dir: Path,
    *,
    base: str | None = None,
    cache_dir: Path | None = None,
    client: docker.DockerClient | None = None,
    say: Callable[[str], None] = print,
) -> Image:
    """`dynosim image`: the current release's image, tagged v<N>; without a release, HEAD's slug, `:latest`."""
    folder = app_dir.resolve()
    app = load_app(folder)
    client = client or connect()  # no engine: said before a slug is built
    history = ReleaseHistory(app.state_dir)
    version = history.current_version()
    if version is not None:
        slug = history.slug(version)
    else:
        slug = build_slug(folder, cache_dir=cache_dir or default_cache_dir(), config_vars=app.config_vars, say=say)
    return release_image(slug, app_name=app.name, version=version, base=base, client=client, say=say)


def release_image(
    slug: Slug,
    *,
    app_name: str,
    version: int | None,
    base: str | None,
    client: docker.DockerClient,
    say: Callable[[str], None] = print,
) -> Image:
    """The image of `slug` as release `version` of `app_name`, built unless an image of it is there."""
    tag = image_tag(app_name, version)
    base = base or default_base(slug.python_version)
    labels = {
        LABEL_APP: app_name,
        LABEL_RELEASE: f"v{version}" if version is not None else "",
        LABEL_SLUG: slug.id,
        LABEL_COMMIT: slug.commit or "",
        LABEL_BASE: base,
    }
    # the release's own tag first: one lookup (0.9 ms against the filtered list's 3.6), the whole of an
    # unchanged release's cost
    tagged = _tagged(client, tag)
    if tagged is not None and all(
        (tagged.get("Config", {}).get("Labels") or {}).get(k) == v for k, v in labels.items()
    ):
        say(f"-----> Using cached image {_short(tagged['Id'])} ({tag})")
        return Image(str(tagged["Id"]), tag, slug.id, False, "cached")
    # the engine's image list, not images.list(): that one inspects every image it finds, one call each
    wanted = [f"{key}={value}" for key, value in labels.items() if value]
    for found in client.api.images(filters={"label": wanted}):
        if all((found.get("Labels") or {}).get(key) == value for key, value in labels.items()):
            if tag not in (found.get("RepoTags") or []):
                client.api.tag(found["Id"], *tag.rsplit(":", 1))
            say(f"-----> Using cached image {_short(found['Id'])} ({tag})")
            return Image(str(found["Id"]), tag, slug.id, False, "cached")
    started = time.monotonic()
    dependencies, how = _dependencies_image(client, slug, base, _base_id(client, base), say)
    say(f"-----> Building image {tag} from slug {slug.id[:12]}")
    image_id = _commit_layer(client, dependencies, _archive(_slug_files(slug.path)), tag, labels)
    say(f"       Built {_short(image_id)} in {time.monotonic() - started:.1f}s")
    return Image(image_id, tag, slug.id, True, how)


def _tagged(client: docker.DockerClient, tag: str) -> dict[str, Any] | None:
    from docker.errors import ImageNotFound

    try:
        found: dict[str, Any] = client.api.inspect_image(tag)
    except ImageNotFound:
        return None
    return found


def _commit_layer(client: docker.DockerClient, parent: str, files: bytes, tag: str, labels: Mapping[str, str]) -> str:
    """`parent` with `files` unpacked at / and `labels` set, committed as `tag`: what a build of FROM and
    COPY would make, in three calls (a build takes one more step, and a fifth of a second more, to set
    labels: measured 0.28 s against 0.15 s for the sample's slug)."""
    from docker.errors import APIError

    container = client.api.create_container(parent, labels={LABEL_APP: labels[LABEL_APP]})
    try:
        client.api.put_archive(container["Id"], "/", files)
        repository, _, version = tag.rpartition(":")
        committed = client.api.commit(
            container["Id"], repository=repository, tag=version, conf={"Labels": dict(labels)}
        )
    except APIError as error:
        raise BuildError(f"the engine refused the image's layer ({_api_reason(error)}); see `docker info`") from None
    finally:
        client.api.remove_container(container["Id"], force=True)
    return str(committed["Id"])


def _base_id(client: docker.DockerClient, base: str) -> str:
    from docker.errors import APIError, ImageNotFound

    try:
        return str(client.api.inspect_image(base)["Id"])
    except ImageNotFound:
        pass
    try:
        return str(client.images.pull(base).id)
    except APIError as error:
        raise BuildError(
            f"base image {base} is not on this engine and cannot be pulled ({_api_reason(error)}): "
            f"pull or build it, or set {BASE_VAR}=IMAGE (`dynosim image` also takes --base IMAGE)"
        ) from None


def _dependencies_image(
    client: docker.DockerClient, slug: Slug, base: str, base_id: str, say: Callable[[str], None]
) -> tuple[str, str]:
    """The base with the slug's packages and the entrypoint: its id, and how the packages got there."""
    if slug.venv is None:
        raise BuildError("the release's slug records no virtualenv (an older dynosim built it); run `dynosim run`")
    key = f"{slug.venv.name}-{base_id.removeprefix('sha256:')[:12]}"
    # an app image inherits its dependencies image's labels, and has a slug's besides
    for found in client.api.images(filters={"label": f"{LABEL_DEPENDENCIES}={key}"}):
        if LABEL_SLUG not in (found.get("Labels") or {}):
            return str(found["Id"]), "cached"
    base_python = _base_python(client, base, base_id)
    site = _site_packages(slug.venv)
    reason = _copy_refusal(site, slug.python_version, base_python)
    steps = [
        f"FROM {base}",
        f"ENV HOME={APP_HOME} PATH={PYTHON_HOME}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
        f"PYTHONUNBUFFERED=1 VIRTUAL_ENV={PYTHON_HOME}",
        f"COPY dynosim-dyno {ENTRYPOINT}",
    ]
    files: dict[str, tuple[bytes | Path, int]] = {"dynosim-dyno": (DYNO_ENTRYPOINT.encode(), 0o755)}
    lib = f"{PYTHON_HOME}/lib/python{_minor(base_python)}/site-packages"
    if reason is None:
        say(f"-----> Copying the slug's packages (Python {_minor(base_python)} on both sides, manylinux wheels)")
        steps.append(f"RUN python3 -m venv --without-pip {PYTHON_HOME}")
        # the bytecode too: the same minor version reads it, and dynos then start without compiling
        for path in _walk(site):
            files[f"site-packages/{path.relative_to(site).as_posix()}"] = (path, path.lstat().st_mode & 0o777)
        files.update(_scripts(slug.venv))
        for folder, target in (("site-packages", lib), ("bin", f"{PYTHON_HOME}/bin")):
            if any(name.startswith(f"{folder}/") for name in files):  # COPY of a folder the context lacks fails
                steps.append(f"COPY {folder}/ {target}/")
        how = "copied"
    else:
        say(f"-----> Installing the slug's packages in the image: {reason}")
        wheels = _wheels(site, base_python, slug.venv, say)
        files["requirements.txt"] = (
            "".join(f"{name}=={version}\n" for name, version in _installed(site)).encode(),
            0o644,
        )
        for wheel in wheels:
            files[f"wheels/{wheel.name}"] = (wheel, 0o644)
        steps += [
            "COPY requirements.txt wheels/ /tmp/dynosim-wheels/",
            f"RUN python3 -m venv {PYTHON_HOME} && {PYTHON_HOME}/bin/pip install -q --no-index --no-deps "
            f"--disable-pip-version-check --find-links /tmp/dynosim-wheels -r /tmp/dynosim-wheels/requirements.txt "
            f"&& rm -rf /tmp/dynosim-wheels",
        ]
        how = "installed"
    steps += [f"WORKDIR {APP_HOME}", f'ENTRYPOINT ["{ENTRYPOINT}"]', "CMD []"]
    context = _context("\n".join(steps) + "\n", files)
    # tagged: an untagged image with children is hidden from the image list (and `docker image prune` takes it)
    image = _build(
        client, context, f"{DEPENDENCIES_REPOSITORY}:{key}", {LABEL_DEPENDENCIES: key, LABEL_BASE_ID: base_id}, base
    )
    return str(image.id), how


def _build(
    client: docker.DockerClient,
    context: io.BytesIO,
    tag: str | None,
    labels: Mapping[str, str],
    base: str,
) -> docker.models.images.Image:
    from docker.errors import APIError
    from docker.errors import BuildError as DockerBuildError

    try:
        image, _ = client.images.build(
            fileobj=context, custom_context=True, tag=tag, labels=dict(labels), rm=True, forcerm=True, pull=False
        )
    except DockerBuildError as error:
        last = [str(line.get("stream") or line.get("error") or "").strip() for line in error.build_log]
        detail = next((line for line in reversed(last) if line), str(error))
        raise BuildError(
            f"the image build on {base} failed ({detail}): check that {base} has python3 with venv, "
            f"or pass another --base"
        ) from None
    except APIError as error:
        raise BuildError(f"the engine refused the image build ({_api_reason(error)}); see `docker info`") from None
    return image


def _api_reason(error: Exception) -> str:
    explanation = getattr(error, "explanation", None)
    return str(explanation or error).splitlines()[0]


def _context(dockerfile: str, files: Mapping[str, tuple[bytes | Path, int]]) -> io.BytesIO:
    """A build context: the Dockerfile and the files."""
    return io.BytesIO(_archive({"Dockerfile": (dockerfile.encode(), 0o644), **files}))


def _archive(files: Mapping[str, tuple[bytes | Path, int]]) -> bytes:
    """One tar in memory of each file at its name, with its mode and modification time (a .pyc holds its
    source's: with another time Python compiles it again, at every dyno's start)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.mode = mode
            if isinstance(content, Path):
                info.mtime = int(content.lstat().st_mtime)
                if content.is_symlink():
                    info.type, info.linkname = tarfile.SYMTYPE, os.readlink(content)
                    tar.addfile(info)
                    continue
                info.size = content.stat().st_size
                with open(content, "rb") as file:
                    tar.addfile(info, file)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _slug_files(slug: Path) -> dict[str, tuple[bytes | Path, int]]:
    return {f"app/{path.relative_to(slug).as_posix()}": (path, path.lstat().st_mode & 0o777) for path in _walk(slug)}


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
            yield Path(folder, name)


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3.*/site-packages"))
    if not found:
        raise BuildError(f"{venv}: the slug's virtualenv has no site-packages; delete it and build again")
    return found[0]


def _installed(site: Path) -> list[tuple[str, str]]:
    found = {(dist.metadata["Name"], dist.version) for dist in metadata.distributions(path=[str(site)])}
    return sorted(pair for pair in found if pair[0].lower() not in ("pip", "setuptools", "wheel"))


def _copy_refusal(site: Path, slug_python: str, base_python: str) -> str | None:
    """Why the slug's site-packages cannot run on the base's Python, or None when they can."""
    if not any(site.glob("*.dist-info")) and not any(site.glob("*.egg-info")):
        return None  # no packages: nothing to copy, whatever the versions
    if _minor(slug_python) != _minor(base_python):
        return f"the slug's Python is {_minor(slug_python)}, the base's {_minor(base_python)}"
    for wheel_file in sorted(site.glob("*.dist-info/WHEEL")):
        tags = [
            line.split(":", 1)[1].strip() for line in wheel_file.read_text().splitlines() if line.startswith("Tag:")
        ]
        if not tags or not any(_runs_on_base(tag) for tag in tags):
            package = wheel_file.parent.name.removesuffix(".dist-info")
            return f"{package} was built on this machine ({', '.join(tags) or 'no wheel tag'}), not a manylinux wheel"
    if any(site.glob("*.egg-info")) or any(site.glob("__editable__*")) or any(site.glob("*.egg-link")):
        return "the slug has a package installed from source or in editable mode"
    return None


def _runs_on_base(tag: str) -> bool:
    platforms = tag.rsplit("-", maxsplit=1)[-1].split(".")
    for name in platforms:
        if name == "any":
            return True
        legacy = name.rsplit("_", 1)[0]
        if legacy in MANYLINUX_LEGACY:
            return True
        match = re.match(r"manylinux_2_(\d+)_", name)
        if match and int(match.group(1)) <= GLIBC_MAX:
            return True
    return False


def _scripts(venv: Path) -> dict[str, tuple[bytes | Path, int]]:
    """The virtualenv's console scripts with their #! pointed at the image's Python (they name the
    host's virtualenv); the interpreter links the image's venv made itself are left out."""
    scripts: dict[str, tuple[bytes | Path, int]] = {}
    host_python = f"#!{venv}/bin/python"
    for path in sorted((venv / "bin").iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_bytes()
        if not text.startswith(host_python.encode()):
            continue
        rest = text.partition(b"\n")[2]
        scripts[f"bin/{path.name}"] = (f"#!{PYTHON_HOME}/bin/python\n".encode() + rest, 0o755)
    return scripts


def _base_python(client: docker.DockerClient, base: str, base_id: str) -> str:
    """The base's Python version: its PYTHON_VERSION (the official images set it), else asked of it."""
    from docker.errors import APIError

    env = client.images.get(base_id).attrs.get("Config", {}).get("Env") or []
    declared = next((item.split("=", 1)[1] for item in env if item.startswith("PYTHON_VERSION=")), None)
    if declared and re.match(r"^3\.\d+", declared):
        return declared
    # created, started and removed step by step: run(remove=True) leaves the container when it cannot start
    container = client.api.create_container(
        base_id, ["python3", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], entrypoint=[]
    )
    try:
        client.api.start(container["Id"])
        code = client.api.wait(container["Id"], timeout=60).get("StatusCode")
        output = client.api.logs(container["Id"], stdout=True, stderr=False)
    except APIError as error:
        reason = _api_reason(error)
        why = "not on its PATH" if "executable file not found" in reason else reason
        raise BuildError(
            f"base image {base} has no python3 to run ({why}): pass a Python image with --base "
            f"(python:3.X-slim) or set {BASE_VAR}"
        ) from None
    finally:
        client.api.remove_container(container["Id"], force=True)
    if code != 0 or not re.match(rb"^3\.\d+\.\d+", output.strip()):
        raise BuildError(
            f"base image {base}: its python3 did not say its version (exit {code}): pass a Python image with --base "
            f"(python:3.X-slim) or set {BASE_VAR}"
        )
    return output.decode().strip()


def _wheels(site: Path, base_python: str, venv: Path, say: Callable[[str], None]) -> list[Path]:
    """Wheels of every installed package for the base's Python and this machine's architecture,
    downloaded once by this machine's pip into the cache (beside the slug's virtualenv)."""
    minor = _minor(base_python)
    folder = venv.parent.parent / "image-wheels" / f"{venv.name}-py{minor}"
    done = folder / ".complete"
    if done.exists():
        return sorted(folder.glob("*.whl"))
    folder.mkdir(parents=True, exist_ok=True)
    requirements = [f"{name}=={version}" for name, version in _installed(site)]
    arch = platform.machine()
    platforms = [f"manylinux_2_{n}_{arch}" for n in range(GLIBC_MAX, 16, -1)]
    platforms += [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(folder)]
    command += ["--python-version", minor, "--implementation", "cp", "--abi", f"cp{minor.replace('.', '')}"]
    command += [arg for name in platforms for arg in ("--platform", name)] + requirements
    if requirements:
        say(f"       pip download {len(requirements)} wheels for Python {minor}")
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise BuildError(
                f"pip download for the image's Python {minor} failed ({lines[-1] if lines else proc.returncode}): "
                "pass a --base with the slug's Python, or pin versions that have manylinux wheels"
            )
    done.touch()
    return sorted(folder.glob("*.whl"))


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
