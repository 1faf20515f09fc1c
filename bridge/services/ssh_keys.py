"""Per-keypair SSH keys (for `backend.ai ssh` into sessions): generated here, OpenSSH format, ed25519, kept on
the key pair (`/auth/ssh-keypair` reads and changes them; every interactive session gets them)."""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import KeypairRow
from bridge.errors import InvalidAPIParameters, ObjectNotFound


def generate() -> tuple[str, str]:
    """(public key line, private key PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return public + " bai-bridge", private


def check_pair(public: str, private: str) -> None:
    """Refuse a pair that does not parse or does not match."""
    try:
        key = serialization.load_ssh_private_key(private.encode(), password=None)
        pub = serialization.load_ssh_public_key(" ".join(public.split()[:2]).encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InvalidAPIParameters(f"invalid SSH key: {e}") from None
    ser = (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if key.public_key().public_bytes(*ser) != pub.public_bytes(*ser):
        raise InvalidAPIParameters("the SSH public key does not match the private key")


# ---- the key pair's SSH keys in the database: the one home for reading and changing them ---------------


async def public_key(db: Database, access_key: str) -> str | None:
    async with db.unit_of_work() as s:
        kp = await s.get(KeypairRow, access_key)
        return kp.ssh_public_key if kp else None


async def store(db: Database, access_key: str, public: str, private: str) -> tuple[str, str]:
    """Replace the key pair's SSH keys (a pair checked by the caller, or made by `generate`)."""
    async with db.unit_of_work() as s:
        kp = await s.get(KeypairRow, access_key)
        if kp is None:
            raise ObjectNotFound(f"no key pair {access_key}")
        kp.ssh_public_key, kp.ssh_private_key = public.strip(), private
    return public.strip(), private


async def ensure(db: Database, access_key: str) -> tuple[str, str]:
    """The key pair's SSH keys, made on first need (Backend.AI gives every key pair one)."""
    async with db.unit_of_work() as s:
        kp = await s.get(KeypairRow, access_key)
        if kp is None:
            raise ObjectNotFound(f"no key pair {access_key}")
        if not kp.ssh_public_key or not kp.ssh_private_key:
            kp.ssh_public_key, kp.ssh_private_key = generate()
        return kp.ssh_public_key, kp.ssh_private_key
