"""Helpers for the segment definition and schedule tests: sources with members, definitions made through
the API, and what PostgreSQL holds."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import jsonschema

from gateway.api.openapi import document

from tests.conftest import AUTH
from tests.integration.manage_helpers import api
from tests.integration.push_helpers import create_segment, push_ok

DEFINITIONS = "/api/segment/definitions"
SCHEDULES = "/api/config/schedules"
# Two sources sharing Email and Country: "first source wins" for Country.
CUSTOMERS = "Email,Country\nann@x.com,US\nbob@x.com,FR\n"
BUYERS = "Email,Age,Country\nann@x.com,41,CA\ncid@x.com,30,US\n"


async def source(client, body: str, name: str = "source", headers: dict[str, str] = AUTH) -> int:
    """A Contact List with the members of ``body``."""
    segment_id = await create_segment(client, name, headers)
    await push_ok(client, segment_id, body, headers=headers)
    return int(segment_id)


def pql(text: str) -> dict[str, str]:
    return {"type": "PQL", "format": "pql/text", "value": text}


async def define(client, name: str, expression: str, sources: Any = "*", headers: dict[str, str] = AUTH,
                 **fields: Any) -> dict[str, Any]:
    """A definition that must be created; as answered."""
    body = {"name": name, "expression": pql(expression), "sources": sources, **fields}
    return (await api(client, "POST", DEFINITIONS, headers, json=body)).result


async def counts(db: asyncpg.Connection) -> dict[str, int]:
    """How many segments and live definitions there are (a refused request changes neither)."""
    return {"segments": await db.fetchval("SELECT count(*) FROM segments"),
            "definitions": await db.fetchval("SELECT count(*) FROM segment_definitions WHERE deleted_at IS NULL")}


def documented(value: object, schema: str) -> None:
    """``value`` is as the OpenAPI document's ``components.schemas[schema]`` says."""
    components = json.loads(document())["components"]
    jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": components}).validate(value)
