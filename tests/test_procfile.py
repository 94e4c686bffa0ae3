from pathlib import Path

import pytest

from dynosim.errors import ProcfileError
from dynosim.procfile import ProcessType, load_procfile, parse_procfile

PATH = Path("/app/Procfile")


def commands(text: str) -> dict[str, str]:
    return {name: p.command for name, p in parse_procfile(text, PATH).processes.items()}


def test_a_plain_procfile_parses_without_warnings() -> None:
    procfile = parse_procfile("web: gunicorn app:app --bind 0.0.0.0:$PORT\nworker: python worker.py\n", PATH)
    assert procfile.processes["web"] == ProcessType("web", "gunicorn app:app --bind 0.0.0.0:$PORT", 1)
    assert procfile.processes["worker"] == ProcessType("worker", "python worker.py", 2)
    assert procfile.formation_types == ("web", "worker")
    assert procfile.release is None
    assert procfile.warnings == ()


def test_comments_and_blank_lines_are_silent() -> None:
    procfile = parse_procfile("# the web\n\n   \n  # indented comment\nweb: python app.py\n", PATH)
    assert list(procfile.processes) == ["web"]
    assert procfile.processes["web"].line == 5
    assert procfile.warnings == ()


def test_crlf_line_endings_are_read_like_lf() -> None:
    procfile = parse_procfile("web: python app.py\r\nworker: python w.py\r\n", PATH)
    assert procfile.processes["worker"] == ProcessType("worker", "python w.py", 2)
    assert procfile.processes["web"].command == "python app.py"
    assert procfile.warnings == ()


def test_command_is_stripped_and_leading_space_allowed() -> None:
    assert commands("   web:    python app.py   \t\n") == {"web": "python app.py"}


def test_release_is_a_process_but_not_a_formation_type() -> None:
    procfile = parse_procfile("release: python manage.py migrate\nweb: gunicorn app:app\n", PATH)
    assert procfile.release == ProcessType("release", "python manage.py migrate", 1)
    assert procfile.formation_types == ("web",)


def test_a_procfile_with_only_release_is_fine() -> None:
    procfile = parse_procfile("release: ./migrate.sh\n", PATH)
    assert procfile.release is not None
    assert procfile.formation_types == ()


def test_colon_is_optional_as_on_heroku_with_a_warning() -> None:
    procfile = parse_procfile("web gunicorn app:app\n", PATH)
    assert procfile.processes["web"].command == "gunicorn app:app"
    (warning,) = procfile.warnings
    assert warning.startswith('Procfile:1: "web gunicorn app:app" has no colon')
    assert 'Write "web: gunicorn app:app"' in warning


def test_a_space_inside_the_type_name_makes_heroku_split_it_there() -> None:
    procfile = parse_procfile("we b: x\n", PATH)
    assert procfile.processes["we"].command == "b: x"
    assert "Procfile:1:" in procfile.warnings[0] and "no colon" in procfile.warnings[0]


def test_space_before_colon_runs_the_colon_as_the_command() -> None:
    procfile = parse_procfile("web : python app.py\n", PATH)
    assert procfile.processes["web"].command == ": python app.py"
    assert 'Write "web: python app.py"' in procfile.warnings[0]


def test_the_last_duplicate_wins_and_takes_its_place_in_order() -> None:
    procfile = parse_procfile("web: one\nworker: w\nweb: two\n", PATH)
    assert procfile.processes["web"] == ProcessType("web", "two", 3)
    assert list(procfile.processes) == ["worker", "web"]
    assert procfile.warnings == ('Procfile:3: "web" defined again, replacing line 1 (Heroku keeps the last)',)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (": python app.py", "no process type before the colon"),
        ("web:", '"web" has no command; put the command after the colon'),
        ("web:   ", '"web" has no command'),
        ("web:gunicorn app:app", 'Heroku needs a space after the colon; write "web: gunicorn app:app"'),
        ("web.1: python app.py", 'type "web.1" may only use letters, digits, _ and -'),
        ("&&&&", "not a '<type>: <command>' line"),
        ("\ufeffweb: python app.py", "byte-order mark"),
    ],
)
def test_each_line_heroku_drops_is_warned_with_its_line_and_fix(line: str, why: str) -> None:
    procfile = parse_procfile(f"worker: python w.py\n{line}\n", PATH)
    assert list(procfile.processes) == ["worker"]
    (warning,) = procfile.warnings
    assert warning.startswith("Procfile:2: ignored ")
    assert why in warning


def test_a_dropped_line_does_not_replace_an_earlier_definition() -> None:
    assert commands("web: python app.py\nweb:\n") == {"web": "python app.py"}


def test_type_names_that_are_not_dns_labels_are_kept_with_a_warning() -> None:
    procfile = parse_procfile("Web_Worker: python w.py\n", PATH)
    assert list(procfile.processes) == ["Web_Worker"]
    (warning,) = procfile.warnings
    assert warning.startswith('Procfile:1: type "Web_Worker" is not a lowercase DNS label')
    assert '"web-worker"' in warning


def test_warnings_are_one_line_each() -> None:
    procfile = parse_procfile("web x\n: y\nweb: z\nA_B: c\n", PATH)
    assert len(procfile.warnings) == 4
    assert all("\n" not in warning for warning in procfile.warnings)


def test_no_process_type_found_is_an_error_with_the_reason() -> None:
    with pytest.raises(ProcfileError) as caught:
        parse_procfile("# nothing\nweb:gunicorn app:app\n", PATH)
    message = str(caught.value)
    assert message.startswith("/app/Procfile: no process type found")
    assert "Procfile:2:" in message and "space after the colon" in message
    assert message.endswith("Add a line like 'web: python app.py'")


def test_an_empty_procfile_is_an_error() -> None:
    with pytest.raises(ProcfileError, match=r"no process type found\. Add a line like"):
        parse_procfile("", PATH)


def test_load_reads_the_procfile_of_an_app(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: python app.py\n")
    procfile = load_procfile(tmp_path)
    assert procfile.path == tmp_path / "Procfile"
    assert procfile.formation_types == ("web",)


def test_missing_procfile_says_how_to_add_one(tmp_path: Path) -> None:
    with pytest.raises(ProcfileError) as caught:
        load_procfile(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}: no Procfile. Add a file named Procfile with a line like 'web: gunicorn app:app'"
    )


def test_a_lowercase_procfile_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "procfile").write_text("web: python app.py\n")
    with pytest.raises(ProcfileError, match="found 'procfile' but Heroku only reads a file named exactly 'Procfile'"):
        load_procfile(tmp_path)


def test_an_undecodable_procfile_is_named(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_bytes(b"web: python \xff.py\n")
    with pytest.raises(ProcfileError, match=r"Procfile: byte 12 is not UTF-8\. Save the Procfile as UTF-8"):
        load_procfile(tmp_path)


def test_an_unreadable_procfile_is_named(tmp_path: Path) -> None:
    (tmp_path / "Procfile").mkdir()
    with pytest.raises(ProcfileError, match=r"Procfile: cannot read it"):
        load_procfile(tmp_path)
