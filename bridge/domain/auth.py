"""Who is calling: the authenticated keypair, its user and what the user may see."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AuthContext:
    access_key: str
    user_uuid: str
    email: str
    username: str
    role: str                 # superadmin | admin | user | monitor
    domain_name: str
    unix_user: str
    is_admin_key: bool
    resource_policy: str
    rate_limit: int

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"

    @property
    def is_admin(self) -> bool:
        """Domain admin or superadmin (Backend.AI's `is_admin` on the keypair follows the role)."""
        return self.role in ("superadmin", "admin")

    def can_manage_domain(self, domain: str) -> bool:
        return self.is_superadmin or (self.role == "admin" and self.domain_name == domain)
