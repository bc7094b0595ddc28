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


@dataclass(frozen=True)
class Spec:
    """One setting the tool knows: its variable, its default, and what the file must give."""

    env: str
    """The environment variable that sets it."""
    default: Any
    """Its value when nothing sets it."""
    kind: type
    """The TOML type the config file must give it."""


SETTINGS: dict[str, Spec] = {
    "server": Spec("P2PCP_SERVER", None, str),
    "ice_servers": Spec("P2PCP_ICE_SERVERS", [], list),
    "output": Spec("P2PCP_OUTPUT", ".", str),
    "overwrite": Spec("P2PCP_OVERWRITE", False, bool),
    "ca_file": Spec("P2PCP_CA_FILE", None, str),
    "compress": Spec("P2PCP_COMPRESS", True, bool),
}
"""Every setting, in the order ``config show`` lists them."""


def config_dir() -> Path:
    """The directory of this device's own files: the config file, its long-term key and its
    paired devices (``P2PCP_CONFIG_DIR``, else the platform's user config directory)."""
    override = os.environ.get("P2PCP_CONFIG_DIR")
    if override:
        return Path(override)
    return platformdirs.user_config_path("p2pcp")


def config_path() -> Path:
    """Where the config file is read from."""
    override = os.environ.get("P2PCP_CONFIG")
    if override:
        return Path(override)
    return config_dir() / "config.toml"


def load_file(path: Path) -> dict[str, Any]:
    """The file's settings, checked; an absent file is empty."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read the config file {path}: {exc}") from None
    check_file(data, path)
    return data


def check_file(data: Mapping[str, Any], path: Path) -> None:
    """UsageError (exit 2) for a setting the file must not hold: unknown, of the wrong type, or
    a server URL that is not ws:// or wss:// (caught here, not when ``send`` connects)."""
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise UsageError(
            f"config file {path}: unknown setting {unknown[0]!r} (known: {', '.join(SETTINGS)})"
        )
    for key, spec in SETTINGS.items():
        if key in data and not isinstance(data[key], spec.kind):
            raise UsageError(f"config file {path}: {key!r} must be a {spec.kind.__name__}")
    if "server" in data:
        check_server(data["server"], f"config file {path}: ")


def check_server(url: str, where: str = "") -> None:
    """A rendezvous server is a ws:// or wss:// URL."""
    if not url.startswith(("ws://", "wss://")):
        raise UsageError(f"{where}the server must be a ws:// or wss:// URL, not {url!r}")


def parse_value(key: str, text: str) -> Any:
    """A setting's value from the command line (``config set``), as the file would hold it."""
    spec = SETTINGS.get(key)
    if spec is None:
        raise UsageError(f"unknown setting {key!r} (known: {', '.join(SETTINGS)})")
    if spec.kind is bool:
        answer = text.strip().lower()
        if answer not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            raise UsageError(f"{key} is true or false, not {text!r}")
        return answer in ("true", "yes", "1", "on")
    return _from_env(spec.kind, text)


def _from_env(kind: type, text: str) -> Any:
    if kind is bool:
        return text.strip().lower() in ("1", "true", "yes", "on")
    if kind is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def resolve(
    flags: Mapping[str, Any], env: Mapping[str, str], file: Mapping[str, Any], path: Path
) -> dict[str, Setting]:
    """Every setting with its source. A flag of None (or an empty list) was not given."""
    settings: dict[str, Setting] = {}
    for key, spec in SETTINGS.items():
        flag = flags.get(key)
        if flag is not None and flag != []:
            settings[key] = Setting(flag, "flag")
        elif env.get(spec.env):
            settings[key] = Setting(_from_env(spec.kind, env[spec.env]), f"env {spec.env}")
        elif key in file:
            settings[key] = Setting(file[key], f"file {path}")
        else:
            settings[key] = Setting(spec.default, "default")
    server = settings["server"]
    if server.value is not None:
        check_server(server.value, "" if server.source == "flag" else f"{server.source}: ")
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
