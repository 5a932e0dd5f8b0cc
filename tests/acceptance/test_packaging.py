"""A non-editable install (a real wheel) carries sql/ and serves.

The wheel is built by the interpreter running the tests (its hatchling, no network) and installed alone into a
fresh venv, which sees the running interpreter's site-packages for the dependencies: the same whether the tests
run on a system Python or inside a venv (a nested venv's ``system_site_packages`` would see the system's, not
the outer venv's).
"""

import site
import subprocess
import sys
import venv
from pathlib import Path

import aiohttp

from tests.acceptance.cli_process import GatewayProcess
from tests.conftest import REPO


def outer_site_dirs() -> list[str]:
    """Where the running interpreter finds its installed packages (the tests' dependencies)."""
    dirs = site.getsitepackages()
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return dirs


async def test_wheel_install_ships_sql_and_serves(tmp_path, cluster, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)  # a checkout on PYTHONPATH would shadow the wheel
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("audience_gateway-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # Only now (pip must not see the outer editable install): the dependencies come from the outer
    # site-packages, added after the venv's own, so the wheel's gateway shadows an editable checkout there.
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "outer_site.pth").write_text(
        "".join(f"import site; site.addsitedir({directory!r})\n" for directory in outer_site_dirs()))
    where = subprocess.run([python, "-c", "import gateway, gateway.db.queries as s; print(gateway.__file__); "
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
            for path in ("/ui/", "/ui/app.js", "/ui/console.css"):  # the web console's files are in the wheel
                async with session.get(url + path) as response:
                    assert response.status == 200, path
        assert process.stop() == 0
    finally:
        await cluster.drop_database(name)
