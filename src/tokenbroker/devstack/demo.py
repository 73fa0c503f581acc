"""``make demo``: start ``tokenbroker dev`` in the background, then play a CI runner against it.

The runner mints a token shaped like the demo platform's (``seeds.DEMO_SEED``) and exchanges
it with the runner's client (``tokenbroker exchange``, which calls ``POST /v1/exchange``) for
Vault, AWS, GCP and Azure credentials; it uses each (a KV write and read in OpenBao,
``GetCallerIdentity`` against moto, the GCP token checked by the STS stand-in, the Azure token
verified against the Entra stand-in's keys, and azure-identity getting its own token with the
broker's federated token), shows one denial with its dry-run explanation, and stops the
stack. Exit 0 with a summary, or 1 naming the step that failed. No process is left behind: the
stack is stopped (SIGTERM, wait, kill) whatever happens, and the demo checks that OpenBao is
gone too. Never prints a token or a secret.

``python -m tokenbroker.devstack.demo [--data-dir DIR]`` (or ``$TOKENBROKER_DEMO_DATA_DIR``);
without one a temporary directory is used and removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from tokenbroker.devstack.openbao import parent_death_signal
from tokenbroker.devstack.platform_issuer import DevPlatformIssuer
from tokenbroker.devstack.processes import log_tail, stop_process
from tokenbroker.devstack.seeds import (
    AZURE_CLIENT_ID,
    AZURE_FEDERATED_SUBJECT,
    AZURE_TENANT_ID,
    DEMO_SEED,
    DENIED_CREDENTIAL,
)
from tokenbroker.devstack.stack import DevStackState, read_state
from tokenbroker.identity.profiles import PROFILES

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
HTTP_TIMEOUT_SECONDS = 30.0
CLIENT_TIMEOUT_SECONDS = 60.0
# `tokenbroker exchange` exits with this when the broker refuses.
EXIT_DENIED = 4
_POLL_SECONDS = 0.1
KV_PATH = "demo"
PLATFORM = PROFILES[DEMO_SEED.profile]
# Where the demo platform's runners hold their token.
TOKEN_VARIABLE = PLATFORM.runner.variables[0]


class DemoFailure(Exception):
    """A step of the demo failed; the message is the reason shown to the user."""


def say(line: str = "") -> None:
    """Print a line of the demo's story at once (CI logs interleave otherwise)."""
    print(line, flush=True)


# --- the stack, as a background process -----------------------------------------------------


class DevStackProcess:
    """``tokenbroker dev --port 0`` as a child process, its output in ``<data_dir>/dev.log``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir / "dev.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the stack (it picks free ports and writes them to its state file)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "tokenbroker",
            "dev",
            "--data-dir",
            str(self.data_dir),
            "--port",
            "0",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # If the demo itself is killed outright, the stack still gets SIGTERM.
                preexec_fn=parent_death_signal(),
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> DevStackState:
        """Wait for this child's state file and the broker's ``/readyz``, up to a deadline."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoFailure(
                    f"tokenbroker dev exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            state = read_state(self.data_dir)
            if state is not None and state.pid == self.process.pid and _ready(state.broker_url):
                return state
            time.sleep(_POLL_SECONDS)
        raise DemoFailure(
            f"tokenbroker dev was not ready within {timeout:.0f}s:\n{self.log_tail()}"
        )

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL on timeout; return the exit code (None if never started)."""
        process, self.process = self.process, None
        if process is None:
            return None
        return stop_process(process, STOP_TIMEOUT_SECONDS)

    def log_tail(self, characters: int = 3000) -> str:
        """The end of the stack's output, for failure messages."""
        return log_tail(self.log_path, characters)

    def progress_lines(self) -> list[str]:
        """The stack's numbered progress lines, to retell them."""
        return [line for line in self.log_tail(20000).splitlines() if line.startswith("[")]


def _ready(broker_url: str) -> bool:
    try:
        with urllib.request.urlopen(  # noqa: S310 - the stack's own loopback URL
            f"{broker_url}/readyz", timeout=2
        ) as response:
            status: int = response.status
    except (OSError, ValueError):
        return False
    return status == 200


def process_alive(pid: int) -> bool:
    """Whether a process of this id exists (and is not a zombie waiting to be reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return "\nState:\tZ" not in status


# --- the runner -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientRun:
    """One run of the runner's client: its exit code and output."""

    code: int
    stdout: str
    stderr: str


def run_client(broker_url: str, token: str, credential: str, *options: str) -> ClientRun:
    """``tokenbroker exchange`` as a runner runs it: the token in the platform's variable."""
    command = [
        sys.executable,
        "-m",
        "tokenbroker",
        "exchange",
        "--broker",
        broker_url,
        "--credential",
        credential,
        *options,
    ]
    try:
        completed = subprocess.run(  # noqa: S603 - our own interpreter and module
            command,
            capture_output=True,
            text=True,
            env={**os.environ, TOKEN_VARIABLE: token},
            timeout=CLIENT_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DemoFailure(f"tokenbroker exchange --credential {credential} timed out") from None
    return ClientRun(completed.returncode, completed.stdout, completed.stderr)


def issued_values(run: ClientRun, credential: str) -> Mapping[str, str]:
    """The values of a successful exchange (``--format json``); DemoFailure with the cause."""
    if run.code != 0:
        raise DemoFailure(
            f"tokenbroker exchange --credential {credential} exited with {run.code}: "
            f"{run.stderr.strip()}"
        )
    try:
        body = json.loads(run.stdout)
    except ValueError:
        raise DemoFailure(
            f"tokenbroker exchange --credential {credential} printed no JSON"
        ) from None
    values = body.get("values") if isinstance(body, dict) else None
    if not isinstance(values, dict):
        raise DemoFailure(f"the exchange for {credential} returned no values")
    return {str(key): str(value) for key, value in values.items()}


def use_vault(values: Mapping[str, str], kv_mount: str, secret: Mapping[str, str]) -> str:
    """Write and read back a KV v2 secret with the issued VAULT_TOKEN; return what was read."""
    import hvac

    client = hvac.Client(url=values["VAULT_ADDR"], token=values["VAULT_TOKEN"])
    client.secrets.kv.v2.create_or_update_secret(
        path=KV_PATH, secret=dict(secret), mount_point=kv_mount
    )
    read = client.secrets.kv.v2.read_secret_version(
        path=KV_PATH, mount_point=kv_mount, raise_on_deleted_version=True
    )
    data = read["data"]["data"]
    if data != dict(secret):
        raise DemoFailure(f"Vault KV read back {sorted(data)} instead of what was written")
    return f"{kv_mount}/{KV_PATH}"


def use_aws(values: Mapping[str, str], moto_url: str) -> str:
    """``sts:GetCallerIdentity`` with the issued AWS credentials; return the caller's ARN."""
    import boto3

    sts = boto3.client(
        "sts",
        endpoint_url=moto_url,
        region_name=values.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=values["AWS_SESSION_TOKEN"],
    )
    arn: str = sts.get_caller_identity()["Arn"]
    if ":assumed-role/" not in arn:
        raise DemoFailure(f"GetCallerIdentity answered {arn}, not an assumed role")
    return arn


def use_gcp(values: Mapping[str, str], gcp_sts_url: str) -> str:
    """Ask the STS stand-in's tokeninfo who the issued access token belongs to."""
    # In the query string, as Google's tokeninfo endpoint takes it.
    url = f"{gcp_sts_url}/v1/tokeninfo?" + urllib.parse.urlencode(
        {"access_token": values["GOOGLE_OAUTH_ACCESS_TOKEN"]}
    )
    try:
        with urllib.request.urlopen(  # noqa: S310 - the stack's own loopback URL
            url, timeout=HTTP_TIMEOUT_SECONDS
        ) as response:
            info = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise DemoFailure(f"GCP tokeninfo refused the access token (HTTP {error.code})") from None
    except (OSError, ValueError) as exc:
        raise DemoFailure(f"GCP tokeninfo did not answer: {exc}") from None
    email = info.get("email") if isinstance(info, dict) else None
    if not isinstance(email, str):
        raise DemoFailure("GCP tokeninfo names no service account for the access token")
    return email


def entra_access_token_app(token: str, state: DevStackState) -> str:
    """Verify an access token against the Entra stand-in tenant's keys; the app it names."""
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    context = ssl.create_default_context(cafile=state.entra_ca_file)
    url = f"{state.entra_url}/{AZURE_TENANT_ID}/discovery/v2.0/keys"
    try:
        with urllib.request.urlopen(  # noqa: S310 - the stack's own loopback URL
            url, timeout=HTTP_TIMEOUT_SECONDS, context=context
        ) as response:
            keys = KeySet.import_key_set(json.loads(response.read()))
        claims = jwt.decode(token, keys).claims
    except (OSError, ValueError, JoseError) as exc:
        raise DemoFailure(f"the Azure access token did not verify at Entra ID: {exc}") from None
    if claims.get("azp") != AZURE_CLIENT_ID or claims.get("tid") != AZURE_TENANT_ID:
        raise DemoFailure("the Azure access token names another application or tenant")
    return f"app {AZURE_CLIENT_ID} in tenant {AZURE_TENANT_ID}, aud {claims.get('aud')}"


def azure_identity_token(broker: str, token: str, state: DevStackState) -> str:
    """azure-identity's ClientAssertionCredential, its assertion from the runner's client."""
    from azure.identity import ClientAssertionCredential

    def federated_token() -> str:
        run = run_client(broker, token, "dev-azure", "--format", "azure-federated-token", "-q")
        if run.code != 0:
            raise DemoFailure(f"the federated token was refused: {run.stderr.strip()}")
        return run.stdout.strip()

    credential = ClientAssertionCredential(
        AZURE_TENANT_ID,
        AZURE_CLIENT_ID,
        federated_token,
        authority=state.entra_url,
        # The stand-in is not a Microsoft host, and its certificate chains to the stack's CA.
        disable_instance_discovery=True,
        connection_verify=state.entra_ca_file,
    )
    access: str = credential.get_token("https://management.azure.com/.default").token
    return access


@dataclass(frozen=True)
class Step:
    """One line of the summary."""

    area: str
    text: str


def play_runner(state: DevStackState) -> list[Step]:
    """The runner's flow against a ready stack; DemoFailure on the first step that fails."""
    broker = state.broker_url
    issuer = DevPlatformIssuer(Path(state.keys_dir), state.issuer_base_url)
    token = issuer.mint(PLATFORM.name, org=state.org_id, project=state.project_id)
    shaped = f"{PLATFORM.title}-shaped token"
    steps = [Step("token", f"{shaped} for project {state.project_id}")]
    say(f"runner: export {TOKEN_VARIABLE}=<an {shaped} from the dev issuer>, minted as")
    say(
        f"  tokenbroker token mint --profile {PLATFORM.name} --org {state.org_id} "
        f"--project {state.project_id} --keys-dir {state.keys_dir} "
        f"--issuer-base {state.issuer_base_url}"
    )
    client = f"tokenbroker exchange --broker {broker} --credential"

    secret = {"written-by": "tokenbroker demo", "at": str(int(time.time()))}
    for credential, mode in (("dev-vault", "passthrough"), ("dev-vault-mint", "mint")):
        say(f"runner: {client} {credential} --format json")
        values = issued_values(run_client(broker, token, credential, "-q"), credential)
        where = use_vault(values, state.kv_mount, secret)
        steps.append(Step("vault", f"{credential} ({mode}): KV write + read at {where}"))
        say(f"  with VAULT_TOKEN: wrote and read back {where}")

    say(f"runner: {client} dev-aws --format json")
    values = issued_values(run_client(broker, token, "dev-aws", "-q"), "dev-aws")
    arn = use_aws(values, state.moto_url)
    steps.append(Step("aws", f"dev-aws: GetCallerIdentity -> {arn}"))
    say(f"  with the AWS credentials: GetCallerIdentity -> {arn}")

    say(f"runner: {client} dev-gcp --format json")
    values = issued_values(run_client(broker, token, "dev-gcp", "-q"), "dev-gcp")
    email = use_gcp(values, state.gcp_sts_url)
    steps.append(Step("gcp", f"dev-gcp: tokeninfo -> {email}"))
    say(f"  with GOOGLE_OAUTH_ACCESS_TOKEN: tokeninfo -> {email}")

    # Entra ID matches the subject exactly: the platform's organization-wide one (env0's).
    azure_token = issuer.mint(
        PLATFORM.name,
        org=state.org_id,
        project=state.project_id,
        claims={"sub": AZURE_FEDERATED_SUBJECT},
    )
    say(f"runner: {client} dev-azure --format json")
    values = issued_values(run_client(broker, azure_token, "dev-azure", "-q"), "dev-azure")
    app = entra_access_token_app(values["AZURE_ACCESS_TOKEN"], state)
    steps.append(Step("azure", f"dev-azure: AZURE_ACCESS_TOKEN verified at Entra ID -> {app}"))
    say(f"  with AZURE_ACCESS_TOKEN: signed by the Entra stand-in's tenant -> {app}")
    say("runner: azure-identity ClientAssertionCredential, its assertion from")
    say(f"  {client} dev-azure --format azure-federated-token")
    app = entra_access_token_app(azure_identity_token(broker, azure_token, state), state)
    steps.append(Step("azure", f"azure-identity: its own token from Entra ID -> {app}"))
    say(f"  azure-identity got its own access token -> {app}")

    say(f"runner: {client} {DENIED_CREDENTIAL}")
    denied = run_client(broker, token, DENIED_CREDENTIAL)
    if denied.code != EXIT_DENIED or "bound_claims_mismatch" not in denied.stderr:
        raise DemoFailure(
            f"{DENIED_CREDENTIAL} should be denied for its bound claims (exit {EXIT_DENIED}), "
            f"got exit {denied.code}: {denied.stderr.strip()}"
        )
    for line in denied.stderr.splitlines():
        say(f"  {line}")
    say(f"runner: {client} {DENIED_CREDENTIAL} --dry-run")
    trace = run_client(broker, token, DENIED_CREDENTIAL, "--dry-run", "-q")
    if trace.code != EXIT_DENIED or "bound_claims" not in trace.stdout:
        raise DemoFailure(f"the dry run of {DENIED_CREDENTIAL} did not explain the denial")
    for line in trace.stdout.splitlines():
        say(f"  {line}")
    steps.append(
        Step("denial", f"{DENIED_CREDENTIAL}: refused, bound_claims_mismatch, dry run explains it")
    )
    return steps


# --- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _data_dir(given: str | None) -> Iterator[Path]:
    if given:
        yield Path(given).resolve()
        return
    temporary = Path(tempfile.mkdtemp(prefix="tokenbroker-demo-"))
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _terminate_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwinds through the `finally` that stops the stack, like Ctrl-C does.
    raise SystemExit(128 + signum)


def run_demo(data_dir: Path) -> int:
    """Start the stack, play the runner, stop the stack; the exit code."""
    started = time.monotonic()
    stack = DevStackProcess(data_dir)
    state: DevStackState | None = None
    steps: list[Step] = []
    failure: str | None = None
    say(f"demo: starting `tokenbroker dev` in the background (data in {data_dir})")
    try:
        stack.start()
        state = stack.wait_ready()
        for line in stack.progress_lines():
            say(f"  {line}")
        say(f"demo: the stack is ready ({time.monotonic() - started:.1f}s)")
        steps = play_runner(state)
    except DemoFailure as exc:
        failure = str(exc)
    except Exception as exc:  # any library error: name the step's exception, never a secret
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        code = stack.stop()
    leftovers = []
    if state is not None and state.openbao_pid and process_alive(state.openbao_pid):
        leftovers.append(f"OpenBao (pid {state.openbao_pid})")
    if failure is None and code != 0:
        failure = f"tokenbroker dev stopped with exit code {code}:\n{stack.log_tail()}"
    if leftovers:
        failure = (failure + "; " if failure else "") + "left running: " + ", ".join(leftovers)
    elapsed = time.monotonic() - started
    if failure is not None:
        say(f"demo FAILED after {elapsed:.1f}s: {failure}")
        return 1
    say()
    say("demo summary:")
    for step in steps:
        say(f"  ok  {step.area:<7} {step.text}")
    assert state is not None
    say(f"  ok  stopped tokenbroker dev (pid {state.pid}) and OpenBao (pid {state.openbao_pid})")
    say(f"demo passed in {elapsed:.1f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tokenbroker.devstack.demo``."""
    parser = argparse.ArgumentParser(
        prog="python -m tokenbroker.devstack.demo",
        description="Run the local stack and play a CI runner against it.",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("TOKENBROKER_DEMO_DATA_DIR"),
        help="keep the stack's data here (default: a temporary directory, removed after)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate_on_sigterm)
    try:
        with _data_dir(args.data_dir) as data_dir:
            return run_demo(data_dir)
    except KeyboardInterrupt:
        say("demo: interrupted; the stack was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
