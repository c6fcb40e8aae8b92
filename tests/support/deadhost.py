"""A second host on this machine whose power can be cut: a network namespace
joined to ours by a veth pair.

Cutting the power is an nftables ruleset in the namespace that drops every
packet in and out, so whatever crosses the link vanishes without a reset or an
ICMP error, as with a host that lost power: the kernel on our side sends its
packets successfully and never hears back.  (A userspace proxy cannot do this:
its own kernel would still acknowledge keepalive probes.)  Needs root, ``ip``
(iproute2) and ``nft`` (nftables).
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

#: RFC 2544's benchmarking network: not routed anywhere, so a /30 taken from
#: it does not shadow a real route.
NETWORK = ipaddress.ip_network("198.18.0.0/15")

POWER_CUT = """
table inet dqrxfer_power_cut {
    chain input { type filter hook input priority 0; policy drop; }
    chain output { type filter hook output priority 0; policy drop; }
}
"""


def missing_requirements() -> str | None:
    """Why a host cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for program, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(program) is None:
            return f"needs {program} (Debian {package}: bash ops/dev/bootstrap.sh --test)"
    return None


def run(*command: str, input: str | None = None) -> None:
    result = subprocess.run(command, input=input, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}")


@dataclass(frozen=True)
class Host:
    """The namespace ``namespace``, reached at ``address``; ours is ``local_address``."""

    namespace: str
    address: str
    local_address: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the host."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def cut_power(self) -> None:
        """From now on nothing goes in or out of the host, silently."""
        run(*self.command("nft", "-f", "-"), input=POWER_CUT)


def _random_subnet() -> ipaddress.IPv4Network:
    subnets = NETWORK.num_addresses // 4
    base = int(NETWORK.network_address) + 4 * random.randrange(subnets)
    return ipaddress.ip_network(f"{ipaddress.ip_address(base)}/30")


@contextmanager
def other_host() -> Iterator[Host]:
    """A host with a link to ours, removed afterwards (with its link)."""
    tag = uuid.uuid4().hex[:8]
    namespace, local_device, remote_device = f"dqrxfer-{tag}", f"dqx{tag}", f"dqy{tag}"
    subnet = _random_subnet()
    local_address, address = (str(host) for host in subnet.hosts())
    run("ip", "netns", "add", namespace)
    try:
        run("ip", "link", "add", local_device, "type", "veth", "peer", "name", remote_device,
            "netns", namespace)  # fmt: skip
        run("ip", "addr", "add", f"{local_address}/30", "dev", local_device)
        run("ip", "link", "set", local_device, "up")
        inside: Sequence[tuple[str, ...]] = (
            ("ip", "addr", "add", f"{address}/30", "dev", remote_device),
            ("ip", "link", "set", remote_device, "up"),
            ("ip", "link", "set", "lo", "up"),
        )
        for command in inside:
            run("ip", "netns", "exec", namespace, *command)
        yield Host(namespace, address, local_address)
    finally:
        # Removing the namespace removes its end of the pair, and with it ours.
        subprocess.run(["ip", "link", "del", local_device], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
