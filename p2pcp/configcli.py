"""``p2pcp config``: show the settings in effect, set one in the config file, or start the file.
Pointing every later command at a server is then one command:
``p2pcp config set server wss://rendezvous.example.org``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from . import config
from .errors import P2pcpError, UsageError

config_app = typer.Typer(
    help="Show the settings in effect, or change the config file.", no_args_is_help=True
)


def _fail(exc: P2pcpError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(int(exc.exit_code))


@config_app.command("show")
def config_show(
    json_mode: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Print every setting in effect and where it comes from (flag > env > file > default)."""
    try:
        settings = config.effective({})
    except P2pcpError as exc:
        _fail(exc)
    path = config.config_path()
    if json_mode:
        body = {k: {"value": s.value, "source": s.source} for k, s in settings.items()}
        typer.echo(json.dumps({"config_file": str(path), "settings": body}))
        return
    exists = "" if path.exists() else " (not present)"
    typer.echo(f"config file: {path}{exists}")
    for key, setting in settings.items():
        typer.echo(f"{key} = {json.dumps(setting.value)}  ({setting.source})")


@config_app.command("set")
def config_set(
    key: str = typer.Argument(..., help=f"One of: {', '.join(config.SETTINGS)}."),
    value: str = typer.Argument(
        ..., help="The value: true/false for switches, comma-separated URLs for ice_servers."
    ),
) -> None:
    """Set one setting in the config file (made if missing), keeping the others."""
    path = config.config_path()
    try:
        data = config.load_file(path)
        data[key] = config.parse_value(key, value)
        config.check_file(data, path)
    except P2pcpError as exc:
        _fail(exc)
    _write(path, data)
    typer.echo(f"{key} = {json.dumps(data[key])}  (in {path})")


@config_app.command("init")
def config_init() -> None:
    """Write a config file listing every setting, commented out at its default."""
    path = config.config_path()
    if path.exists():
        _fail(UsageError(f"{path} exists already: change it with 'p2pcp config set KEY VALUE'"))
    lines = ["# p2pcp settings: uncomment and change (or use 'p2pcp config set KEY VALUE').", ""]
    for key, spec in config.SETTINGS.items():
        default = spec.default if spec.default is not None else ""
        lines.append(f"# {key} = {_toml(default)}    # env {spec.env}")
    _write_text(path, "\n".join(lines) + "\n")
    typer.echo(f"wrote {path}")


def _toml(value: Any) -> str:
    """A TOML value for what settings hold: strings, booleans, lists and tables of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def _write(path: Path, data: dict[str, Any]) -> None:
    _write_text(path, "".join(f"{key} = {_toml(value)}\n" for key, value in data.items()))


def _write_text(path: Path, text: str) -> None:
    """Write beside, then rename: a crash never leaves half a config file. Mode 0600 (it may
    hold TURN credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temp, path)
