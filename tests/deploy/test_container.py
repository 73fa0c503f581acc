"""The image of deploy/Containerfile, built by ``make image`` and run the way the manifests run
it: read-only root filesystem, user 10001, deploy/k8s/base/tokenbroker.toml (two workers) on
PostgreSQL, the migrations by ``db upgrade`` first. One exchange goes through it, and SIGTERM
stops it cleanly."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import shutil
import subprocess
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.procs import free_port
from bench.tomlconfig import dump_toml
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy.engine import make_url

from tests.support.serve import IssuerProcess, eventually, exchange, policy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = ROOT / "deploy" / "k8s" / "base" / "tokenbroker.toml"
_BUILD_TIMEOUT_SECONDS = 900
_RUN_TIMEOUT_SECONDS = 120
AUDIENCE = "sts.example"

pytestmark = [pytest.mark.container, pytest.mark.postgres]


def _podman() -> list[str]:
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: make deploy-tools (apt-get install -y podman runc)")
    return ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]


@pytest.fixture(scope="module")
def image() -> str:
    """The image of this checkout, built by ``make image`` (layers and the base image cached)."""
    name = "localhost/tokenbroker:test"
    _podman()
    result = subprocess.run(
        ["make", "image", f"IMAGE={name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=_BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return name


def _environment() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(ROOT / "build" / "containers.conf")}


def _as_this_user(store_url: str) -> str:
    """The URL naming its user: inside the container libpq's default (the OS user) differs."""
    url = make_url(store_url)
    if url.username is None:
        url = url.set(username=getpass.getuser())
    return url.render_as_string(hide_password=False)


def _run_arguments(image: str, config_dir: Path, store_url: str, key: str) -> list[str]:
    return [
        "run",
        "--rm",
        "--network=host",
        "--read-only",
        "--user",
        "10001",
        "--volume",
        f"{config_dir}:/etc/tokenbroker:ro",
        "--env",
        f"TOKENBROKER_STORE__URL={_as_this_user(store_url)}",
        "--env",
        f"TOKENBROKER_STORE__ENCRYPTION_KEY={key}",
        image,
    ]


@pytest.fixture
def config_dir(tmp_path: Path, issuer_process: IssuerProcess) -> tuple[Path, int]:
    """deploy's TOML on a free port, trusting the dev issuer, with one minted credential."""
    config = tomllib.loads(DEPLOY_CONFIG.read_text())
    port = free_port()
    config["server"]["port"] = port
    credential = {"name": "ci-token", "type": "oidc_token", "token": "mint", "audience": AUDIENCE}
    config.update(policy(issuer_process, [credential]))
    directory = tmp_path / "etc-tokenbroker"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)  # read by user 10001 in the container
    (directory / "config.toml").write_text(dump_toml(config))
    (directory / "config.toml").chmod(0o644)
    return directory, port


@pytest.fixture
def container_name() -> Iterator[str]:
    """A unique container name, removed after the test whatever happened."""
    name = f"tokenbroker-test-{secrets.token_hex(4)}"
    yield name
    subprocess.run(
        [*_podman(), "rm", "--force", "--time", "0", name],
        env=_environment(),
        capture_output=True,
        timeout=_RUN_TIMEOUT_SECONDS,
        check=False,
    )


def _ready(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:  # noqa: S310 - loopback
            body: dict[str, object] = json.loads(response.read())
            return body
    except OSError:
        return None


def test_the_image_serves_an_exchange_read_only_as_10001_on_postgresql(
    tmp_path: Path,
    image: str,
    config_dir: tuple[Path, int],
    postgres_store_url: str,
    issuer_process: IssuerProcess,
    container_name: str,
) -> None:
    directory, port = config_dir
    key = secrets.token_urlsafe(32)
    arguments = _run_arguments(image, directory, postgres_store_url, key)
    upgrade = subprocess.run(
        [*_podman(), *arguments, "db", "upgrade", "--config", "/etc/tokenbroker/config.toml"],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "is at revision" in upgrade.stdout

    log = tmp_path / "container.log"
    with log.open("wb") as output:
        served = subprocess.Popen(
            [*_podman(), *arguments[:2], "--name", container_name, *arguments[2:]],
            env=_environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        ready = eventually(lambda: _ready(url), _RUN_TIMEOUT_SECONDS, "the container's /readyz")
        assert ready["status"] == "ok", ready

        answer = exchange(url, issuer_process.mint(), "ci-token")
        assert answer.status == 200, answer.body
        with urllib.request.urlopen(f"{url}/.well-known/jwks.json", timeout=10) as response:  # noqa: S310
            keys = KeySet.import_key_set(json.loads(response.read()))
        minted = jwt.decode(answer.body["values"]["OIDC_TOKEN"], keys)
        assert minted.claims["aud"] == AUDIENCE

        stop = subprocess.run(
            [*_podman(), "stop", "--time", "40", container_name],
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=_RUN_TIMEOUT_SECONDS,
            check=False,
        )
        assert stop.returncode == 0, stop.stderr
        assert served.wait(_RUN_TIMEOUT_SECONDS) == 0, log.read_text()
    finally:
        if served.poll() is None:
            served.kill()
            served.wait()
    output = log.read_text()
    assert "exited with status 0" in output
    assert "Traceback" not in output
