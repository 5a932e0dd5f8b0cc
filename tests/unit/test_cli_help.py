"""Every command's --help: each command and option explained, with its default, in plain text (no reST)."""

from __future__ import annotations

import argparse
import re

import pytest

from gateway.cli import main as cli
from gateway.settings import SETTINGS

REST_MARKUP = re.compile(r"``|:[a-z]+:`|`|^\.\. ", re.M)  # literals, roles, interpreted text, directives


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
             ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and sub-command under ``parser``, as (argv prefix, its parser)."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert listed.get(name), f"{' '.join((*path, name))} has no help line in its parent's list"
                found += commands(sub, (*path, name))
    return found


COMMANDS = commands(cli.build_parser())


def help_of(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def required_in_group(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    return any(group.required and action in group._group_actions for group in parser._mutually_exclusive_groups)


@pytest.mark.parametrize("argv, parser", COMMANDS, ids=[" ".join(path) or "top-level" for path, _ in COMMANDS])
def test_every_option_is_explained_with_its_default(argv, parser, capsys):
    text = help_of(argv, capsys)
    assert not REST_MARKUP.search(text), REST_MARKUP.search(text)
    assert "%(" not in text
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        name = "/".join(action.option_strings) or action.metavar or action.dest
        assert action.help, f"{' '.join(argv)} {name} has no help text"
        takes_value = action.option_strings and action.nargs != 0
        if takes_value and not (action.required or required_in_group(parser, action)):
            assert "(default: " in formatter._get_help_string(action), f"{' '.join(argv)} {name}: no default"


def test_top_level_help_names_every_command(capsys):
    text = help_of((), capsys)
    names = {path[0] for path, _ in COMMANDS if path}
    assert names == {"serve", "top", "migrate", "endpoints", "keys", "segments", "push", "pull", "conformance"}
    for name in names:
        assert re.search(rf"^\s+{name}\b", text, re.M), name


def test_serve_help_lists_the_main_settings_and_where_the_rest_are(capsys):
    text = help_of(("serve",), capsys)
    for variable in ("GATEWAY_DATA_DIR", "GATEWAY_DATABASE_URL", "GATEWAY_API_KEY"):
        assert variable in text
    assert "./.gateway" in text
    assert f"The other {len(SETTINGS) - 3}" in text and "README, section Settings" in text
