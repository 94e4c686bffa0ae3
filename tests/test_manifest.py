import json
from pathlib import Path

import pytest

from dynosim.errors import ManifestError
from dynosim.manifest import AddonSpec, EnvSpec, FormationSpec, Manifest, load_manifest, parse_manifest

PATH = Path("/app/app.json")


def parse(data: object) -> Manifest:
    return parse_manifest(json.dumps(data), PATH)


def error_of(data: object) -> str:
    with pytest.raises(ManifestError) as caught:
        parse(data)
    message = str(caught.value)
    assert message.startswith("app.json: ") and "\n" not in message
    return message


def test_a_full_app_json_is_read() -> None:
    manifest = parse(
        {
            "name": "shop",
            "description": "ignored, like every key dynosim does not act on",
            "env": {
                "WEB_CONCURRENCY": "3",
                "SECRET_KEY": {"description": "signs cookies", "generator": "secret"},
                "API_TOKEN": {"required": True},
            },
            "formation": {"web": {"quantity": 2, "size": "standard-1x"}, "worker": {"quantity": 0}},
            "addons": [
                "heroku-redis:mini",
                {"plan": "heroku-postgresql", "as": "DATABASE", "options": {"version": "16"}},
            ],
            "scripts": {"postdeploy": "python manage.py seed"},
        }
    )
    assert manifest.name == "shop"
    assert manifest.env["WEB_CONCURRENCY"] == EnvSpec("WEB_CONCURRENCY", "3", False, None, None)
    assert manifest.env["SECRET_KEY"] == EnvSpec("SECRET_KEY", None, False, "secret", "signs cookies")
    assert manifest.env["API_TOKEN"].required
    assert manifest.formation == {"web": FormationSpec(2, "standard-1x"), "worker": FormationSpec(0, None)}
    assert manifest.addons == (
        AddonSpec("heroku-redis:mini", None, {}),
        AddonSpec("heroku-postgresql", "DATABASE", {"version": "16"}),
    )
    assert manifest.scripts == {"postdeploy": "python manage.py seed"}


def test_no_app_json_is_the_empty_manifest(tmp_path: Path) -> None:
    manifest = load_manifest(tmp_path)
    assert manifest is Manifest.EMPTY
    assert (manifest.name, dict(manifest.env), manifest.addons) == (None, {}, ())


def test_an_app_json_file_is_loaded(tmp_path: Path) -> None:
    (tmp_path / "app.json").write_text('{"formation": {"web": {"quantity": 1}}}')
    assert load_manifest(tmp_path).formation["web"].quantity == 1


def test_invalid_json_names_the_line_and_column() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest('{\n  "name": "shop"\n  "env": {}\n}\n', PATH)
    assert str(caught.value) == ("app.json:3: not valid JSON: Expecting ',' delimiter (column 3). Fix the syntax there")


def test_an_undecodable_app_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "app.json").write_bytes(b'{"name": "\xff"}')
    with pytest.raises(ManifestError, match=r"app\.json: byte 10 is not UTF-8"):
        load_manifest(tmp_path)


def test_the_top_level_must_be_an_object() -> None:
    assert "the top level must be an object, got []" in error_of([])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"formation": {"web": {"quantity": "two"}}}, 'formation.web.quantity must be a whole number >= 0, got "two"'),
        ({"formation": {"web": {"quantity": -1}}}, "formation.web.quantity must be a whole number >= 0, got -1"),
        ({"formation": {"web": {"quantity": True}}}, "formation.web.quantity must be a whole number >= 0, got true"),
        ({"formation": {"web": {"quantity": 1.5}}}, "formation.web.quantity must be a whole number >= 0, got 1.5"),
        ({"formation": {"web": {}}}, "formation.web.quantity must be a whole number >= 0, got nothing"),
        ({"formation": {"web": 1}}, 'formation.web must be an object like {"quantity": 1}, got 1'),
        ({"formation": {"web": {"quantity": 1, "size": 2}}}, "formation.web.size must be a string"),
        ({"formation": []}, "formation must be an object, got []"),
    ],
)
def test_bad_formation_names_the_key(data: object, expected: str) -> None:
    assert expected in error_of(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"env": {"WORKERS": 3}}, 'env.WORKERS must be a string, got 3; quote it: "3"'),
        ({"env": {"DEBUG": True}}, 'env.DEBUG must be a string, got true; quote it: "true"'),
        ({"env": {"WORKERS": {"value": 3}}}, 'env.WORKERS.value must be a string, got 3; quote it: "3"'),
        ({"env": {"KEY": {"generator": "uuid"}}}, 'env.KEY.generator must be "secret" (the only generator Heroku has)'),
        ({"env": {"KEY": {"required": "yes"}}}, 'env.KEY.required must be true or false, got "yes"'),
        ({"env": {"KEY": {"description": 1}}}, "env.KEY.description must be a string"),
        ({"env": {"KEY": []}}, "env.KEY must be a string or an object"),
        ({"env": {"MY-KEY": "x"}}, 'env name "MY-KEY" is not a valid variable name; use letters, digits and _'),
        ({"env": {"1KEY": "x"}}, 'env name "1KEY" is not a valid variable name'),
    ],
)
def test_bad_env_names_the_key(data: object, expected: str) -> None:
    assert expected in error_of(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"addons": "heroku-postgresql"}, 'addons must be a list, got "heroku-postgresql"'),
        ({"addons": [3]}, 'addons[0] must be a string like "heroku-postgresql" or an object'),
        ({"addons": ["heroku postgresql"]}, 'addons[0] must look like "heroku-postgresql"'),
        ({"addons": [{"as": "DB"}]}, 'addons[0] has no "plan"; add one like "plan": "heroku-postgresql"'),
        ({"addons": [{"plan": "heroku-redis", "as": "MY-REDIS"}]}, "addons[0].as must be letters, digits and _"),
        ({"addons": [{"plan": "heroku-redis", "options": []}]}, "addons[0].options must be an object"),
    ],
)
def test_bad_addons_name_the_key(data: object, expected: str) -> None:
    assert expected in error_of(data)


def test_a_lowercase_attachment_name_is_kept_as_written() -> None:
    assert parse({"addons": [{"plan": "heroku-redis", "as": "cache"}]}).addons[0].as_name == "cache"


def test_scripts_must_be_strings() -> None:
    # postdeploy may also be Heroku's {"command": ..., "size": ...} (tests/test_postdeploy.py)
    assert 'scripts.postdeploy must be a command string or an object like {"command"' in error_of(
        {"scripts": {"postdeploy": ["a"]}}
    )
    assert 'scripts.pr-predestroy must be a string, got ["a"]' in error_of({"scripts": {"pr-predestroy": ["a"]}})


def test_unknown_top_level_keys_are_ignored() -> None:
    manifest = parse({"logo": 1, "environments": {"test": {}}, "buildpacks": [{"url": "heroku/python"}]})
    assert manifest.formation == {}
