"""A dev platform issuer: mints env0, CircleCI, Gitpod and GitHub shaped tokens, really signed.

Each profile is its own issuer (``{base_url}/{profile}``; CircleCI, like the real one, one per
organization: ``{base_url}/circleci/org/{org}``) with its own RSA key (RS256, as env0 and Gitpod
sign), kept in a directory (files 0600) so tokens minted by one process verify in another.
``create_issuer_app`` serves every profile's discovery document and JWKS.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey

from tokenbroker.clock import Clock, SystemClock
from tokenbroker.config.models import IssuerSettings

DevProfile = Literal["env0", "circleci", "gitpod", "github"]
DEV_PROFILES: tuple[DevProfile, ...] = get_args(DevProfile)
DEFAULT_BASE_URL = "http://127.0.0.1:8401"
ALGORITHM = "RS256"
# Kept in the JWKS after a rotation, so tokens signed just before it still verify.
PUBLISHED_KEYS = 2
JWKS_MAX_AGE_SECONDS = 300

# Lifetimes the platforms use: env0 24 h, CircleCI 1 h; Gitpod's and GitHub's are short too.
DEFAULT_LIFETIMES: Mapping[DevProfile, int] = {
    "env0": 24 * 3600,
    "circleci": 3600,
    "gitpod": 3600,
    "github": 300,
}
ENV0_AUDIENCE = "https://prod.env0.com"
DEV_AUDIENCE = "tokenbroker"
ENV0_DEPRECATED_PREFIX = "https://env0.com/"
ENV0_AWS_TAGS = "https://aws.amazon.com/tags"
CIRCLECI_CLAIM = "oidc.circleci.com/"


def _profile(name: str) -> DevProfile:
    if name not in DEV_PROFILES:
        raise ValueError(f"unknown dev profile {name!r} (one of {', '.join(DEV_PROFILES)})")
    return name


class DevPlatformIssuer:
    """Signing keys and token shapes of the four dev platform issuers."""

    def __init__(
        self,
        keys_dir: Path,
        base_url: str = DEFAULT_BASE_URL,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.keys_dir = keys_dir
        self.base_url = base_url.rstrip("/")
        self.clock: Clock = clock or SystemClock()
        self._keys: dict[DevProfile, list[RSAKey]] = {}

    # -- issuers ---------------------------------------------------------------------------

    def issuer_url(self, profile: str, *, org: str | None = None) -> str:
        """The ``iss`` of a profile's tokens (CircleCI's names the organization)."""
        name = _profile(profile)
        if name == "circleci":
            if not org:
                raise ValueError("the circleci issuer URL names an organization: pass org")
            return f"{self.base_url}/circleci/org/{org}"
        return f"{self.base_url}/{name}"

    def jwks_url(self, profile: str, *, org: str | None = None) -> str:
        """Where a profile's JWKS is served."""
        if _profile(profile) == "circleci":
            return f"{self.issuer_url(profile, org=org)}/.well-known/jwks-pub.json"
        return f"{self.issuer_url(profile)}/.well-known/jwks.json"

    def default_audience(self, profile: str, *, org: str | None = None) -> str:
        """The ``aud`` a profile's token gets when none is asked for (CircleCI: the org id)."""
        name = _profile(profile)
        if name == "env0":
            return ENV0_AUDIENCE
        if name == "circleci":
            if not org:
                raise ValueError("the circleci default audience is the organization: pass org")
            return org
        return DEV_AUDIENCE

    def issuer_settings(
        self,
        profile: str,
        *,
        audiences: list[str] | None = None,
        org: str | None = None,
        **overrides: object,
    ) -> IssuerSettings:
        """IssuerSettings trusting this dev issuer (keys through OIDC discovery by default)."""
        name = _profile(profile)
        values: dict[str, object] = {
            "name": f"dev-{name}" if name != "circleci" else f"dev-circleci-{org}",
            "issuer": self.issuer_url(name, org=org),
            "audiences": audiences or [self.default_audience(name, org=org)],
            "profile": name,
            "algorithms": [ALGORITHM],
        }
        if name == "env0":
            values["required_claims"] = {"apiKeyType": "oidc"}
        values.update(overrides)
        return IssuerSettings.model_validate(values)

    def discovery_document(self, profile: str, *, org: str | None = None) -> dict[str, object]:
        """The OIDC discovery document of a profile's issuer."""
        return {
            "issuer": self.issuer_url(profile, org=org),
            "jwks_uri": self.jwks_url(profile, org=org),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "claims_supported": ["sub", "aud", "exp", "iat", "iss"],
        }

    # -- keys ------------------------------------------------------------------------------

    def signing_key(self, profile: str) -> RSAKey:
        """The key new tokens of a profile are signed with (created on first use)."""
        return self._keyring(_profile(profile))[-1]

    def public_jwks(self, profile: str) -> dict[str, object]:
        """The JWKS of a profile: its active key and the one before it, public parts only."""
        keys = self._keyring(_profile(profile))[-PUBLISHED_KEYS:]
        return {"keys": [key.as_dict(private=False) for key in reversed(keys)]}

    def rotate(self, profile: str) -> str:
        """Start signing a profile's tokens with a new key; return its kid."""
        name = _profile(profile)
        keys = [*self._keyring(name), _new_key()][-PUBLISHED_KEYS:]
        _write_private(self._key_file(name), keys, replace=True)
        self._keys[name] = keys
        kid = keys[-1].kid
        assert kid is not None
        return kid

    def _keyring(self, profile: DevProfile) -> list[RSAKey]:
        keys = self._keys.get(profile)
        if keys is None:
            path = self._key_file(profile)
            if not path.exists():
                # Another process may create it at the same moment; the first one wins.
                _write_private(path, [_new_key()], replace=False)
            keys = self._keys[profile] = _read_private(path)
        return keys

    def _key_file(self, profile: DevProfile) -> Path:
        return self.keys_dir / f"{profile}.jwks.json"

    # -- tokens ----------------------------------------------------------------------------

    def sign(
        self,
        profile: str,
        claims: Mapping[str, object],
        *,
        header: Mapping[str, object] | None = None,
    ) -> str:
        """Sign arbitrary claims with a profile's active key (``kid`` and ``alg`` set)."""
        key = self.signing_key(profile)
        full_header: dict[str, object] = {"alg": ALGORITHM, "kid": key.kid, **(header or {})}
        return jwt.encode(full_header, dict(claims), key, algorithms=[ALGORITHM])

    def mint(
        self,
        profile: str,
        *,
        org: str,
        project: str,
        audience: str | None = None,
        claims: Mapping[str, object] | None = None,
        lifetime_seconds: int | None = None,
        environment: str | None = None,
        issued_at: float | None = None,
    ) -> str:
        """A signed token shaped like the platform's own; ``claims`` override (None removes)."""
        return self.sign(
            profile,
            self.claims_for(
                profile,
                org=org,
                project=project,
                audience=audience,
                claims=claims,
                lifetime_seconds=lifetime_seconds,
                environment=environment,
                issued_at=issued_at,
            ),
        )

    def claims_for(
        self,
        profile: str,
        *,
        org: str,
        project: str,
        audience: str | None = None,
        claims: Mapping[str, object] | None = None,
        lifetime_seconds: int | None = None,
        environment: str | None = None,
        issued_at: float | None = None,
    ) -> dict[str, object]:
        """The claims ``mint`` signs, for tests that want to alter them first."""
        name = _profile(profile)
        iat = int(self.clock.now() if issued_at is None else issued_at)
        lifetime = DEFAULT_LIFETIMES[name] if lifetime_seconds is None else lifetime_seconds
        aud = audience or self.default_audience(name, org=org)
        base: dict[str, object] = {"iss": self.issuer_url(name, org=org), "iat": iat}
        overrides = dict(claims or {})
        if name == "env0":
            shaped = _env0_claims(org, project, environment, aud)
        elif name == "circleci":
            shaped = _circleci_claims(org, project, aud, overrides)
        elif name == "gitpod":
            shaped = _gitpod_claims(org, project, environment, aud)
        else:
            shaped = _github_claims(org, project, environment, aud, iat)
        merged = {**base, **shaped, "exp": iat + lifetime, **overrides}
        return {key: value for key, value in merged.items() if value is not None}


def _env0_claims(
    org: str, project: str, environment: str | None, audience: str
) -> dict[str, object]:
    env = environment or str(uuid.uuid4())
    custom: dict[str, object] = {
        "apiKeyType": "oidc",
        "organizationId": org,
        "projectId": project,
        "projectName": f"Project {project[:8]}",
        "templateId": str(uuid.uuid4()),
        "templateName": "Dev Template",
        "environmentId": env,
        "environmentName": f"Environment {env[:8]}",
        "workspaceName": f"env0{env[:6]}",
        "deployerEmail": "deployer@example.com",
        "deploymentLogId": str(uuid.uuid4()),
    }
    tags = ("organizationId", "projectId", "templateId", "environmentId", "deployerEmail")
    return {
        ENV0_AWS_TAGS: {"principal_tags": {tag: [custom[tag]] for tag in tags}},
        **custom,
        "organization": org,
        **{ENV0_DEPRECATED_PREFIX + k: v for k, v in custom.items()},
        "sub": f"auth0|{secrets.token_hex(12)}",
        "aud": [audience],
        "azp": secrets.token_urlsafe(24),
        "gty": "password",
    }


def _circleci_claims(
    org: str, project: str, audience: str, overrides: Mapping[str, object]
) -> dict[str, object]:
    # The v2 subject embeds vcs-origin and vcs-ref, so it follows overrides of those claims.
    origin = overrides.get(CIRCLECI_CLAIM + "vcs-origin", "github.com/example-org/example-repo")
    ref = overrides.get(CIRCLECI_CLAIM + "vcs-ref", "refs/heads/main")
    user = str(uuid.uuid4())
    return {
        "sub": f"org/{org}/project/{project}/user/{user}/vcs-origin/{origin}/vcs-ref/{ref}",
        "aud": audience,
        CIRCLECI_CLAIM + "project-id": project,
        CIRCLECI_CLAIM + "vcs-origin": origin,
        CIRCLECI_CLAIM + "vcs-ref": ref,
        CIRCLECI_CLAIM + "context-ids": [str(uuid.uuid4())],
        CIRCLECI_CLAIM + "ssh-rerun": False,
    }


def _gitpod_claims(
    org: str, project: str, environment: str | None, audience: str
) -> dict[str, object]:
    env = environment or str(uuid.uuid4())
    return {"sub": f"org:{org}/prj:{project}/env:{env}", "aud": audience, "org": org}


def _github_claims(
    org: str, project: str, environment: str | None, audience: str, iat: int
) -> dict[str, object]:
    repository = project if "/" in project else f"{org}/{project}"
    ref = "refs/heads/main"
    workflow_ref = f"{repository}/.github/workflows/deploy.yml@{ref}"
    subject = (
        f"repo:{repository}:environment:{environment}"
        if environment
        else f"repo:{repository}:ref:{ref}"
    )
    return {
        "jti": str(uuid.uuid4()),
        "sub": subject,
        "aud": audience,
        "ref": ref,
        "sha": secrets.token_hex(20),
        "repository": repository,
        "repository_owner": org,
        "repository_owner_id": str(secrets.randbelow(10**8)),
        "repository_id": str(secrets.randbelow(10**9)),
        "repository_visibility": "private",
        "run_id": str(secrets.randbelow(10**10)),
        "run_number": "1",
        "run_attempt": "1",
        "actor": "octocat",
        "actor_id": "583231",
        "workflow": "deploy",
        "workflow_ref": workflow_ref,
        "job_workflow_ref": workflow_ref,
        "event_name": "push",
        "ref_type": "branch",
        "environment": environment,
        "runner_environment": "github-hosted",
        "nbf": iat - 5,
    }


def _new_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"use": "sig", "alg": ALGORITHM}, auto_kid=True)


def _write_private(path: Path, keys: list[RSAKey], *, replace: bool) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    document = {"keys": [key.as_dict(private=True) for key in keys]}
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    # Created 0600 from the start: the private key is never readable by others, not even briefly.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        if replace:
            os.replace(temporary, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _read_private(path: Path) -> list[RSAKey]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return [RSAKey.import_key(data) for data in document["keys"]]


def create_issuer_app(issuer: DevPlatformIssuer) -> web.Application:
    """An aiohttp app serving every dev profile's discovery document and JWKS."""
    cache = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"}

    async def discovery(request: web.Request) -> web.Response:
        profile = _route_profile(request)
        document = issuer.discovery_document(profile, org=request.match_info.get("org"))
        return web.json_response(document, headers=cache)

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(issuer.public_jwks(_route_profile(request)), headers=cache)

    app = web.Application()
    for profile in DEV_PROFILES:
        if profile == "circleci":
            app.router.add_get("/circleci/org/{org}/.well-known/openid-configuration", discovery)
            app.router.add_get("/circleci/org/{org}/.well-known/jwks-pub.json", jwks)
        else:
            app.router.add_get(f"/{profile}/.well-known/openid-configuration", discovery)
            app.router.add_get(f"/{profile}/.well-known/jwks.json", jwks)
    return app


def _route_profile(request: web.Request) -> DevProfile:
    return _profile(request.path.split("/", 2)[1])
