import json
import os
import stat
from pathlib import Path

import pytest

from dynosim.config import ConfigStore, load_dotenv, resolve_config_vars, state_dir
from dynosim.errors import ConfigError
from dynosim.manifest import Manifest, parse_manifest


def dotenv(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / ".env"
    path.write_text(text)
    return load_dotenv(path)


def dotenv_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        dotenv(tmp_path, text)
    return str(caught.value)


def manifest(env: dict[str, object]) -> Manifest:
    return parse_manifest(json.dumps({"env": env}), Path("app.json"))


def test_dotenv_reads_what_python_dotenv_reads(tmp_path: Path) -> None:
    values = dotenv(
        tmp_path,
        "# settings\n"
        "export DEBUG=1\n"
        "SINGLE='two words'\n"
        'DOUBLE="say \\"hi\\""\n'
        'CERT="-----BEGIN-----\nabc\n-----END-----"\n'
        "EMPTY=\n"
        "LEVEL=info # the log level\n"
        "FRAGMENT=page#top\n",
    )
    assert values == {
        "DEBUG": "1",
        "SINGLE": "two words",
        "DOUBLE": 'say "hi"',
        "CERT": "-----BEGIN-----\nabc\n-----END-----",
        "EMPTY": "",
        "LEVEL": "info",
        "FRAGMENT": "page#top",
    }


def test_dotenv_interpolates_earlier_values(tmp_path: Path) -> None:
    values = dotenv(tmp_path, "DB_HOST=localhost\nDB_PORT=5432\nDATABASE_URL=postgres://${DB_HOST}:${DB_PORT}/db\n")
    assert values["DATABASE_URL"] == "postgres://localhost:5432/db"


def test_dotenv_does_not_touch_os_environ(tmp_path: Path) -> None:
    before = dict(os.environ)
    dotenv(tmp_path, "DYNOSIM_TEST_ONLY_VAR=1\n")
    assert dict(os.environ) == before


def test_missing_dotenv_is_empty(tmp_path: Path) -> None:
    assert load_dotenv(tmp_path / ".env") == {}


def test_unparseable_dotenv_line_names_its_number(tmp_path: Path) -> None:
    message = dotenv_error(tmp_path, "A=1\n\n\nFOO BAR BAZ\nB=2\n")
    assert message == ".env:4: cannot parse 'FOO BAR BAZ'. Write KEY=VALUE (quote values with spaces)"


def test_unterminated_quote_is_refused(tmp_path: Path) -> None:
    assert dotenv_error(tmp_path, 'A="no end\nB=2\n').startswith(".env:1: cannot parse 'A=\"no end'")


def test_a_bare_name_without_value_is_refused(tmp_path: Path) -> None:
    message = dotenv_error(tmp_path, "A=1\n# comment\nFOO\n")
    assert message == ".env:3: FOO has no value; write FOO= for an empty value"


def test_an_invalid_dotenv_name_is_refused(tmp_path: Path) -> None:
    message = dotenv_error(tmp_path, "MY-VAR=1\n")
    assert message.startswith(".env:1: 'MY-VAR' is not a valid variable name; use letters, digits and _")


def test_state_dir_is_private_and_ignored_by_git(tmp_path: Path) -> None:
    path = state_dir(tmp_path)
    assert path == tmp_path / ".dynosim"
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert (path / ".gitignore").read_text() == "*\n"
    assert state_dir(tmp_path) == path


def test_config_store_round_trips_with_mode_0600(tmp_path: Path) -> None:
    store = ConfigStore(state_dir(tmp_path))
    assert store.load() == {}
    store.save({"SECRET_KEY": "s3cret", "EMPTY": ""})
    assert store.load() == {"SECRET_KEY": "s3cret", "EMPTY": ""}
    assert stat.S_IMODE((tmp_path / ".dynosim" / "config.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / ".dynosim").iterdir()) == [".gitignore", "config.json"]


def test_config_store_refuses_an_invalid_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'MY-VAR' is not a valid config var name; use letters, digits and _"):
        ConfigStore(state_dir(tmp_path)).save({"MY-VAR": "1"})


@pytest.mark.parametrize("content", ["{not json", "[]", '{"vars": {"A": 1}}', '{"generated": []}'])
def test_a_corrupt_config_file_says_to_fix_or_delete_it(tmp_path: Path, content: str) -> None:
    path = state_dir(tmp_path) / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        ConfigStore(path.parent).load()
    message = str(caught.value)
    assert message.startswith(f"{path}: unreadable config vars (")
    assert message.endswith("Fix the file or delete it and set them again")
    assert "\n" not in message


def test_generated_secret_is_stable_across_stores(tmp_path: Path) -> None:
    secret = ConfigStore(state_dir(tmp_path)).generated_secret("SECRET_KEY")
    assert len(secret) == 64 and int(secret, 16) >= 0
    assert ConfigStore(state_dir(tmp_path)).generated_secret("SECRET_KEY") == secret
    assert ConfigStore(state_dir(tmp_path)).generated_secret("OTHER_KEY") != secret


def test_saving_vars_keeps_generated_secrets(tmp_path: Path) -> None:
    store = ConfigStore(state_dir(tmp_path))
    secret = store.generated_secret("SECRET_KEY")
    store.save({"A": "1"})
    assert store.generated_secret("SECRET_KEY") == secret
    assert store.load() == {"A": "1"}


def test_precedence_app_json_then_dotenv_then_config_set(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("FROM_ENV=dotenv\nBOTH=dotenv\n")
    store = ConfigStore(state_dir(tmp_path))
    store.save({"BOTH": "config:set", "ONLY_SET": "x"})
    app = manifest({"FROM_ENV": "app.json", "BOTH": "app.json", "DEFAULT": "app.json"})
    assert resolve_config_vars(tmp_path, app, store) == {
        "FROM_ENV": "dotenv",
        "BOTH": "config:set",
        "DEFAULT": "app.json",
        "ONLY_SET": "x",
    }


def test_generated_secrets_are_used_and_kept(tmp_path: Path) -> None:
    store = ConfigStore(state_dir(tmp_path))
    app = manifest({"SECRET_KEY": {"generator": "secret"}})
    first = resolve_config_vars(tmp_path, app, store)["SECRET_KEY"]
    assert len(first) == 64
    assert resolve_config_vars(tmp_path, app, ConfigStore(state_dir(tmp_path)))["SECRET_KEY"] == first


def test_a_var_set_elsewhere_needs_no_generated_secret(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SECRET_KEY=mine\n")
    store = ConfigStore(state_dir(tmp_path))
    assert resolve_config_vars(tmp_path, manifest({"SECRET_KEY": {"generator": "secret"}}), store) == {
        "SECRET_KEY": "mine"
    }
    assert not (tmp_path / ".dynosim" / "config.json").exists()


def test_a_required_var_without_a_value_says_where_to_set_it(tmp_path: Path) -> None:
    app = manifest({"API_TOKEN": {"required": True, "description": "from the vendor"}})
    with pytest.raises(ConfigError) as caught:
        resolve_config_vars(tmp_path, app, ConfigStore(state_dir(tmp_path)))
    assert str(caught.value) == (
        "app.json: env API_TOKEN is required; set it in .env (API_TOKEN=...) or with dynosim config:set API_TOKEN=..."
    )
    (tmp_path / ".env").write_text("API_TOKEN=abc\n")
    assert resolve_config_vars(tmp_path, app, ConfigStore(state_dir(tmp_path))) == {"API_TOKEN": "abc"}
