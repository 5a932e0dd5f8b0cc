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
