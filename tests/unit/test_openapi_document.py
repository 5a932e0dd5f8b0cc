"""The OpenAPI document describes exactly the routes the app has (GET implies HEAD), and is valid 3.1."""

import json

from gateway.api.openapi import document
from gateway.app import create_app
from gateway.settings import Settings

METHODS = ("get", "put", "post", "delete", "patch")


def routed() -> set[tuple[str, str]]:
    app = create_app(Settings.load(environ={}))
    return {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None}


def documented() -> set[tuple[str, str]]:
    paths = json.loads(document())["paths"]
    return {(method, path) for path, item in paths.items() for method in item if method in METHODS}


def test_every_route_is_documented_and_every_documented_route_exists():
    assert routed() == documented()


def test_the_document_is_openapi_3_1_and_every_operation_lists_its_statuses():
    import schemathesis

    doc = json.loads(document())
    assert doc["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_dict(doc)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(documented())
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert "200" in operation["responses"], (method, path)
            keyed = operation.get("security") != [] or path == "/metrics"  # a key if so configured
            assert keyed == ("401" in operation["responses"]), (method, path)
            if "{" in path:
                assert "404" in operation["responses"], (method, path)
