"""Who is calling: the authenticated keypair, its user, and what that user may see and do to others.

The rule for acting on another account: nobody reads the secrets of, changes, or acts for an account
whose role is at or above their own (superadmin > admin > user = monitor), and a domain admin only in
their own domain. A secret key or an SSH private key is shown to its owner alone.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLE_RANK = {"monitor": 1, "user": 1, "admin": 2, "superadmin": 3}


def role_rank(role: str) -> int:
    """The rank of a role; an unknown role ranks below every known one."""
    return ROLE_RANK.get(role, 0)


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

    def outranks(self, role: str) -> bool:
        return role_rank(self.role) > role_rank(role)

    def may_act_for(self, user_uuid: str, role: str, domain: str) -> bool:
        """Whether this caller may change, act for or manage the keys of that account: themselves always;
        anyone else only with a higher role, and a domain admin only within their domain."""
        if user_uuid == self.user_uuid:
            return True
        return self.outranks(role) and self.can_manage_domain(domain)

    def may_grant(self, role: str) -> bool:
        """Whether this caller may give an account that role: a superadmin any, anyone else only roles
        below their own."""
        return self.is_superadmin or self.outranks(role)
