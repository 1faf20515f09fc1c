"""Per-keypair SSH keys (for `backend.ai ssh` into sessions): generated here, OpenSSH format, ed25519."""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.errors import InvalidAPIParameters


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
