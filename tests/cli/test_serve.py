"""``tokenbroker serve`` run as a real process: start-up problems are one line each, exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from joserfc.jwk import ECKey
from tests.fakes.jwks import JwksServer
from tests.support.serve import START_TIMEOUT_SECONDS, free_port, start_serve, wait_until_ready

from tokenbroker.devstack.processes import stop_process
from tokenbroker.store.keystore import ENCRYPTION_KEY_FILENAME

# Generous: the process exits as soon as start-up fails; this only bounds a hang.
_TIMEOUT_SECONDS = START_TIMEOUT_SECONDS

_BASE_CONFIG = """
[server]
data_dir = "{data_dir}"
host = "127.0.0.1"
port = 0

[[issuers]]
name = "env0"
issuer = "https://login.app.env0.com/"
audiences = ["https://prod.env0.com"]
profile = "env0"
"""

_BAD_CREDENTIAL = """
[[organizations]]
name = "acme"
issuer = "env0"
platform_org_id = "org-1"

[[credentials]]
organization = "acme"
name = "prod-vault"
type = "vault_oidc"
[credentials.settings]
address = "https://vault.example.com:8200"
"""


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenbroker", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_SECONDS,
        check=False,
    )


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(_BASE_CONFIG.format(data_dir=tmp_path / "data") + extra, encoding="utf-8")
    return path


def test_a_credential_failing_its_schema_at_start_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = _serve(_config(tmp_path, _BAD_CREDENTIAL))
    assert result.returncode == 1
    assert "tokenbroker: invalid configuration:\n" in result.stderr
    assert "  credentials[0].settings.role: Field required\n" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unusable_store_encryption_key_at_start_is_one_line_and_exit_1(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ENCRYPTION_KEY_FILENAME).write_text("\n", encoding="utf-8")
    result = _serve(_config(tmp_path))
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if "store.encryption_key" in line]
    assert len(problems) == 1
    assert problems[0].startswith("  store.encryption_key: ")
    assert "is empty" in problems[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("event_loop", ["auto", "asyncio"])
def test_serve_answers_on_the_configured_event_loop_and_stops_on_sigterm(
    tmp_path: Path, event_loop: str
) -> None:
    port = free_port()
    config = tmp_path / "serve.toml"
    # Ready means the issuer's keys were fetched: publish some on loopback.
    published = JwksServer({"keys": [ECKey.generate_key("P-256").as_dict(private=False)]})
    config.write_text(
        _BASE_CONFIG.format(data_dir=tmp_path / "data").replace(
            "port = 0", f'port = {port}\nevent_loop = "{event_loop}"'
        )
        + f'jwks_uri = "{published.url}"\n\n[security]\nallow_private_backends = true\n',
        encoding="utf-8",
    )
    with published:
        log = tmp_path / "serve.log"
        process = start_serve(config, log)
        try:
            wait_until_ready(process, port, log)
        finally:
            returncode = stop_process(process, _TIMEOUT_SECONDS)
    output = log.read_text()
    expected = "uvloop" if event_loop == "auto" else "asyncio"
    assert f"event loop: {expected}" in output
    assert returncode == 0, output
    assert "Traceback" not in output
