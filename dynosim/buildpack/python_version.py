"""Which Python an app asks for, read and judged as Heroku's Python buildpack does
(lib/python_version.sh at heroku/heroku-buildpack-python b4e7e72): where it looks, what it refuses,
what it warns about."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from dynosim.buildpack.messages import Say, failure, warning

# The buildpack's own table; an N.N request gets the newest patch release it knows.
LATEST = {"3.10": "3.10.21", "3.11": "3.11.16", "3.12": "3.12.14", "3.13": "3.13.15", "3.14": "3.14.7"}
DEFAULT = "3.14"  # the buildpack's version for an app that names none
OLDEST_MINOR, NEWEST_MINOR = 10, 14
VERSION = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*))?")
RUNTIME_TXT = re.compile(r"python-(" + VERSION.pattern + ")")
# Misspellings of .python-version the buildpack refuses by name.
MISSPELLED = (
    " .python-version",
    ". python-version",
    ".python_version.txt",
    ".python_version",
    ".python-version ",
    ",python-version",
    ".python-version.",
    ".python-version.py",
    ".python-version.rtf",
    ".python-version.txt",
    ".python-version.TXT",
    ".Python-version",
    ".python.version",
    ".pythonversion",
    "'.python-version'",
    "python_version.txt",
    "python_version",
    "python-version.",
    "python-version.txt",
    "python-version",
)
BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
SAY_ONLY_MAJOR = "a .python-version file holding only the major version, e.g. " + DEFAULT


@dataclass(frozen=True)
class Request:
    version: str | None  # "3.12" or "3.12.4"; None when the app names none
    origin: str  # "runtime.txt", ".python-version", "Pipfile.lock"; "" when the app names none

    @property
    def major(self) -> str | None:
        return ".".join(self.version.split(".")[:2]) if self.version else None


def requested(slug_dir: Path, package_manager: str, say: Say) -> Request:
    """The version the app asks for, in the buildpack's order: runtime.txt, .python-version, then
    Pipfile.lock's python_full_version or python_version. A malformed request fails the build."""
    runtime_txt = slug_dir / "runtime.txt"
    if runtime_txt.is_file():
        return Request(_runtime_txt(runtime_txt, say), "runtime.txt")
    for name in MISSPELLED:
        if (slug_dir / name).is_file():
            raise failure(
                say,
                "Your .python-version file is spelled incorrectly.",
                ["", "Your app's .python-version file currently has the filename:", f"'{name}'"],
                f"'{name}' is not read by Heroku's Python buildpack, which fails the build: "
                "rename it to .python-version",
            )
    python_version = slug_dir / ".python-version"
    if python_version.is_file():
        return Request(_python_version_file(python_version, say), ".python-version")
    if package_manager == "pipenv":
        version = _pipfile_lock_version(slug_dir / "Pipfile.lock", say)
        if version is not None:
            return Request(version, "Pipfile.lock")
    return Request(None, "")


def check(request: Request, package_manager: str, say: Say) -> None:
    """The buildpack's refusals and warnings about a request, after its "Using Python" line."""
    if request.version is not None:
        _supported(request, say)
    if request.origin == "":
        if package_manager == "uv":
            raise failure(
                say,
                "No Python version was specified.",
                [
                    "",
                    "When using the package manager uv on Heroku, you must specify",
                    "your app's Python version with a .python-version file.",
                ],
                "No Python version was specified: with uv, Heroku's Python buildpack needs a "
                f".python-version file; run 'uv python pin {DEFAULT}' and commit it",
            )
        warning(
            say,
            "No Python version was specified.",
            [
                "",
                "Your app doesn't specify a Python version and so the buildpack",
                "picked a default version for you.",
                "",
                f"Please configure an explicit Python version for your app: {SAY_ONLY_MAJOR}.",
            ],
        )
    elif request.origin == "runtime.txt":
        if package_manager == "uv":
            raise failure(
                say,
                "The runtime.txt file isn't supported when using uv.",
                [
                    "",
                    "When using the package manager uv on Heroku, you must specify",
                    "your app's Python version with a .python-version file and not",
                    "a runtime.txt file.",
                ],
                "The runtime.txt file isn't supported when using uv: delete it and run "
                f"'uv python pin {request.major}', then commit",
            )
        warning(
            say,
            "The runtime.txt file is deprecated.",
            [
                "",
                "The runtime.txt file is deprecated since it has been replaced",
                "by the more widely supported .python-version file:",
                "https://devcenter.heroku.com/changelog-items/3141",
                "",
                (
                    f"Please switch to using a .python-version file instead: delete runtime.txt and "
                    f"write {request.major} into .python-version."
                ),
            ],
        )
    if request.major == "3.10":
        warning(
            say,
            "Support for Python 3.10 is deprecated!",
            [
                "",
                "Python 3.10 will reach its upstream end-of-life in October 2026,",
                "at which point it will no longer receive security updates.",
                "",
                "As such, support for Python 3.10 will be removed from this",
                "buildpack on 6th January 2027.",
            ],
        )
    if request.version is not None and request.major is not None and request.version.count(".") == 2:
        latest = LATEST[request.major]
        if int(request.version.split(".")[2]) < int(latest.split(".")[2]):
            warning(
                say,
                "A Python patch update is available!",
                [
                    "",
                    f"Your app is using Python {request.version}, however, there is a newer",
                    f"patch release of Python {request.major} available: {latest}",
                    "",
                    (
                        f"Update your {request.origin} file to use the new version, or name only "
                        f"the major version, {request.major}."
                    ),
                ],
            )


def _supported(request: Request, say: Say) -> None:
    assert request.version is not None
    major, minor = (int(part) for part in request.version.split(".")[:2])
    if major < 3 or (major == 3 and minor < OLDEST_MINOR):
        raise failure(
            say,
            "The requested Python version has reached end-of-life.",
            [
                "",
                f"Python {major}.{minor} has reached its upstream end-of-life, and is",
                "therefore no longer receiving security updates:",
                "https://devguide.python.org/versions/#supported-versions",
            ],
            f"The requested Python version has reached end-of-life: Heroku's Python buildpack "
            f"refuses Python {major}.{minor}; ask for at least 3.{OLDEST_MINOR} in {request.origin}",
        )
    if major > 3 or minor > NEWEST_MINOR:
        raise failure(
            say,
            "The requested Python version isn't recognised.",
            ["", f"The requested Python version {major}.{minor} isn't recognised."],
            f"The requested Python version isn't recognised: Heroku's Python buildpack knows "
            f"3.{OLDEST_MINOR} to 3.{NEWEST_MINOR}, not {major}.{minor}; change {request.origin}",
        )


def _trimmed_lines(path: Path) -> list[str]:
    """Non-empty lines not starting with #, stripped: what the buildpack reads as versions."""
    lines = (line.strip() for line in path.read_bytes().decode("utf-8", "replace").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _runtime_txt(path: Path, say: Say) -> str:
    text = "\n".join(_trimmed_lines(path))
    match = RUNTIME_TXT.fullmatch(text)
    if match is None:
        raise failure(
            say,
            "Invalid Python version in runtime.txt.",
            ["", "The Python version specified in your runtime.txt file isn't", "in the correct format."],
            f"Invalid Python version in runtime.txt ({text[:40]!r}): Heroku's build fails; delete "
            f"runtime.txt (it is deprecated) and use {SAY_ONLY_MAJOR}",
        )
    return match.group(1)


def _python_version_file(path: Path, say: Say) -> str:
    versions = _trimmed_lines(path)
    for version in versions:
        if VERSION.fullmatch(version):
            continue
        if path.read_bytes().startswith(BOMS):
            raise failure(
                say,
                "Unable to read .python-version.",
                ["", "Your .python-version file couldn't be read because it's using", "an unsupported text encoding."],
                "Unable to read .python-version: save it as UTF-8 without a BOM",
            )
        raise failure(
            say,
            "Invalid Python version in .python-version.",
            [
                "",
                "The Python version specified in your .python-version file",
                "isn't in the correct format.",
                "",
                "The following version was found:",
                version,
            ],
            f"Invalid Python version in .python-version ({version[:40]!r}): write the major "
            f"version only, e.g. {DEFAULT}, without quotes, 'python-' or wildcards",
        )
    if not versions:
        raise failure(
            say,
            "No Python version found in .python-version.",
            ["", "No Python version was found in your .python-version file."],
            f"No Python version found in .python-version: write e.g. {DEFAULT} in it "
            "(a line starting with # is a comment)",
        )
    if len(versions) > 1:
        raise failure(
            say,
            "Multiple Python versions found in .python-version.",
            ["", "Multiple versions were found in your .python-version file:", "", *versions],
            f"Multiple Python versions found in .python-version ({', '.join(versions)}): keep only one",
        )
    return versions[0]


def _pipfile_lock_version(path: Path, say: Say) -> str | None:
    try:
        requires = json.loads(path.read_text(errors="replace")).get("_meta", {}).get("requires", {})
        version = requires.get("python_full_version") or requires.get("python_version")
    except (ValueError, AttributeError) as error:
        raise failure(
            say,
            "Can't parse Pipfile.lock.",
            ["", "A Pipfile.lock file was found, however, it couldn't be parsed:", str(error)],
            f"Can't parse Pipfile.lock ({error}): run 'pipenv lock' to regenerate it",
        ) from None
    if version is None:
        return None
    if not isinstance(version, str) or VERSION.fullmatch(version) is None:
        raise failure(
            say,
            "Invalid Python version in Pipfile.lock.",
            [
                "",
                "The Python version specified in your Pipfile.lock file by the",
                "'python_version' or 'python_full_version' fields isn't valid.",
                "",
                "The following version was found:",
                str(version),
            ],
            f"Invalid Python version in Pipfile.lock ({version!r}): fix python_version in "
            "Pipfile and run 'pipenv lock'",
        )
    return version
