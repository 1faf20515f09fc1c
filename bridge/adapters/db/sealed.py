"""Secrets at rest: the columns that hold credentials (keypairs' secret keys and SSH private keys, sessions'
kernel secrets) are sealed with AES-256-GCM under a key derived from the gateway's `secret`, so a copy of
the database (a backup, a readable file) does not hand out every user's credentials.

`Sealed` is a column type: code reads and writes plain strings. A value stored before sealing existed is
read as it is and sealed again at start-up (`seal_plaintext`). The key follows `secret`: a gateway started
with another secret cannot open the sealed values and says so.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Text, inspect, text
from sqlalchemy.types import TypeDecorator

PREFIX = "sealed:v1:"
DEFAULT_SECRET = "dev-insecure-secret"   # config.py's default, so that tools without settings agree


class SealError(Exception):
    """A sealed value that this gateway's key cannot open."""


def derive_key(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"bridge sealed columns v1").derive(secret.encode())


_KEY = derive_key(DEFAULT_SECRET)


def use_secret(secret: str) -> None:
    """Seal and open with the key of this secret from now on (the composition root calls it)."""
    global _KEY
    _KEY = derive_key(secret)


def seal(value: str) -> str:
    nonce = os.urandom(12)
    return PREFIX + base64.b64encode(nonce + AESGCM(_KEY).encrypt(nonce, value.encode(), None)).decode()


def unseal(stored: str) -> str:
    if not stored.startswith(PREFIX):
        return stored   # stored before sealing: sealed at the next start-up
    raw = base64.b64decode(stored[len(PREFIX):])
    try:
        return AESGCM(_KEY).decrypt(raw[:12], raw[12:], None).decode()
    except InvalidTag:
        raise SealError("a sealed credential cannot be opened: the gateway's `secret` is not the one it was "
                        "sealed with") from None


class Sealed(TypeDecorator[str]):
    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else seal(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else unseal(value)


SEALED_COLUMNS = (("keypairs", "access_key", "secret_key"), ("keypairs", "access_key", "ssh_private_key"),
                  ("sessions", "id", "kernel_secret"))


async def seal_plaintext(engine: Any) -> int:
    """Seal every credential still stored in the clear; returns how many."""
    n = 0
    async with engine.begin() as conn:
        for table, key, column in SEALED_COLUMNS:
            if not await conn.run_sync(lambda c, t=table: inspect(c).has_table(t)):
                continue   # a database not migrated yet: nothing stored
            rows = (await conn.execute(text(
                f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL "  # noqa: S608 - fixed names
                f"AND {column} NOT LIKE :p"), {"p": PREFIX + "%"})).all()
            for ident, value in rows:
                await conn.execute(text(f"UPDATE {table} SET {column} = :v WHERE {key} = :k"),  # noqa: S608
                                   {"v": seal(value), "k": ident})
                n += 1
    return n
