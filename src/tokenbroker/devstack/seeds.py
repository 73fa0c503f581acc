"""The dev stack's fixed data: ids and names, and one seeded organization per platform.

Plain data, no logic: adding a platform to the dev stack is one ``DevSeed`` line here. The
first seed is the demo's platform: the printed runner commands, the demo and the GCP pool use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

# Fixed ids, so the printed commands stay the same from one run to the next.
ORGANIZATION: Final = "dev"
# The demo platform's (env0's) organization.
DEMO_ORG_ID: Final = "6f1d4e1a-3c0b-4d2e-9a57-0d3e5f1a2b01"
PROJECT_ID: Final = "a3c2b1d0-5e4f-4a8b-9c7d-1e2f3a4b5c01"
PROD_ENVIRONMENT_ID: Final = "c0ffee00-1234-4abc-8def-00000000beef"

VAULT_ROLE: Final = "env0-deployer"
VAULT_POLICY: Final = "env0-access"
KV_MOUNT: Final = "secrets-for-env0"
PASSTHROUGH_AUTH_PATH: Final = "jwt"
MINT_AUTH_PATH: Final = "broker"
VAULT_MINT_AUDIENCE: Final = "openbao-dev"
VAULT_TOKEN_TTL: Final = "1h"
AWS_ROLE_NAME: Final = "env0-deployer"
AWS_AUDIENCE: Final = "sts.amazonaws.com"
AWS_REGION: Final = "us-east-1"
# An hour, as AWS defaults to: a credential of 15 minutes or less is inside botocore's advisory
# refresh window the moment it arrives, so every SDK call would run credential_process again.
AWS_DURATION_SECONDS: Final = 3600
GCP_PROJECT_NUMBER: Final = "123456789012"
GCP_POOL: Final = f"projects/{GCP_PROJECT_NUMBER}/locations/global/workloadIdentityPools/dev-pool"
GCP_PROVIDER: Final = f"//iam.googleapis.com/{GCP_POOL}/providers/env0-dev"
GCP_SERVICE_ACCOUNT: Final = "deployer@dev-project.iam.gserviceaccount.com"
OIDC_AUDIENCE: Final = "dev-audience"
AZURE_TENANT_ID: Final = "0d2c4b6a-8e1f-4a3b-9c5d-7e6f8a9b0c01"
AZURE_CLIENT_ID: Final = "1e3d5c7b-9f2a-4b4c-8d6e-8f7a9b0c1d01"
AZURE_SUBSCRIPTION_ID: Final = "2f4e6d8c-0a3b-4c5d-9e7f-9a8b0c1d2e01"
# The demo platform's `sub` that the Azure app's federated credential names: Entra ID matches
# it exactly, so a platform whose subject is stable per organization (env0's) is what it keys on.
AZURE_FEDERATED_SUBJECT: Final = "auth0|dev-env0-organization"
ENTRA_CA_FILE: Final = "entra-ca.pem"

# name -> type, in the order they are printed. `prod-vault` is bound to one environment, so a
# token of any other environment shows a denial with its dry-run explanation.
CREDENTIALS: Final[Mapping[str, str]] = {
    "dev-vault": "vault_oidc",
    "dev-vault-mint": "vault_oidc",
    "dev-aws": "aws_oidc",
    "dev-gcp": "gcp_oidc",
    "dev-azure": "azure_oidc",
    "dev-oidc": "oidc_token",
    "prod-vault": "vault_oidc",
}
DENIED_CREDENTIAL: Final = "prod-vault"
# What every platform's organization gets: the credentials that need no platform-specific
# trust beyond OpenBao's passthrough mount of its own issuer.
COMMON_CREDENTIALS: Final = ("dev-vault", "dev-vault-mint", "dev-aws", "dev-oidc")


@dataclass(frozen=True)
class DevSeed:
    """One platform's seeded organization: who it is on the platform and what it may get.

    ``vault_bound_claims`` are the platform's own claims OpenBao's passthrough role binds (the
    organization fence the platform's token format offers); ``vault_auth_path`` is that mount.
    """

    profile: str
    organization: str
    platform_org_id: str
    project: str
    vault_auth_path: str
    vault_bound_claims: Mapping[str, str]
    credentials: tuple[str, ...] = COMMON_CREDENTIALS


# One line a platform. The ids are what `tokenbroker token mint --org/--project` takes (GitHub's
# are the owner's and the repository's ids); Gitpod's project travels in `sub`, CircleCI's org
# in `iss`.
SEEDS: Final[tuple[DevSeed, ...]] = (
    DevSeed(
        "env0",
        ORGANIZATION,
        DEMO_ORG_ID,
        PROJECT_ID,
        PASSTHROUGH_AUTH_PATH,
        {"organizationId": DEMO_ORG_ID, "apiKeyType": "oidc"},
        tuple(CREDENTIALS),
    ),
    DevSeed(
        "circleci",
        "dev-circleci",
        "0e6c0a59-7b3d-4f2a-8c1e-5d4b3a2f1e01",
        "7d2b9c41-0a6e-4f3b-8d15-2c9e4a7b6f01",
        "jwt-circleci",
        {"oidc.circleci.com/project-id": "7d2b9c41-0a6e-4f3b-8d15-2c9e4a7b6f01"},
    ),
    DevSeed(
        "gitpod",
        "dev-gitpod",
        "5b8e2f7c-9d41-4a06-b3e2-71c0d9a4e801",
        "e4a1c7d9-2b5f-4e83-9a60-3f7d1b2c8e01",
        "jwt-gitpod",
        {"org": "5b8e2f7c-9d41-4a06-b3e2-71c0d9a4e801"},
    ),
    DevSeed(
        "github",
        "dev-github",
        "51102340",
        "772041108",
        "jwt-github",
        {"repository_owner_id": "51102340"},
    ),
    DevSeed("gitlab", "dev-gitlab", "4211", "4212", "jwt-gitlab", {"namespace_id": "4211"}),
    DevSeed(
        "bitbucket",
        "dev-bitbucket",
        "{3b9d2c1e-7f4a-4e8b-9c5d-1a2b3c4d5e01}",
        "{8e7f6a5b-4c3d-4b2a-9e1f-0a9b8c7d6e01}",
        "jwt-bitbucket",
        {"workspaceUuid": "{3b9d2c1e-7f4a-4e8b-9c5d-1a2b3c4d5e01}"},
    ),
    DevSeed(
        "terraform",
        "dev-terraform",
        "org-Dv8sTk2Qm4Xn7Pa1",
        "ws-Dv8sTk2Qm4Xn7Pa2",
        "jwt-terraform",
        {"terraform_organization_id": "org-Dv8sTk2Qm4Xn7Pa1"},
    ),
    DevSeed(
        "buildkite",
        "dev-buildkite",
        "0190a3f2-5c1e-7b4d-9a2e-3f4b5c6d7e01",
        "0190a3f2-6d2f-7c5e-8b3f-4a5b6c7d8e01",
        "jwt-buildkite",
        {"organization_id": "0190a3f2-5c1e-7b4d-9a2e-3f4b5c6d7e01"},
    ),
    # The org is the cluster (the issuer's `cluster` option), the project its namespace.
    DevSeed(
        "kubernetes",
        "dev-kubernetes",
        "dev-cluster",
        "deploy",
        "jwt-kubernetes",
        {"/kubernetes.io/namespace": "deploy"},
    ),
)
# The platform the demo, the printed runner commands and the GCP pool provider use.
DEMO_SEED: Final = SEEDS[0]
# The demo seed's claims the GCP pool provider maps to its attributes.
GCP_ATTRIBUTE_CLAIMS: Final[Mapping[str, str]] = {
    "org": "organizationId",
    "project": "projectId",
}


def oidc_audience(seed: DevSeed) -> str:
    """The audience of a seed's ``dev-oidc`` token: a token handed to runners shares its
    audience with no other mint credential, so each organization gets its own."""
    return OIDC_AUDIENCE if seed is DEMO_SEED else f"{OIDC_AUDIENCE}-{seed.profile}"
