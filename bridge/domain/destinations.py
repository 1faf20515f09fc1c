"""Where the gateway may send requests that a user chose (a session's callback_url) or that a registry
points it to (a token realm): not into the site's own networks, the loopback or link-local addresses (a
cloud's metadata service), unless the site lists the network as allowed. Pure: resolving names is the
caller's business."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def refused_address(address: str, allowed: Sequence[Network]) -> str | None:
    """Why a request may not go to this IP address, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if any(ip in net for net in allowed):
        return None
    for what, bad in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                      ("private", ip.is_private), ("multicast", ip.is_multicast),
                      ("unspecified", ip.is_unspecified), ("reserved", ip.is_reserved)):
        if bad:
            return f"{ip} is a {what} address"
    return None
