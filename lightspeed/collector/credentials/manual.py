"""``manual``: the configured ingress token, or its file."""

from __future__ import annotations

from lightspeed.collector.credentials.base import DEFAULT_IDENTITY, CredentialProvider, Credentials, secret

__all__ = ["ManualProvider"]


class ManualProvider(CredentialProvider):
    """``ingress_server_auth_token``, or its file read again before every upload (rotation works)."""

    mode = "manual"

    def refresh_interval(self) -> float:
        # A file is cheap to read: read it for every upload, so a rotated secret is used at once.
        return 0.0 if self.config.ingress_server_auth_token_path else float("inf")

    async def fetch(self) -> Credentials:
        token = await secret(
            self.config.ingress_server_auth_token,
            self.config.ingress_server_auth_token_path,
            "the ingress token (ingress_server_auth_token_path)"
            if self.config.ingress_server_auth_token_path
            else "the ingress token (ingress_server_auth_token)",
        )
        return Credentials(token=token, identity_id=self.config.identity_id or DEFAULT_IDENTITY)
