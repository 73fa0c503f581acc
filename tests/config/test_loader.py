"""Config: TOML into validated models, env overrides, one line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tokenbroker.config import load_settings, parse_settings
from tokenbroker.errors import ConfigError
from tokenbroker.identity.profiles import profile_option_problems

ROOT = Path(__file__).resolve().parents[2]

ISSUER = {
    "name": "env0",
    "issuer": "https://login.app.env0.com/",
    "audiences": ["https://prod.env0.com"],
    "profile": "env0",
}


def problems_of(raw: dict[str, object], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, environ or {})
    return caught.value.problems


def test_the_example_config_is_valid() -> None:
    settings = load_settings(ROOT / "config.example.toml", {})
    assert [issuer.name for issuer in settings.issuers] == [
        "env0",
        "circleci-acme",
        "gitlab",
        "buildkite",
        "kubernetes-prod",
    ]
    assert [p for issuer in settings.issuers for p in profile_option_problems(issuer)] == []
    assert settings.credentials[0].settings["role"] == "env0-deployer"


def test_a_plain_http_jwks_uri_is_named_with_its_index() -> None:
    bad = {**ISSUER, "name": "b", "issuer": "https://b.example", "jwks_uri": "http://b.example/j"}
    assert problems_of({"issuers": [ISSUER, bad]}) == ["issuers[1].jwks_uri: not an https URL"]


def test_loopback_http_is_allowed_for_the_local_stack() -> None:
    local = {**ISSUER, "issuer": "http://127.0.0.1:8401/env0", "jwks_uri": "http://[::1]:1/j"}
    settings = parse_settings(
        {"security": {"allow_private_backends": True}, "issuers": [local]}, {}
    )
    assert settings.issuers[0].jwks_uri == "http://[::1]:1/j"


def test_loopback_issuers_are_refused_unless_private_backends_are_allowed() -> None:
    local = {**ISSUER, "issuer": "http://127.0.0.1:8401/env0", "jwks_uri": "http://[::1]:1/j"}
    assert problems_of({"issuers": [local]}) == [
        "issuers[0].issuer: not an https URL",
        "issuers[0].jwks_uri: not an https URL",
    ]


def test_every_problem_gets_its_own_line() -> None:
    bad = {"name": "x", "issuer": "ftp://x", "audiences": [], "profile": "No Such!"}
    problems = problems_of({"issuers": [bad], "server": {"port": 70000}})
    assert problems == [
        "server.port: Input should be less than or equal to 65535",
        "issuers[0].issuer: not an https URL",
        "issuers[0].audiences: List should have at least 1 item after validation, not 0",
        "issuers[0].profile: must be a profile name: 1-32 lowercase letters, digits, '_' or '-'",
    ]


def test_hs256_is_never_an_allowed_algorithm() -> None:
    assert problems_of({"issuers": [{**ISSUER, "algorithms": ["HS256"]}]}) == [
        "issuers[0].algorithms: algorithm 'HS256' is not allowed (asymmetric algorithms only)"
    ]


def test_unknown_keys_are_refused() -> None:
    assert problems_of({"server": {"prot": 1}}) == ["server.prot: Extra inputs are not permitted"]


def test_references_between_sections_must_resolve() -> None:
    problems = problems_of(
        {
            "issuers": [ISSUER],
            "organizations": [{"name": "acme", "issuer": "github", "platform_org_id": "1"}],
            "credentials": [{"organization": "acme", "name": "v", "type": "vault_oidc"}],
            "assignments": [{"organization": "acme", "project": "p", "credentials": ["nope"]}],
        }
    )
    assert problems == [
        "organizations[0].issuer: no issuer named 'github'",
        "assignments[0].credentials: no credential named 'nope' in organization 'acme'",
    ]


def test_admin_tokens_must_be_hashed() -> None:
    assert problems_of({"admin": {"tokens": ["plain-secret"]}}) == [
        "admin.tokens[0]: admin tokens must be given as 'sha256:<64 hex digits>'"
    ]


def test_environment_overrides_a_key_of_a_section() -> None:
    settings = parse_settings(
        {"server": {"port": 1}},
        {"TOKENBROKER_SERVER__PORT": "9000", "TOKENBROKER_LOGGING__FORMAT": "json"},
    )
    assert (settings.server.port, settings.logging.format) == (9000, "json")


def test_client_variables_with_the_prefix_are_not_config() -> None:
    settings = parse_settings({}, {"TOKENBROKER_URL": "x", "TOKENBROKER_PLATFORM_TOKEN": "y"})
    assert settings.server.port == 8400


def test_a_bad_override_is_reported_like_a_bad_key() -> None:
    assert problems_of({}, {"TOKENBROKER_SERVER__PORT": "many"}) == [
        "server.port: Input should be a valid integer, unable to parse string as an integer"
    ]


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert len(caught.value.problems) == 1
    assert "not valid TOML" in caught.value.problems[0]


def test_serve_with_a_bad_config_prints_the_problems_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[issuers]]\nname = "x"\nissuer = "http://example.com"\n')
    result = subprocess.run(
        [sys.executable, "-m", "tokenbroker", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "issuers[0].issuer: not an https URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_profiles_and_their_options_are_left_to_the_profiles() -> None:
    # Config sits below identity: the token validator checks them against the profiles.
    unknown = {**ISSUER, "profile": "jenkins", "options": {"project_pointer": "no-slash"}}
    assert parse_settings({"issuers": [unknown]}, {}).issuers[0].profile == "jenkins"


def test_a_postgresql_store_needs_an_encryption_key_before_anything_connects() -> None:
    assert problems_of({"store": {"url": "postgresql+asyncpg://127.0.0.1/test"}}) == [
        "store: encryption_key is required when the store is PostgreSQL, "
        "so that instances can share signing keys"
    ]


def test_rate_limits_default_to_an_in_process_bucket_per_organization() -> None:
    limits = parse_settings({}, {}).rate_limit
    assert (limits.enabled, limits.requests_per_minute, limits.burst) == (True, 600, 60)
    assert (limits.redis_url, limits.key) == (None, "organization")


def test_a_rate_limit_redis_url_must_be_redis_or_rediss() -> None:
    assert problems_of({"rate_limit": {"redis_url": "http://127.0.0.1:6379/0"}}) == [
        "rate_limit.redis_url: not a redis:// or rediss:// URL"
    ]


def test_a_rate_limit_redis_url_path_is_a_database_number() -> None:
    assert problems_of({"rate_limit": {"redis_url": "redis://cache.internal/rate"}}) == [
        "rate_limit.redis_url: the path must be a database number, e.g. /0"
    ]


def test_a_rate_limit_redis_url_cannot_turn_off_tls_verification() -> None:
    url = "rediss://:pw@cache.internal:6380/0?ssl_cert_reqs=none"
    assert problems_of({"rate_limit": {"redis_url": url}}) == [
        "rate_limit.redis_url: TLS verification of Redis cannot be turned off"
    ]


def test_a_bad_rate_limit_redis_url_is_reported_without_its_password() -> None:
    problems = problems_of({"rate_limit": {"redis_url": "http://:hunter2@cache.internal/0"}})
    assert "hunter2" not in "\n".join(problems)


def test_a_rate_limit_counts_organizations_projects_or_subjects() -> None:
    assert problems_of({"rate_limit": {"key": "ip", "burst": 0}}) == [
        "rate_limit.burst: Input should be greater than or equal to 1",
        "rate_limit.key: Input should be 'organization', 'project' or 'subject'",
    ]


def test_the_environment_overrides_rate_limit_keys() -> None:
    limits = parse_settings(
        {},
        {
            "TOKENBROKER_RATE_LIMIT__REDIS_URL": "rediss://:pw@cache.internal:6380/2",
            "TOKENBROKER_RATE_LIMIT__REQUESTS_PER_MINUTE": "120",
            "TOKENBROKER_RATE_LIMIT__ENABLED": "false",
        },
    ).rate_limit
    assert limits.redis_url == "rediss://:pw@cache.internal:6380/2"
    assert (limits.requests_per_minute, limits.enabled) == (120, False)


def test_the_store_has_no_redis_url() -> None:
    assert problems_of({"store": {"redis_url": "redis://127.0.0.1:6379/0"}}) == [
        "store.redis_url: Extra inputs are not permitted"
    ]
