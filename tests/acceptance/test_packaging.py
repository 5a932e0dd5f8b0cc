"""A non-editable install (a real wheel) carries sql/ and serves."""

import subprocess
import venv
from pathlib import Path

import aiohttp

from tests.acceptance.cli_process import GatewayProcess
from tests.conftest import REPO


async def test_wheel_install_ships_sql_and_serves(tmp_path, cluster, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)  # a checkout on PYTHONPATH would shadow the wheel
    env_dir = tmp_path / "venv"
    # System site packages provide the dependencies (already installed for the tests); the gateway itself
    # is built into a wheel and installed into the venv, where it shadows the editable checkout.
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(REPO)],
                   check=True, capture_output=True, timeout=300)
    where = subprocess.run([python, "-c", "import gateway, gateway.sqlfiles as s; print(gateway.__file__); "
                            "print(s.sql_dir())"], capture_output=True, text=True, check=True, cwd=tmp_path)
    package_file, sql_dir = where.stdout.split()
    assert package_file.startswith(str(env_dir)), package_file
    assert Path(sql_dir) == Path(package_file).parent / "sql"
    assert (Path(sql_dir) / "queries.sql").exists()

    name = await cluster.create_database(migrated=False)
    try:
        process = GatewayProcess("serve", "--port", "0", executable=[str(env_dir / "bin" / "audience-gateway")],
                                 env={"GATEWAY_DATABASE_URL": cluster.url(name), "GATEWAY_API_KEY": "k" * 32,
                                      "GATEWAY_LOG_LEVEL": "WARNING"})
        url = process.wait_listening()
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/readyz") as response:
                assert response.status == 200
            async with session.get(url + "/openapi.json") as response:  # shipped in the wheel
                assert response.status == 200
                assert (await response.json())["openapi"].startswith("3.1")
        assert process.stop() == 0
    finally:
        await cluster.drop_database(name)
