"""Whether a network address is on the public internet: the judgement a public server makes before
it connects anywhere a visitor named (a checkpoint URL, a Hub mirror, any future fetch).

An IPv6 address can carry an IPv4 address inside it, and a network that routes the IPv6 form
delivers to the IPv4 one: `::ffff:127.0.0.1` (IPv4-mapped), `::127.0.0.1` (IPv4-compatible),
`::ffff:0:127.0.0.1` (IPv4-translated), `64:ff9b::7f00:1` (NAT64), `2002:7f00:1::` (6to4),
Teredo's client and server, ISATAP's interface identifier. `ipaddress` calls several of these
global. Here an address is public only when it is global itself and every IPv4 address it
embeds is public too.

    >>> is_public("64:ff9b::7f00:1")
    False
    >>> resolve_public("example.org", 443)   # every address the name resolves to, checked
"""
from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated (RFC 4291), still routed by some stacks
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 2765 (SIIT)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix
# RFC 8215's local-use NAT64 prefix: the embedding position depends on the operator's prefix length,
# so nothing inside it can be judged; it is local by definition.
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_ISATAP_IDS = (0x0000_5EFE, 0x0200_5EFE)  # an interface identifier "0:5efe:a.b.c.d" (RFC 5214)


class AddressError(ValueError):
    """A host that cannot be resolved, or resolves to an address that is not public."""


class Unresolvable(AddressError):
    """A host name that does not resolve; `reason` is the resolver's word for why."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"cannot resolve {host}: {reason}")
        self.host, self.reason = host, reason


def parse(address: str | IPAddress) -> IPAddress:
    """An address object from text (an IPv6 zone, `%eth0`, is dropped); ValueError for other text."""
    if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return address
    return ipaddress.ip_address(str(address).strip("[]").split("%")[0])


def embedded_ipv4(address: str | IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (see the module docstring); () for none or IPv4."""
    ip = parse(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return ()
    value = int(ip)
    low = ipaddress.IPv4Address(value & 0xFFFF_FFFF)
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _IPV4_COMPATIBLE and value > 1:  # not :: or ::1, which are judged as themselves
        found.append(low)
    if ip in _IPV4_TRANSLATED or ip in _NAT64:
        found.append(low)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if (value >> 32) & 0xFFFF_FFFF in _ISATAP_IDS:
        found.append(low)
    return tuple(dict.fromkeys(found))


def is_public(address: str | IPAddress) -> bool:
    """Whether connecting to `address` reaches the public internet: global, not multicast, and
    every IPv4 address it embeds public as well. False for text that is no address."""
    try:
        ip = parse(address)
    except ValueError:
        return False
    if not ip.is_global or ip.is_multicast or ip.is_unspecified:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64_LOCAL:
        return False
    return all(is_public(inner) for inner in embedded_ipv4(ip))


def resolve_public(host: str, port: int, *, public_only: bool = True) -> list[str]:
    """The addresses `host` resolves to (for TCP to `port`), in resolver order; with `public_only`,
    AddressError unless every one of them is public (a name that resolves to one inward address
    among public ones is refused: the connection could go to either)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as e:
        raise Unresolvable(host, str(e.args[-1] if e.args else e)) from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if public_only:
        inward = [a for a in addresses if not is_public(a)]
        if inward:
            raise AddressError(f"{host} resolves to non-public address {inward[0]}")
    return addresses
