"""The conformance checker is a client of any endpoint: it imports no server module of the gateway."""

import ast

from tests.conftest import REPO


def test_the_checker_imports_only_the_clients_http_helpers_from_the_gateway():
    tree = ast.parse((REPO / "gateway" / "client" / "conformance.py").read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {module for module in modules if module and module.startswith("gateway")} == {"gateway.client.http"}
