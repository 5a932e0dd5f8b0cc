"""The package's layers stay one way down: import-linter checks the contracts in pyproject.toml (README
"Layout") in every test run, as ``lint-imports`` does on its own.

It runs in its own process: import-linter configures logging with ``dictConfig``, which disables every
logger that exists, and the tests after it would capture no log record of the gateway.
"""

import subprocess
import sys

from tests.conftest import REPO

LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"


def test_every_import_linter_contract_is_kept():
    result = subprocess.run([sys.executable, "-c", LINT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
