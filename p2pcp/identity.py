"""This device's long-term key: one X25519 key pair, made on first use and kept in the config
directory (``identity.pem``, mode 0600, in a directory of mode 0700). Whoever can read that
file can act as this device towards every device it is paired with (docs/security.md)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .errors import UsageError

FILE = "identity.pem"


def private_dir(directory: Path) -> Path:
    """``directory``, made with mode 0700 if missing."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot make the config directory {directory}: {exc}") from None
    return directory


def load(directory: Path) -> X25519PrivateKey | None:
    """This device's key, or None if it has none yet."""
    try:
        data = (directory / FILE).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read this device's key {directory / FILE}: {exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, X25519PrivateKey):
        raise UsageError(f"{directory / FILE} is not an X25519 private key")
    return key


def load_or_create(directory: Path) -> X25519PrivateKey:
    """This device's key, made now if it has none (two processes racing agree on one)."""
    key = load(directory)
    if key is not None:
        return key
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = private_dir(directory) / FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another process made it first: use that one
        made = load(directory)
        assert made is not None
        return made
    except OSError as exc:
        raise UsageError(f"cannot write this device's key {path}: {exc}") from None
    try:
        os.write(fd, pem)
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise UsageError(f"cannot write this device's key {path}: {exc}") from None
    finally:
        os.close(fd)
    return key
