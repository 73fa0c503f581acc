"""The ``aws_oidc`` backend: AWS STS ``AssumeRoleWithWebIdentity`` with the outbound token.

AWS checks the token against the role's trust policy (the OIDC provider, ``aud``, ``sub`` and,
for minted tokens, the session tags under ``https://aws.amazon.com/tags``) and answers with
temporary credentials.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import re
import string
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, ClassVar, Final

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
)

from tokenbroker.backends.base import BackendContext, CredentialSettings, IssuedCredential
from tokenbroker.clock import isoformat_utc
from tokenbroker.config.urls import require_backend_url
from tokenbroker.errors import (
    AccessDenied,
    InvalidRequest,
    UpstreamError,
    UpstreamTimeout,
)
from tokenbroker.identity.models import Identity
from tokenbroker.retry import RetryPolicy, Sleep, TransientFailure, retry_transient

if TYPE_CHECKING:
    from mypy_boto3_sts.client import STSClient
    from mypy_boto3_sts.type_defs import AssumeRoleWithWebIdentityResponseTypeDef

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$", re.A)
_POLICY_ARN = re.compile(
    r"^arn:aws[a-z-]*:iam::(?:\d{12}|aws):policy/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,128}$", re.A
)
_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")
_SESSION_NAME_UNSAFE = re.compile(r"[^\w+=,.@-]+", re.A)
_TAG_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9 _.:/=+@-]+")

SESSION_NAME_FIELDS: Final = frozenset(
    {"issuer", "org", "project", "subject", "environment", "deployment", "actor"}
)
DEFAULT_SESSION_NAME: Final = "{project}-{deployment}"
_SESSION_NAME_MIN, _SESSION_NAME_MAX, _SESSION_NAME_HASH = 2, 64, 8
_SESSION_NAME_FALLBACK: Final = "tokenbroker"

# Session tags: AWS allows 50 per session, values up to 256 characters of a narrow charset.
AWS_TAGS_CLAIM: Final = "https://aws.amazon.com/tags"
_TAG_VALUE_MAX = 256
_SESSION_TAGS: Final = (
    ("organizationId", "org"),
    ("projectId", "project"),
    ("environmentId", "environment"),
    ("deploymentId", "deployment"),
    ("deployerEmail", "actor"),
)

# STS error codes, as AWS documents them for AssumeRoleWithWebIdentity.
_REFUSED_CODES: Final = frozenset(
    {"AccessDenied", "IDPRejectedClaim", "InvalidIdentityToken", "ExpiredTokenException"}
)
_REJECTED_CODES: Final = frozenset(
    {
        "MalformedPolicyDocument",
        "ValidationError",
        "PackedPolicyTooLarge",
        "RegionDisabledException",
    }
)
_TRANSIENT_CODES: Final = frozenset(
    {
        "IDPCommunicationError",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalFailure",
    }
)

_POOL_SIZE = 16
_CONNECT_TIMEOUT_SECONDS = 3.0
_MESSAGE_MAX = 300

logger = logging.getLogger(__name__)

# botocore refreshes a credential 15 minutes before it expires (advisory; 10 minutes:
# mandatory, every call blocks), the JS and Go SDKs 5 minutes before. A credential of 900 s, the
# least STS grants, is inside that window the moment it arrives. A warning, not a refusal: the
# value is valid for STS, `env`/`shell` output never refreshes, and a role may need it.
SDK_ADVISORY_REFRESH_SECONDS: Final = 15 * 60
COMFORTABLE_DURATION_SECONDS: Final = 900 + SDK_ADVISORY_REFRESH_SECONDS


def _role_arn(value: str) -> str:
    if not _ROLE_ARN.match(value):
        raise ValueError("must be an IAM role ARN like arn:aws:iam::123456789012:role/name")
    return value


def _policy_arn(value: str) -> str:
    if not _POLICY_ARN.match(value):
        raise ValueError("must be an IAM policy ARN like arn:aws:iam::aws:policy/ReadOnlyAccess")
    return value


def _sts_endpoint(value: str, info: ValidationInfo) -> str:
    require_backend_url(value, info)
    return value.rstrip("/")


RoleArn = Annotated[str, AfterValidator(_role_arn)]
PolicyArn = Annotated[str, AfterValidator(_policy_arn)]
StsEndpoint = Annotated[str, AfterValidator(_sts_endpoint)]


class AwsOidcSettings(CredentialSettings):
    """Settings of an ``aws_oidc`` credential: the role to assume and how."""

    role_arn: RoleArn
    # A template over identity fields, rendered per exchange and sanitized for AWS.
    session_name: str = Field(default=DEFAULT_SESSION_NAME, min_length=1, max_length=256)
    duration_seconds: int = Field(default=3600, ge=900, le=43200)
    region: str = "us-east-1"
    sts_endpoint: StsEndpoint | None = None
    # "multiline": forms (the console) show the JSON policy in a text area.
    policy: str | None = Field(default=None, max_length=2048, json_schema_extra={"multiline": True})
    policy_arns: list[PolicyArn] = Field(default_factory=list, max_length=10)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_retries: int = Field(default=2, ge=0, le=5)

    @field_validator("session_name")
    @classmethod
    def _session_name_template(cls, value: str) -> str:
        check_session_name_template(value)
        return value

    def advisories(self) -> list[str]:
        """A lifetime that botocore would refresh at once, or within minutes, is named."""
        if self.duration_seconds >= COMFORTABLE_DURATION_SECONDS:
            return []
        usable = self.duration_seconds - SDK_ADVISORY_REFRESH_SECONDS
        window = f"the AWS SDKs' {SDK_ADVISORY_REFRESH_SECONDS // 60}-minute refresh window"
        effect = (
            f"is inside {window} on arrival: every SDK call runs credential_process again"
            if usable <= 0
            else f"leaves {usable} s before {window}: credential_process runs every {usable} s"
        )
        return [
            f"duration_seconds = {self.duration_seconds} {effect}; use at least "
            f"{COMFORTABLE_DURATION_SECONDS} (3600, AWS's default, is what the dev stack uses)"
        ]

    @field_validator("region")
    @classmethod
    def _region_name(cls, value: str) -> str:
        if not _REGION.match(value):
            raise ValueError("must be an AWS region name like us-east-1")
        return value

    @field_validator("policy")
    @classmethod
    def _policy_document(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            document = json.loads(value)
        except ValueError as exc:
            raise ValueError("policy must be a JSON policy document") from exc
        if not isinstance(document, dict):
            raise ValueError("policy must be a JSON object")
        return value


def check_session_name_template(template: str) -> None:
    """Raise ValueError unless the template only uses plain ``{field}`` identity placeholders."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"session_name is not a valid template: {exc}") from exc
    for _literal, field_name, format_spec, conversion in parts:
        if field_name is None:
            continue
        # Plain names only: attribute or index access in a format string can reach any object.
        if field_name not in SESSION_NAME_FIELDS or format_spec or conversion:
            known = ", ".join(sorted(SESSION_NAME_FIELDS))
            raise ValueError(f"session_name placeholders must be one of {{{known}}}")


def render_session_name(template: str, identity: Identity) -> str:
    """Render the session name template for an identity, sanitized for AWS (2..64 chars)."""
    check_session_name_template(template)
    fields = {name: getattr(identity, name) or "" for name in SESSION_NAME_FIELDS}
    rendered = template.format_map(fields)
    return sanitize_session_name(rendered)


def sanitize_session_name(value: str) -> str:
    """Replace what AWS refuses in a role session name and fit it into 2..64 characters."""
    cleaned = _SESSION_NAME_UNSAFE.sub("-", value).strip("-")
    if len(cleaned) > _SESSION_NAME_MAX:
        # Cut, but keep names of different sessions apart: end with a hash of the whole name.
        digest = hashlib.sha256(cleaned.encode()).hexdigest()[:_SESSION_NAME_HASH]
        cleaned = f"{cleaned[: _SESSION_NAME_MAX - _SESSION_NAME_HASH - 1]}-{digest}"
    if len(cleaned) < _SESSION_NAME_MIN:
        cleaned = f"{_SESSION_NAME_FALLBACK}-{cleaned}" if cleaned else _SESSION_NAME_FALLBACK
    return cleaned


def sanitize_tag_value(value: str) -> str:
    """Fit a value into AWS's session tag charset (letters, digits, `` _.:/=+-@``) and length."""
    return _TAG_VALUE_UNSAFE.sub("_", value)[:_TAG_VALUE_MAX]


# STS takes a web identity token's source identity from this claim; it follows the session
# through role chaining and into CloudTrail ([\w+=,.@-]{2,64}, as a session name).
AWS_SOURCE_IDENTITY_CLAIM: Final = "https://aws.amazon.com/source_identity"


def aws_session_tags(identity: Identity) -> dict[str, object]:
    """The ``https://aws.amazon.com/tags`` claim of a minted token: principal, transitive tags."""
    principal_tags: dict[str, list[str]] = {}
    for tag, attribute in _SESSION_TAGS:
        value = getattr(identity, attribute)
        if value:
            principal_tags[tag] = [sanitize_tag_value(str(value))]
    # Transitive so the tenancy tags survive role chaining: a chained role cannot drop them.
    return {"principal_tags": principal_tags, "transitive_tag_keys": sorted(principal_tags)}


def _redact(message: str, secret: str) -> str:
    # STS does not echo the token, but a description must never carry it even if it did.
    if secret:
        message = message.replace(secret, "[redacted]")
    return message[:_MESSAGE_MAX]


CREDENTIAL_PROCESS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def render_aws_credential_process(issued: IssuedCredential) -> dict[str, object]:
    """AWS's ``credential_process`` Version 1 document."""
    missing = [key for key in CREDENTIAL_PROCESS_KEYS if key not in issued.values]
    if missing:
        raise InvalidRequest(
            "format_not_supported",
            "format aws-credential-process needs AWS credentials; this credential has none",
        )
    return {
        "Version": 1,
        "AccessKeyId": issued.values["AWS_ACCESS_KEY_ID"],
        "SecretAccessKey": issued.values["AWS_SECRET_ACCESS_KEY"],
        "SessionToken": issued.values["AWS_SESSION_TOKEN"],
        "Expiration": isoformat_utc(issued.expires_at),
    }


class AwsOidcBackend:
    """Assume an IAM role with the outbound token through AWS STS."""

    type_name: ClassVar[str] = "aws_oidc"
    settings_model: ClassVar[type[BaseModel]] = AwsOidcSettings
    # The SDKs' credential_process: one JSON document, re-run when it nears its Expiration.
    output_formats: ClassVar[frozenset[str]] = frozenset({"aws-credential-process"})

    def __init__(
        self,
        context: BackendContext,
        *,
        pool_size: int = _POOL_SIZE,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._context = context
        self._sleep = sleep
        # boto3 is synchronous: its calls run in this bounded pool, off the event loop.
        self._pool = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="tokenbroker-aws")
        self._pool_size = pool_size
        # A boto3 session is not thread-safe while it creates clients; the lock guards that.
        self._session = boto3.session.Session()
        self._clients: dict[tuple[str | None, str, float], STSClient] = {}
        self._clients_lock = threading.Lock()
        _keep_botocore_debug_quiet()

    def sts_client(
        self, region: str, endpoint: str | None, timeout_seconds: float = 10.0
    ) -> STSClient:
        """The STS client for an endpoint and region, created on first use and then reused.

        Creating a boto3 client is expensive (it loads service models); clients are thread-safe.
        """
        key = (endpoint, region, timeout_seconds)
        with self._clients_lock:
            client = self._clients.get(key)
            if client is None:
                client = self._session.client(
                    "sts",
                    region_name=region,
                    endpoint_url=endpoint,
                    config=Config(
                        # AssumeRoleWithWebIdentity is authenticated by the token, not by AWS keys.
                        signature_version=UNSIGNED,
                        # Our retry policy is the only one: botocore makes exactly one attempt.
                        retries={"mode": "standard", "total_max_attempts": 1},
                        connect_timeout=min(_CONNECT_TIMEOUT_SECONDS, timeout_seconds),
                        read_timeout=timeout_seconds,
                        max_pool_connections=self._pool_size,
                    ),
                )
                self._clients[key] = client
        return client

    async def exchange(
        self, identity: Identity, outbound_token: str, settings: BaseModel
    ) -> IssuedCredential:
        """Call AssumeRoleWithWebIdentity; map STS's answer to credentials or a BrokerError."""
        assert isinstance(settings, AwsOidcSettings)
        session_name = render_session_name(settings.session_name, identity)
        call = functools.partial(self._assume_role, settings, session_name, outbound_token)
        loop = asyncio.get_running_loop()

        async def attempt() -> AssumeRoleWithWebIdentityResponseTypeDef:
            return await loop.run_in_executor(self._pool, call)

        response = await retry_transient(
            attempt, policy=RetryPolicy(retries=settings.max_retries), sleep=self._sleep
        )
        return _issued_credential(response, settings, session_name)

    @staticmethod
    def render_format(fmt: str, issued: IssuedCredential) -> tuple[str, str]:
        """``aws-credential-process``: the document ``credential_process`` must print."""
        if fmt != "aws-credential-process":
            raise InvalidRequest("format_not_supported", f"aws_oidc does not render {fmt}")
        return "application/json", json.dumps(render_aws_credential_process(issued))

    def outbound_claims(self, identity: Identity, job: str) -> Mapping[str, object]:
        """Claims for a minted outbound token: the identity's session tags, and the job as the
        session's source identity (CloudTrail names it on every call the session makes)."""
        return {
            AWS_TAGS_CLAIM: aws_session_tags(identity),
            AWS_SOURCE_IDENTITY_CLAIM: sanitize_session_name(job),
        }

    async def close(self) -> None:
        """Shut the thread pool down; the app calls this at cleanup."""
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self._pool.shutdown, wait=True, cancel_futures=True)
        )

    def _assume_role(
        self, settings: AwsOidcSettings, session_name: str, token: str
    ) -> AssumeRoleWithWebIdentityResponseTypeDef:
        client = self.sts_client(settings.region, settings.sts_endpoint, settings.timeout_seconds)
        params: dict[str, object] = {
            "RoleArn": settings.role_arn,
            "RoleSessionName": session_name,
            "WebIdentityToken": token,
            "DurationSeconds": settings.duration_seconds,
        }
        if settings.policy is not None:
            params["Policy"] = settings.policy
        if settings.policy_arns:
            params["PolicyArns"] = [{"arn": arn} for arn in settings.policy_arns]
        try:
            return client.assume_role_with_web_identity(**params)  # type: ignore[arg-type]
        except ClientError as exc:
            raise _map_client_error(exc, token) from None
        except (ConnectTimeoutError, ReadTimeoutError):
            raise UpstreamTimeout("backend_timeout", "AWS STS did not answer in time") from None
        except (EndpointConnectionError, ConnectionClosedError) as exc:
            raise TransientFailure(
                UpstreamError(
                    "backend_unreachable", f"AWS STS could not be reached ({type(exc).__name__})"
                )
            ) from None
        except ParamValidationError:
            raise InvalidRequest(
                "backend_rejected_request", "AWS STS parameters do not validate"
            ) from None
        except BotoCoreError as exc:
            raise UpstreamError(
                "backend_error", f"AWS STS call failed ({type(exc).__name__})"
            ) from None


def _map_client_error(exc: ClientError, token: str) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = _redact(str(error.get("Message", "")), token)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    detail = f"{message} ({code})" if message else code
    if code in _REFUSED_CODES:
        return AccessDenied("backend_refused", f"AWS STS refused the token: {detail}")
    if code in _REJECTED_CODES:
        return InvalidRequest("backend_rejected_request", f"AWS STS rejected the request: {detail}")
    if code in _TRANSIENT_CODES or status >= 500:
        return TransientFailure(UpstreamError("backend_error", f"AWS STS failed: {detail}"))
    if status == 403:
        return AccessDenied("backend_refused", f"AWS STS refused the token: {detail}")
    if 400 <= status < 500:
        return InvalidRequest("backend_rejected_request", f"AWS STS rejected the request: {detail}")
    return UpstreamError("backend_error", f"AWS STS failed: {detail}")


def _issued_credential(
    response: AssumeRoleWithWebIdentityResponseTypeDef,
    settings: AwsOidcSettings,
    session_name: str,
) -> IssuedCredential:
    credentials = response["Credentials"]
    # botocore parses Expiration into the local timezone; the broker speaks UTC.
    expiration: datetime = credentials["Expiration"].astimezone(UTC)
    metadata: dict[str, object] = {
        "assumed_role_arn": response["AssumedRoleUser"]["Arn"],
        "assumed_role_id": response["AssumedRoleUser"]["AssumedRoleId"],
        "session_name": session_name,
        "expiration": expiration.isoformat(),
    }
    subject = response.get("SubjectFromWebIdentityToken")
    if subject:
        metadata["subject_from_web_identity_token"] = subject
    return IssuedCredential(
        values={
            "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"],
            "AWS_REGION": settings.region,
            "AWS_DEFAULT_REGION": settings.region,
        },
        expires_at=expiration,
        metadata=metadata,
    )


def _keep_botocore_debug_quiet() -> None:
    # botocore's DEBUG logs print request and response bodies: the web identity token and the
    # secret key. Whatever the app's log level, those loggers stay at INFO or above.
    for name in ("botocore", "boto3"):
        botocore_logger = logging.getLogger(name)
        if botocore_logger.level < logging.INFO:
            botocore_logger.setLevel(logging.INFO)
