"""This device's key and its store of paired devices, on a real directory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from p2pcp import identity
from p2pcp.devicekeys import public_bytes
from p2pcp.devices import Device, DeviceStore, check_name, suggested_name
from p2pcp.errors import CodeError, UsageError


def _device(name: str, n: int) -> Device:
    return Device(name, bytes([n]) * 32, bytes([100 + n]) * 32, 1_700_000_000.0)


def test_the_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    where = tmp_path / "config"
    assert identity.load(where) is None
    key = identity.load_or_create(where)
    assert stat.S_IMODE((where / "identity.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    again = identity.load_or_create(where)
    assert public_bytes(again) == public_bytes(key)
    (where / "identity.pem").write_text("not a key")
    with pytest.raises(UsageError):
        identity.load(where)


def test_devices_are_stored_private_renamed_and_removed(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    laptop = store.add(_device("laptop", 1))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    second = store.add(_device("laptop", 2))  # another device with the same host name
    assert (laptop.name, second.name) == ("laptop", "laptop-2")
    assert store.find("laptop-2").key == bytes([2]) * 32
    store.update("laptop-2", name="desk")
    assert [d.name for d in store.paired()] == ["laptop", "desk"]
    with pytest.raises(UsageError):
        store.update("desk", name="laptop")  # taken
    with pytest.raises(UsageError):
        store.update("desk", policy="sometimes")
    assert store.update("desk", policy="accept").policy == "accept"
    store.update("desk", removed=1_700_000_100.0)
    assert [d.name for d in store.paired()] == ["laptop"]
    with pytest.raises(CodeError, match="removed on"):
        store.find("desk")
    with pytest.raises(CodeError, match="no paired device is called 'nas'"):
        store.find("nas")
    # The tombstone keeps the key: a send from it is still recognised.
    assert any(d.key == bytes([2]) * 32 and d.removed for d in store.load())
    # Pairing the same device again replaces its tombstone.
    store.add(_device("desk", 2))
    assert store.find("desk").removed is None
    assert len(store.load()) == 2
    store.seen(bytes([1]) * 32, 1_700_000_200.0)
    assert store.find("laptop").last_seen == 1_700_000_200.0
    text = store.path.read_text()
    assert json.loads(text)["format"] == 1 and not list(tmp_path.glob(".devices.json.*"))


def test_a_damaged_store_is_a_clear_error(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.path.write_text('{"devices": [{"name": 1}]}')
    with pytest.raises(UsageError, match="damaged"):
        store.load()
    os.chmod(tmp_path, 0o700)


def test_names() -> None:
    assert check_name("laptop-2.home") == "laptop-2.home"
    for bad in ("", "-x", "a b", "x" * 41, "caf\u00e9", "../etc", "a\x1b[2J"):
        with pytest.raises(UsageError):
            check_name(bad)
    assert suggested_name("my laptop\x1b[2J") == "mylaptop2J"
    assert suggested_name("\u202e\u202e") == "device"
    assert suggested_name("-.build_box") == "build_box"
