"""Value parsers that accept exactly what Unleash's reference engine (Rust) accepts.

Each returns None for input the reference engine would reject, so a constraint on
such a value does not match. Worked examples:

    parse_f64("1e3") == 1000.0      parse_f64(" 5") is None (Rust does not trim)
    parse_f64("inf") == inf         parse_f64("1_0") is None (Python's float() would accept it)
    parse_usize("+7") == 7          parse_usize("-0") is None
    parse_datetime_ns("2022-01-22T13:00:00.000+02:00") == 1642849200 * 10**9
    parse_semver("1.2.3-rc.1+b5") == ((1, 2, 3), ((0, 1, ""),) ...)  see _semver_key
    semver_compare("2.0.0-alpha.1", "2.0.0-alpha") > 0 (more identifiers win)
"""

from __future__ import annotations

import calendar
import ipaddress
import re
import socket
from typing import TypeAlias

IpNet: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddr: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_F64 = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:inf|infinity|nan))", re.ASCII)
_USIZE = re.compile(r"\+?\d+", re.ASCII)
_USIZE_MAX = 2**64 - 1

# The constraint-value grammar of the reference engine's rule language.
NUM_GRAMMAR = re.compile(r"[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", re.ASCII)
DATE_GRAMMAR = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{3})?(?:Z|[+-]\d{2}:\d{2})", re.ASCII
)
_FRAGMENT = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
SEMVER_GRAMMAR = re.compile(rf"\d+\.\d+\.\d+(?:-{_FRAGMENT})?(?:\+{_FRAGMENT})?", re.ASCII)

# chrono's relaxed RFC 3339 parser (what `str::parse::<DateTime<Utc>>` runs on context values)
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))",
    re.ASCII,
)

_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?",
    re.ASCII,
)

SemverKey: TypeAlias = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def parse_f64(text: str) -> float | None:
    if not _F64.fullmatch(text):
        return None
    return float(text)


def parse_usize(text: str) -> int | None:
    if not _USIZE.fullmatch(text):
        return None
    value = int(text)
    return value if value <= _USIZE_MAX else None


def parse_datetime_ns(text: str) -> int | None:
    """Nanoseconds since the epoch (UTC), or None if chrono would not parse `text`."""
    m = _DATETIME.fullmatch(text)
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    fraction = (m.group(7) or "")[:9].ljust(9, "0")
    offset = 0
    if not m.group(8):
        off_h, off_m = int(m.group(10)), int(m.group(11))
        if off_h > 23 or off_m > 59:
            return None
        offset = (off_h * 3600 + off_m * 60) * (1 if m.group(9) == "+" else -1)
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset
    return seconds * 1_000_000_000 + int(fraction)


def parse_semver(text: str) -> SemverKey | None:
    """A sort key with semver precedence (build metadata ignored), or None when invalid."""
    m = _SEMVER.fullmatch(text)
    if not m:
        return None
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if max(major, minor, patch) > _USIZE_MAX:
        return None
    pre = m.group(4)
    if not pre:
        return (major, minor, patch, 1, ())
    idents: list[tuple[int, int, str]] = []
    for ident in pre.split("."):
        if ident.isdigit():
            idents.append((0, int(ident), ""))
        else:
            idents.append((1, 0, ident))
    return (major, minor, patch, 0, tuple(idents))


def parse_ipv4_int(text: str) -> int | None:
    """A dotted-quad IPv4 address as an integer (the fast path of CIDR checks), else None.

    Only the canonical form is an address: four decimal octets without leading zeros
    ("01.2.3.4" is refused by Rust and by `ipaddress`), whatever the C library accepts."""
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return None
    if socket.inet_ntop(socket.AF_INET, packed) != text:
        return None
    return int.from_bytes(packed, "big")


def parse_ip(text: str) -> IpAddr | None:
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_network(text: str) -> IpNet | None:
    """An address or `address/prefix` (host bits allowed, like the `ipnetwork` crate)."""
    address, slash, prefix = text.partition("/")
    ip = parse_ip(address)
    if ip is None:
        return None
    if not slash:
        return ipaddress.ip_network(ip)
    if not prefix.isdigit() or not prefix.isascii() or int(prefix) > ip.max_prefixlen:
        return None
    return ipaddress.ip_network(f"{ip}/{int(prefix)}", strict=False)
