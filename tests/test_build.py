"""The slug builder against real git repositories, real virtualenvs and real pip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dynosim.buildpack import Slug, build_slug
from dynosim.buildpack.python import find_dependencies
from dynosim.errors import BuildError

HELLO = Path(__file__).parent / "apps" / "hello"
PYTHON = "%d.%d.%d" % sys.version_info[:3]
MINOR = "%d.%d" % sys.version_info[:2]
# Versions Heroku's buildpack supports that this machine does not run dynosim with.
OTHER_MINORS = [f"3.{minor}" for minor in range(10, 15) if f"3.{minor}" != MINOR]


@pytest.fixture(autouse=True)
def plain_git(monkeypatch: pytest.MonkeyPatch) -> None:
    # The user's own git config (signing, hooks, templates) must not change these repositories.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def write(root: Path, files: dict[str, str | None]) -> None:
    """Write each file; None deletes it."""
    for name, text in files.items():
        if text is None:
            (root / name).unlink()
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def make_repo(root: Path, files: dict[str, str | None] | None = None, *, commit: bool = True) -> Path:
    """A git repository holding the hello app plus `files`, all committed."""
    shutil.copytree(HELLO, root, dirs_exist_ok=True)
    write(root, files or {})
    git(root, "init", "-q")
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "Dev")
    if commit:
        git(root, "add", "-A")
        git(root, "commit", "-qm", "first")
    return root


class Build:
    """One build and the lines it said."""

    def __init__(self, app: Path, cache: Path, *, dirty: bool = False) -> None:
        self.lines: list[str] = []
        self.slug: Slug = build_slug(app, cache_dir=cache, dirty=dirty, say=self.lines.append)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def files(self) -> set[str]:
        return {
            p.relative_to(self.slug.path).as_posix()
            for p in self.slug.path.rglob("*")
            if not p.is_dir() or p.is_symlink()
        }


def build(app: Path, tmp_path: Path, *, dirty: bool = False) -> Build:
    return Build(app, tmp_path / "cache", dirty=dirty)


# --- source ---------------------------------------------------------------------------------


def test_committed_files_only_and_uncommitted_ones_are_named(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app", {"lib/util.py": "X = 1\n"})
    os.symlink("lib/util.py", app / "util_link.py")
    write(tmp_path, {"outside/secret.txt": "not part of the app\n"})
    os.symlink(tmp_path / "outside", app / "outside_link")
    os.chmod(app / "app.py", 0o755)
    git(app, "add", "-A")
    git(app, "commit", "-qm", "link")
    (app / "app.py").write_text("# edited, not committed\n")
    (app / "new.py").write_text("NEW = 1\n")
    (app / ".gitignore").write_text("*.log\n")
    (app / "debug.log").write_text("ignored by git, so not worth a warning\n")

    result = build(app, tmp_path)

    head = git(app, "rev-parse", "HEAD")
    assert result.slug.commit == head
    assert result.slug.description == f"Deploy {head[:7]}"
    assert result.lines[0] == f"-----> Building source (Deploy {head[:7]})"
    assert result.files() == {"Procfile", "app.py", "requirements.txt", "lib/util.py", "util_link.py", "outside_link"}
    assert (result.slug.path / "app.py").read_text() == (HELLO / "app.py").read_text()
    # Symlinks stay symlinks, even those leading out of the app: nothing is copied through them.
    assert os.readlink(result.slug.path / "util_link.py") == "lib/util.py"
    assert os.readlink(result.slug.path / "outside_link") == str(tmp_path / "outside")
    assert os.access(result.slug.path / "app.py", os.X_OK)  # modes are kept
    assert (
        " !     3 files are not committed and will not be deployed (as on Heroku): "
        ".gitignore (untracked), app.py (modified), new.py (untracked)"
    ) in result.lines
    assert " !     Commit them, or use --dirty to include them" in result.lines
    assert result.lines[-1] == f"-----> Done: slug {result.slug.id[:12]}"
    assert result.lines[-2].startswith("-----> Compiled slug size: ")


def test_dirty_builds_the_working_tree(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app")
    (app / "app.py").write_text("# edited\n")
    (app / "new.py").write_text("NEW = 1\n")

    result = build(app, tmp_path, dirty=True)

    assert result.slug.description == "Deploy dirty working tree"
    assert result.slug.commit is None
    assert result.files() == {"Procfile", "app.py", "requirements.txt", "new.py"}
    assert (result.slug.path / "app.py").read_text() == "# edited\n"
    assert any("--dirty" in line and "Heroku would not see them" in line for line in result.lines)


def test_dirty_without_changes_is_the_commit(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app")
    result = build(app, tmp_path, dirty=True)
    assert result.slug.commit == git(app, "rev-parse", "HEAD")
    assert not any(line.startswith(" !") and "--dirty" in line for line in result.lines)


def test_many_uncommitted_files_are_capped(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app")
    write(app, {f"new{i}.py": "" for i in range(8)})
    result = build(app, tmp_path)
    warning = next(line for line in result.lines if "not committed" in line)
    assert warning.startswith(" !     8 files are not committed")
    assert warning.endswith("new4.py (untracked) and 3 more")


def test_app_in_a_subdirectory_of_a_repo(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "repo",
        {
            "fixtures/sample/Procfile": "web: python web.py\n",
            "fixtures/sample/requirements.txt": "",
            "fixtures/sample/web.py": "print('sample')\n",
            "fixtures/other/x.py": "",
        },
    )
    (repo / "fixtures/other/untracked.py").write_text("")  # outside the app: not its business
    (repo / "fixtures/sample/draft.py").write_text("")

    result = build(repo / "fixtures" / "sample", tmp_path)

    assert result.files() == {"Procfile", "requirements.txt", "web.py"}
    assert result.slug.commit == git(repo, "rev-parse", "HEAD")
    warning = next(line for line in result.lines if "not committed" in line)
    assert warning.endswith(": draft.py (untracked)")


def test_uncommitted_app_folder_inside_a_repo(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    write(repo, {"newapp/Procfile": "web: true\n", "newapp/requirements.txt": ""})
    with pytest.raises(BuildError, match="nothing under this folder is committed"):
        build(repo / "newapp", tmp_path)


def test_folder_outside_git_is_built_from_disk(tmp_path: Path) -> None:
    app = tmp_path / "plain"
    shutil.copytree(HELLO, app)
    write(
        app,
        {
            "__pycache__/app.cpython-311.pyc": "",
            "lib/mod.pyc": "",
            ".venv/bin/python": "",
            ".dynosim/config.json": "{}",
            "lib/mod.py": "",
        },
    )

    result = build(app, tmp_path)

    assert result.files() == {"Procfile", "app.py", "requirements.txt", "lib/mod.py"}
    assert result.slug.description == "Deploy (no git)"
    assert result.slug.commit is None
    assert (
        f" !     {app} is not a git repository: building from the files on disk; Heroku deploys only committed files"
    ) in result.lines


def test_repo_without_commits(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app", commit=False)
    with pytest.raises(
        BuildError,
        match=r"the git repository has no commits; commit your app "
        r"\(git add -A && git commit\) or run with --dirty",
    ):
        build(app, tmp_path)
    result = build(app, tmp_path, dirty=True)
    assert result.files() == {"Procfile", "app.py", "requirements.txt"}
    assert result.slug.commit is None


def test_state_dir_never_enters_the_slug(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app")
    write(app, {".dynosim/.gitignore": "*\n", ".dynosim/config.json": "{}"})
    assert build(app, tmp_path, dirty=True).files() == {"Procfile", "app.py", "requirements.txt"}


def test_slugignore(tmp_path: Path) -> None:
    app = make_repo(
        tmp_path / "app",
        {
            ".slugignore": "# big things\n*.psd\n!keep.psd\n/docs\ntests/\n",
            "art/logo.psd": "",
            "keep.psd": "",
            "docs/index.md": "",
            "src/docs/keep.md": "",
            "tests/test_app.py": "",
            "src/tests/test_x.py": "",
        },
    )

    result = build(app, tmp_path)

    assert result.files() == {"Procfile", "app.py", "requirements.txt", ".slugignore", "src/docs/keep.md"}
    assert " !     .slugignore:3: '!keep.psd' is ignored: Heroku's .slugignore has no ! negation" in result.lines
    assert "-----> Removed 5 paths matching .slugignore" in result.lines


# --- dependencies ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def six_app(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Build]:
    """An app with a PyPI dependency and both hooks, built once for the tests that read it."""
    root = tmp_path_factory.mktemp("six")
    app = make_repo(
        root / "app",
        {
            "requirements.txt": "six==1.16.0\n",
            # Left non-executable on purpose: the buildpack chmods hooks.
            "bin/pre_compile": '#!/bin/sh\necho pre ran\necho "$SOURCE_VERSION" > pre_compile.txt\n',
            "bin/post_compile": "#!/bin/sh\npython -c 'import six; print(six.__version__)' > post_compile.txt\n",
        },
    )
    return app, root / "cache", Build(app, root / "cache")


def test_requirements_are_installed_into_a_shared_venv(six_app: tuple[Path, Path, Build]) -> None:
    _app, cache, result = six_app
    venv = result.slug.venv
    assert venv is not None and venv.parent == cache / "venvs"
    assert not venv.is_relative_to(result.slug.path)
    subprocess.run([venv / "bin" / "python", "-c", "import six"], check=True)
    assert "-----> Installing requirements with pip" in result.lines
    assert any(line.startswith("       Collecting six==1.16.0") for line in result.lines)
    assert result.slug.python_version == PYTHON


def test_hooks_write_into_the_slug(six_app: tuple[Path, Path, Build]) -> None:
    app, _cache, result = six_app
    assert (result.slug.path / "pre_compile.txt").read_text().strip() == git(app, "rev-parse", "HEAD")
    # post_compile ran after the install, with the virtualenv first on PATH.
    assert (result.slug.path / "post_compile.txt").read_text().strip() == "1.16.0"
    pre = result.lines.index("-----> Running bin/pre_compile hook")
    install = result.lines.index("-----> Installing requirements with pip")
    post = result.lines.index("-----> Running bin/post_compile hook")
    assert pre < install < post
    assert result.lines[pre + 1] == "       pre ran"


def test_unchanged_app_reuses_slug_and_venv(six_app: tuple[Path, Path, Build]) -> None:
    app, cache, first = six_app
    assert first.slug.venv is not None
    marker = first.slug.venv / ".complete"
    before = marker.stat().st_mtime_ns

    again = Build(app, cache)

    assert again.slug == first.slug
    assert f"-----> Using cached dependencies ({first.slug.venv.name[:12]})" in again.lines
    assert f"-----> Using cached slug {first.slug.id[:12]}" in again.lines
    assert not any("pip" in line or "hook" in line for line in again.lines)
    assert marker.stat().st_mtime_ns == before


def test_unrelated_commit_keeps_the_slug_id(six_app: tuple[Path, Path, Build], tmp_path: Path) -> None:
    app, cache, first = six_app
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(app), str(clone)], check=True)
    git(clone, "config", "user.email", "dev@example.com")
    git(clone, "config", "user.name", "Dev")
    git(clone, "commit", "-q", "--allow-empty", "-m", "empty")
    again = Build(clone, cache)
    assert again.slug.id == first.slug.id
    assert again.slug.commit != first.slug.commit
    (clone / "app.py").write_text("print('changed')\n")
    git(clone, "commit", "-qam", "change")
    assert Build(clone, cache).slug.id != first.slug.id


def test_failing_install_leaves_no_venv(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app", {"requirements.txt": "dynosim-no-such-package-4711==9.9\n"})
    lines: list[str] = []
    with pytest.raises(BuildError) as failure:
        build_slug(app, cache_dir=tmp_path / "cache", say=lines.append)
    assert str(failure.value) == (
        "pip install failed (exit 1): ERROR: No matching distribution found "
        "for dynosim-no-such-package-4711==9.9 – fix requirements.txt"
    )
    assert "\n" not in str(failure.value)
    assert [p.suffix for p in (tmp_path / "cache" / "venvs").iterdir()] == [".lock"]
    assert list((tmp_path / "cache" / "slugs").iterdir()) == []


def test_no_dependency_file_fails_the_build(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app", {"requirements.txt": None})
    lines: list[str] = []
    with pytest.raises(
        BuildError,
        match=r"^Couldn't find any supported Python package manager files: .*"
        r"add a requirements.txt \(an empty one",
    ):
        build_slug(app, cache_dir=tmp_path / "cache", say=lines.append)
    assert " !     Error: Couldn't find any supported Python package manager files." in lines
    assert " !     Procfile" in lines and " !     app.py" in lines  # what the root holds, as Heroku lists it


def test_two_dependency_files(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app", {"Pipfile.lock": "{}"})
    with pytest.raises(
        BuildError,
        match=r"^Multiple Python package manager files were found \(Pipfile.lock, "
        r"requirements.txt\).*exactly one",
    ):
        build(app, tmp_path)


def test_pipfile_without_lock(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app", {"Pipfile": "[packages]\n"})
    with pytest.raises(BuildError, match=r"^No 'Pipfile\.lock' found: .*run 'pipenv lock'"):
        build(app, tmp_path)


def test_pipfile_lock_pins_default_packages(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "Pipfile.lock": """{"_meta": {}, "develop": {"pytest": {"version": "==8.0"}},
        "default": {"six": {"version": "==1.16.0", "markers": "python_version >= '3'"},
                    "requests": {"version": "==2.31.0", "extras": ["socks"]},
                    "lib": {"git": "https://example.com/lib.git", "ref": "abc123"}}}"""
        },
    )
    deps = find_dependencies(tmp_path, print)
    assert deps is not None and deps.requirements == (
        "lib @ git+https://example.com/lib.git@abc123",
        "requests[socks]==2.31.0",
        "six==1.16.0 ; python_version >= '3'",
    )


def test_uv_lock_needs_uv(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app", {"uv.lock": "version = 1\n", "requirements.txt": None, ".python-version": MINOR})
    if shutil.which("uv"):
        pytest.skip("uv is installed here")
    with pytest.raises(BuildError, match=r"uv\.lock needs the uv tool.*export a requirements\.txt"):
        build(app, tmp_path)


def test_uv_lock_is_exported_with_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "tools"
    write(tools, {"uv": "#!/bin/sh\necho '# exported by uv'\n"})
    (tools / "uv").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    app = make_repo(tmp_path / "app", {"uv.lock": "version = 1\n", "requirements.txt": None, ".python-version": MINOR})
    result = build(app, tmp_path)
    assert "-----> Exporting uv.lock with uv" in result.lines
    assert result.slug.venv is not None
    assert (result.slug.venv / "dynosim-requirements.txt").read_text() == "# exported by uv\n"


def test_parallel_builds_share_one_venv_and_slug(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app")
    results: list[Build] = []
    threads = [threading.Thread(target=lambda: results.append(build(app, tmp_path))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len({r.slug for r in results}) == 1
    assert sum("-----> Creating virtualenv" in r.output for r in results) == 1
    assert [p.name for p in (tmp_path / "cache" / "slugs").iterdir()] == [results[0].slug.id]


# --- hooks -----------------------------------------------------------------------------------


def test_failing_hook(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app", {"bin/post_compile": "#!/bin/sh\necho broken >&2\nexit 3\n"})
    lines: list[str] = []
    with pytest.raises(BuildError, match=r"^bin/post_compile failed \(exit 3\)"):
        build_slug(app, cache_dir=tmp_path / "cache", say=lines.append)
    assert "       broken" in lines
    assert list((tmp_path / "cache" / "slugs").iterdir()) == []


# --- Python version --------------------------------------------------------------------------


def test_python_version_not_on_this_machine(tmp_path: Path) -> None:
    missing = next((minor for minor in OTHER_MINORS if not shutil.which(f"python{minor}")), None)
    if missing is None:
        pytest.skip("every Python Heroku supports is installed here")
    app = make_repo(tmp_path / "app", {".python-version": f"# pinned\n{missing}\n"})
    result = build(app, tmp_path)
    assert (
        f" !     .python-version asks for Python {missing}; this machine has {PYTHON}, using it "
        f"(Heroku would install {missing})"
    ) in result.lines
    assert result.slug.python_version == PYTHON


def test_runtime_txt_comes_first_and_is_deprecated(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app", {"runtime.txt": f"python-{OTHER_MINORS[0]}.0\n", ".python-version": MINOR})
    result = build(app, tmp_path)
    assert f"-----> Using Python {OTHER_MINORS[0]}.0 specified in runtime.txt" in result.lines
    assert " !     Warning: The runtime.txt file is deprecated." in result.lines
    assert " !     Warning: A Python patch update is available!" in result.lines


def test_requested_python_found_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = OTHER_MINORS[-1]
    tools = tmp_path / "tools"
    # Says it is the other version, and is this one for the rest (the virtualenv, pip).
    write(
        tools,
        {
            f"python{other}": f'#!/bin/sh\ncase "$2" in *version_info*) echo {other}.2;; '
            f'*) exec {sys.executable} "$@";; esac\n'
        },
    )
    (tools / f"python{other}").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    app = make_repo(tmp_path / "app", {".python-version": f"{other}\n"})
    result = build(app, tmp_path)
    assert f"-----> Using Python {other} specified in .python-version" in result.lines
    assert result.slug.python_version == f"{other}.2"


def test_matching_python_version(tmp_path: Path) -> None:
    minor = ".".join(PYTHON.split(".")[:2])
    result = build(make_repo(tmp_path / "app", {".python-version": f"{minor}\n"}), tmp_path)
    assert f"-----> Using Python {minor} specified in .python-version" in result.lines


def test_bad_runtime_txt(tmp_path: Path) -> None:
    app = make_repo(tmp_path / "app", {"runtime.txt": "3.12\n"})
    with pytest.raises(BuildError, match=r"^Invalid Python version in runtime.txt \('3.12'\)"):
        build(app, tmp_path)


def test_the_virtualenv_keeps_its_bytecode_whatever_the_callers_python_settings(tmp_path, monkeypatch):
    """A venv without .pyc files makes every dyno boot recompile its dependencies."""
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    from dynosim.buildpack.python import build_env

    env = build_env(None, {})
    assert "PYTHONPYCACHEPREFIX" not in env and "PYTHONDONTWRITEBYTECODE" not in env
