"""The package's layers stay one way down: import-linter checks the contracts in pyproject.toml (README
"Layout") in every test run, as ``lint-imports`` does on its own."""

from importlinter.cli import lint_imports

from tests.conftest import REPO


def test_every_import_linter_contract_is_kept(capsys):
    code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True)
    assert code == 0, capsys.readouterr().out
