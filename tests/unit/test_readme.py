"""The README stays true: its settings table is the code's, and CI runs its test command."""

import re

from gateway.settings import SETTINGS, settings_table_markdown
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def code_lines() -> list[str]:
    return [line for block in re.findall(r"```bash\n(.*?)```", README, re.S) for line in block.splitlines()]


def test_settings_table_matches_the_code():
    assert settings_table_markdown() in README
    for setting in SETTINGS:
        assert setting.env in README


def test_ci_runs_the_readme_test_command():
    test_command = next(line for line in code_lines() if "pytest" in line)
    assert test_command in (REPO / ".ci" / "run").read_text()


def test_readme_shows_a_serve_command():
    assert any("gateway serve" in line for line in code_lines())


def test_every_file_the_readme_names_is_in_the_repository():
    """``examples/…``, ``docs/…`` and the other paths of the repository that the README names exist (files a
    command creates, like ``people-back.csv`` or ``examples/people.csv.gz``, are not named with these folders
    unless made by ``gzip -k``)."""
    made = {"examples/people.csv.gz"}  # made by the README's own `gzip -k examples/people.csv`
    named = {path for path, after in re.findall(r"\b((?:examples|docs|ops|bench|sql|tests|gateway)/[\w./-]*\w)(-?<?)",
                                                README) if not after.endswith("<")}  # not a pattern like bench-<time>
    missing = sorted(path for path in named - made if not (REPO / path).exists())
    assert not missing, missing
