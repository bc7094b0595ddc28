"""Settings and where they come from: a flag beats the environment, which beats the config
file, which beats the default.

The file is TOML at the platform's user config directory (``platformdirs``), or at
``P2PCP_CONFIG``. Resolution is a pure function of the flags, the environment and the file's
contents, so it is tested without touching either.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from .errors import UsageError
from .netcheck import IceServer


@dataclass(frozen=True)
class Setting:
    """One effective setting."""

    value: Any
    """Its value."""
    source: str
    """``flag``, ``env NAME``, ``file PATH`` or ``default``."""


ENV = {
    "server": "P2PCP_SERVER",
    "ice_servers": "P2PCP_ICE_SERVERS",
    "output": "P2PCP_OUTPUT",
    "overwrite": "P2PCP_OVERWRITE",
    "ca_file": "P2PCP_CA_FILE",
    "compress": "P2PCP_COMPRESS",
}
DEFAULTS: dict[str, Any] = {
    "server": None,
    "ice_servers": [],
    "output": ".",
    "overwrite": False,
    "ca_file": None,
    "compress": True,
}
BOOLEANS = ("overwrite", "compress")


def config_path() -> Path:
    """Where the config file is read from."""
    override = os.environ.get("P2PCP_CONFIG")
    if override:
        return Path(override)
    return platformdirs.user_config_path("p2pcp") / "config.toml"


def load_file(path: Path) -> dict[str, Any]:
    """The file's settings, checked; an absent file is empty."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read the config file {path}: {exc}") from None
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise UsageError(
            f"config file {path}: unknown setting {unknown[0]!r} (known: {', '.join(DEFAULTS)})"
        )
    for key, kind in (
        ("server", str),
        ("output", str),
        ("overwrite", bool),
        ("ice_servers", list),
        ("ca_file", str),
        ("compress", bool),
    ):
        if key in data and not isinstance(data[key], kind):
            raise UsageError(f"config file {path}: {key!r} must be a {kind.__name__}")
    return data


def _from_env(key: str, text: str) -> Any:
    if key in BOOLEANS:
        return text.strip().lower() in ("1", "true", "yes", "on")
    if key == "ice_servers":
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def resolve(
    flags: Mapping[str, Any], env: Mapping[str, str], file: Mapping[str, Any], path: Path
) -> dict[str, Setting]:
    """Every setting with its source. A flag of None (or an empty list) was not given."""
    settings: dict[str, Setting] = {}
    for key, default in DEFAULTS.items():
        flag = flags.get(key)
        if flag is not None and flag != []:
            settings[key] = Setting(flag, "flag")
        elif env.get(ENV[key]):
            settings[key] = Setting(_from_env(key, env[ENV[key]]), f"env {ENV[key]}")
        elif key in file:
            settings[key] = Setting(file[key], f"file {path}")
        else:
            settings[key] = Setting(default, "default")
    return settings


def effective(flags: Mapping[str, Any]) -> dict[str, Setting]:
    """The settings for this run, from the real environment and config file."""
    path = config_path()
    return resolve(flags, os.environ, load_file(path), path)


def ice_servers(value: list[Any]) -> list[IceServer]:
    """ICE servers from ``stun:``/``turn:`` URLs or ``{urls, username, credential}`` tables."""
    servers = []
    for item in value:
        if isinstance(item, str):
            servers.append(IceServer(item))
        elif isinstance(item, dict) and isinstance(item.get("urls"), str):
            servers.append(IceServer.from_json(item))
        else:
            raise UsageError(f"an ICE server is a URL or a table with 'urls': {item!r}")
    for server in servers:
        if not server.urls.startswith(("stun:", "turn:", "turns:")):
            raise UsageError(
                f"an ICE server URL starts with stun:, turn: or turns: ({server.urls})"
            )
    return servers
