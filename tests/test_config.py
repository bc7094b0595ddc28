"""Settings precedence (flag > env > file > default) and `p2pcp config show`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import finish, p2pcp

from p2pcp import config
from p2pcp.errors import UsageError

FILE = Path("/cfg/config.toml")


def test_flag_beats_env_beats_file_beats_default() -> None:
    file = {"server": "ws://file:1", "output": "/from/file", "overwrite": True}
    env = {"P2PCP_SERVER": "ws://env:1", "P2PCP_OUTPUT": "/from/env"}
    flags = {"server": "ws://flag:1", "output": None, "overwrite": None, "ice_servers": None}
    settings = config.resolve(flags, env, file, FILE)
    assert settings["server"] == config.Setting("ws://flag:1", "flag")
    assert settings["output"] == config.Setting("/from/env", "env P2PCP_OUTPUT")
    assert settings["overwrite"] == config.Setting(True, f"file {FILE}")
    assert settings["ice_servers"] == config.Setting([], "default")


def test_defaults_and_env_parsing() -> None:
    settings = config.resolve(
        {}, {"P2PCP_OVERWRITE": "yes", "P2PCP_ICE_SERVERS": "stun:a:3478, turn:b:3478"}, {}, FILE
    )
    assert settings["server"] == config.Setting(None, "default")
    assert settings["output"] == config.Setting(".", "default")
    assert settings["overwrite"].value is True
    assert settings["compress"] == config.Setting(True, "default")
    off = config.resolve({}, {"P2PCP_COMPRESS": "0"}, {"compress": True}, FILE)
    assert off["compress"] == config.Setting(False, "env P2PCP_COMPRESS")
    from_file = config.resolve({"compress": None}, {}, {"compress": False}, FILE)
    assert from_file["compress"] == config.Setting(False, f"file {FILE}")
    flag = config.resolve({"compress": True}, {"P2PCP_COMPRESS": "0"}, {}, FILE)
    assert flag["compress"] == config.Setting(True, "flag")
    assert settings["ice_servers"].value == ["stun:a:3478", "turn:b:3478"]


def test_config_file_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('server = "ws://x:1"\nsevrer = "typo"\n')
    with pytest.raises(UsageError, match="unknown setting 'sevrer'"):
        config.load_file(path)
    path.write_text('overwrite = "yes"\n')
    with pytest.raises(UsageError, match="'overwrite' must be a bool"):
        config.load_file(path)
    path.write_text("server = \n")
    with pytest.raises(UsageError, match="cannot read the config file"):
        config.load_file(path)
    assert config.load_file(tmp_path / "absent.toml") == {}


def test_ice_servers_from_urls_and_tables() -> None:
    servers = config.ice_servers(
        ["stun:s:3478", {"urls": "turn:t:3478", "username": "u", "credential": "c"}]
    )
    assert [s.urls for s in servers] == ["stun:s:3478", "turn:t:3478"]
    assert servers[1].username == "u" and servers[1].credential == "c"
    with pytest.raises(UsageError, match="starts with stun:"):
        config.ice_servers(["http://x"])


def test_config_show_tells_where_each_setting_comes_from(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'server = "ws://file.example:8765"\noutput = "/srv/in"\n'
        'ice_servers = ["stun:stun.example:3478"]\n'
    )
    env = {"P2PCP_CONFIG": str(path), "P2PCP_OUTPUT": "/tmp/env-out"}
    shown = finish(p2pcp("config", "show", env=env))
    assert shown.code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"config file: {path}"
    assert f'server = "ws://file.example:8765"  (file {path})' in lines
    assert 'output = "/tmp/env-out"  (env P2PCP_OUTPUT)' in lines
    assert "overwrite = false  (default)" in lines
    as_json = json.loads(finish(p2pcp("config", "show", "--json", env=env)).stdout)
    assert as_json["settings"]["ice_servers"] == {
        "value": ["stun:stun.example:3478"],
        "source": f"file {path}",
    }


def test_settings_from_the_file_are_used(tmp_path: Path) -> None:
    """A server in the config file is used by send (here: one that is not running, exit 4)."""
    path = tmp_path / "config.toml"
    path.write_text('server = "ws://127.0.0.1:9"\n')
    (tmp_path / "f").write_text("x")
    sent = finish(p2pcp("send", str(tmp_path / "f"), env={"P2PCP_CONFIG": str(path)}))
    assert sent.code == 4 and "ws://127.0.0.1:9" in sent.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("nope = 1\n")
    sent = finish(p2pcp("send", str(tmp_path / "f"), env={"P2PCP_CONFIG": str(bad)}))
    assert sent.code == 2 and "unknown setting 'nope'" in sent.stderr


def test_devnull_is_an_empty_config() -> None:
    assert config.load_file(Path(os.devnull)) == {}


def test_output_from_the_config_file_may_use_a_tilde(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "Downloads").mkdir(parents=True)
    path = tmp_path / "config.toml"
    path.write_text('output = "~/Downloads"\n')
    # The output directory is checked first (a missing one is exit 2); only then does the
    # receiver try the (unreachable) server and exit 4.
    got = finish(
        p2pcp(
            "receive",
            "--yes",
            "--server",
            "ws://127.0.0.1:9",
            "1-acorn-zebra",
            env={"P2PCP_CONFIG": str(path), "HOME": str(home)},
        )
    )
    assert got.code == 4, got.stderr  # the server is unreachable, the output dir was fine
    missing = tmp_path / "nohome"
    got = finish(
        p2pcp(
            "receive",
            "--yes",
            "--server",
            "ws://127.0.0.1:9",
            "1-acorn-zebra",
            env={"P2PCP_CONFIG": str(path), "HOME": str(missing)},
        )
    )
    assert got.code == 2 and "does not exist" in got.stderr
