"""The store of paired devices: ``devices.json`` in the config directory (mode 0600), each with
the name this device calls it, its long-term public key, the pairing secret, when it was paired
and last seen, what ``p2pcp listen`` does with its sends, and, once removed, when.

A removed device is kept as a tombstone (its key and secret), so that a send from it is still
recognised and refused with a clear error, instead of silence. Writes go to a temporary file
beside the store and replace it in one rename, so a crash never leaves half a store.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .errors import CodeError, UsageError
from .identity import private_dir

FILE = "devices.json"
FORMAT = 1
POLICIES = ("ask", "accept", "refuse")
"""What ``listen`` does with a send from a device: ask at the terminal (refused when none is
attached), accept it, or refuse it."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
"""A device name: what ``send --to`` and ``receive --from`` take on a command line."""


@dataclass(frozen=True)
class Device:
    """One paired device, as this device knows it."""

    name: str
    """What this device calls it (unique here)."""
    key: bytes
    """Its long-term X25519 public key."""
    secret: bytes
    """The pairing secret both devices derived when pairing."""
    paired: float
    """When it was paired (Unix seconds)."""
    policy: str = "ask"
    """What ``listen`` does with its sends: one of POLICIES."""
    last_seen: float | None = None
    """When a transfer with it last authenticated."""
    removed: float | None = None
    """When it was removed (a tombstone), or None while paired."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["key"] = base64.b64encode(self.key).decode()
        data["secret"] = base64.b64encode(self.secret).decode()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Device:
        return cls(
            name=str(data["name"]),
            key=base64.b64decode(data["key"], validate=True),
            secret=base64.b64decode(data["secret"], validate=True),
            paired=float(data["paired"]),
            policy=str(data.get("policy", "ask")),
            last_seen=None if data.get("last_seen") is None else float(data["last_seen"]),
            removed=None if data.get("removed") is None else float(data["removed"]),
        )


def check_name(name: str) -> str:
    """``name`` if it is a valid device name (UsageError otherwise)."""
    if not NAME.fullmatch(name):
        raise UsageError(
            f"a device name is 1-40 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit, not {name!r}"
        )
    return name


def suggested_name(offered: str) -> str:
    """A valid device name from what the peer calls itself (its hostname): the allowed
    characters of it, or ``device``."""
    kept = re.sub(r"[^A-Za-z0-9._-]", "", offered).lstrip("._-")[:40]
    return kept or "device"


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise UsageError(f"a policy is one of {', '.join(POLICIES)}, not {policy!r}")
    return policy


class DeviceStore:
    """The paired devices in one config directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE

    def load(self) -> list[Device]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the paired devices {self.path}: {exc}") from None
        try:
            data = json.loads(text)
            return [Device.from_json(item) for item in data["devices"]]
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
            raise UsageError(f"{self.path} is damaged: remove it and pair again") from None

    def save(self, devices: list[Device]) -> None:
        private_dir(self.directory)
        text = json.dumps({"format": FORMAT, "devices": [d.to_json() for d in devices]}, indent=2)
        temporary = self.path.with_name(f".{FILE}.{os.getpid()}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise UsageError(f"cannot write the paired devices {self.path}: {exc}") from None

    def paired(self) -> list[Device]:
        """The devices paired now (no tombstones)."""
        return [d for d in self.load() if d.removed is None]

    def find(self, name: str) -> Device:
        """The paired device called ``name``; exit 3 if unknown or removed."""
        known = self.load()
        for device in known:
            if device.name == name and device.removed is None:
                return device
        for device in known:
            if device.name == name:
                when = time.strftime("%Y-%m-%d", time.localtime(device.removed))
                raise CodeError(
                    f"the device {name!r} was removed on {when}; pair again with p2pcp pair"
                )
        names = ", ".join(d.name for d in known if d.removed is None) or "none yet"
        raise CodeError(
            f"no paired device is called {name!r} (paired: {names}); pair one with p2pcp pair"
        )

    def add(self, device: Device) -> Device:
        """Store a newly paired device (replacing a tombstone or an older pairing of the same
        key); its name is made unique here with a ``-2``, ``-3``... suffix."""
        others = [d for d in self.load() if d.key != device.key]
        taken = {d.name for d in others if d.removed is None}
        name, n = device.name, 1
        while name in taken:
            n += 1
            suffix = f"-{n}"
            name = device.name[: 40 - len(suffix)] + suffix
        others = [d for d in others if d.name != name]  # a tombstone of that name goes
        device = replace(device, name=name)
        self.save([*others, device])
        return device

    def update(self, name: str, /, **changes: Any) -> Device:
        """Change one paired device (rename, policy, removal, last seen)."""
        current = self.find(name)
        if "policy" in changes:
            check_policy(changes["policy"])
        if "name" in changes and changes["name"] != name:
            check_name(changes["name"])
            if any(d.name == changes["name"] and d.removed is None for d in self.load()):
                raise UsageError(f"a paired device is already called {changes['name']!r}")
        changed = replace(current, **changes)
        self.save(
            [
                changed if d.key == current.key else d
                for d in self.load()
                if d.key == current.key or d.name != changed.name
            ]
        )
        return changed

    def seen(self, key: bytes, now: float) -> None:
        """Note that the device with ``key`` just authenticated."""
        devices = self.load()
        self.save([replace(d, last_seen=now) if d.key == key else d for d in devices])
