"""Network namespaces made by the tests: hosts on one Ethernet segment, nothing else.

``lan(n)`` builds a switch namespace with a bridge and ``n`` host namespaces, each joined to the
bridge by a veth pair and given 10.77.<k>.<i>/24 (or, with ``ipv6_only``, fd77:<k>::<i>/64 and
no IPv4 address). mDNS and WebRTC traffic stays inside; all of it
is deleted afterwards, also when the test fails.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from helpers import require
from netlab import Node, ip

Host = Node
"""One host namespace on the test LAN (``netns``: its name, ``address``, ``command(...)``)."""


@contextmanager
def lan(count: int, ipv6_only: bool = False) -> Iterator[list[Host]]:
    require("ip", root=True)
    tag = uuid.uuid4().hex[:6]
    subnet = int(tag[:2], 16) % 200 + 20
    switch = f"p2pcp-sw-{tag}"
    names = [switch]
    hosts = []
    try:
        ip("netns", "add", switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", switch, "link", "set", "br0", "up")
        for i in range(count):
            name = f"p2pcp-h{i}-{tag}"
            ip("netns", "add", name)
            names.append(name)
            ip("-n", name, "link", "set", "lo", "up")
            ip(
                "link",
                "add",
                "eth0",
                "netns",
                name,
                "type",
                "veth",
                "peer",
                "name",
                f"port{i}",
                "netns",
                switch,
            )
            ip("-n", switch, "link", "set", f"port{i}", "master", "br0", "up")
            if ipv6_only:  # fd77:<k>::<i>/64 and the link-local one, no IPv4 at all
                address = f"fd77:{subnet}::{i + 1}"
                for knob in ("all", "default"):  # no duplicate address detection: ready at once
                    subprocess.run(
                        ["ip", "netns", "exec", name, "sysctl", "-qw",
                         f"net.ipv6.conf.{knob}.accept_dad=0"],
                        check=True,
                    )  # fmt: skip
                ip("-n", name, "link", "set", "eth0", "up")
                ip("-n", name, "addr", "add", f"{address}/64", "dev", "eth0", "nodad")
            else:
                address = f"10.77.{subnet}.{i + 1}"
                ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
                ip("-n", name, "link", "set", "eth0", "up")
            hosts.append(Host(name, address))
        yield hosts
    finally:
        for name in reversed(names):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
