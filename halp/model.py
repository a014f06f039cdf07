# -*- test-case-name: halp.test.test_model -*-
"""
HALP's data model: entries, label index rows, limits, and the syntax rules
for labels, hosts, ports and timestamps.

Everything here is pure: no I/O, no clock, no Twisted.  The wire codec
(:mod:`halp.wire`), the core (:mod:`halp.core`) and the stores all use these
definitions, so each rule is written exactly once.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from dataclasses import dataclass
from typing import NamedTuple

from halp.error import ErrorCode, ProtocolError

__all__ = [
    "Census",
    "Change",
    "ChangePage",
    "Entry",
    "Merged",
    "LabelCount",
    "LabelInfo",
    "Limits",
    "RejectedEntry",
    "Window",
    "RESERVED_LABELS",
    "check_label",
    "check_host",
    "check_port",
    "check_timestamp",
    "check_routable",
    "address_group",
    "special_block",
    "network_key",
    "format_host_port",
    "parse_host_port",
    "label_ancestors",
    "label_parent",
]


class Entry(NamedTuple):
    """
    One ``host port`` pair under a label, with the time it was last
    confirmed to work.

    (A named tuple rather than a frozen dataclass: a store makes one per
    entry it serves, and a tuple is made in a quarter of the time.)

    :ivar timestamp: POSIX seconds (UTC) of the latest confirmation.
    :ivar host: an IPv4 or IPv6 address in its canonical text form, or a
        lower-case DNS name (see :func:`check_host`).
    :ivar port: 1 to 65535.
    """

    timestamp: int
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` pair that identifies this entry in a label."""
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class LabelInfo:
    """
    A row of the label index: a label and the newest confirmed time of any
    entry inserted into it or into one of its sublabels.

    :ivar timestamp: POSIX seconds of the label's newest activity.
    :ivar name: the full label, for example ``myapp/v2``.
    """

    timestamp: int
    name: str

    @property
    def segment(self) -> str:
        """The last segment of the name, as the wire protocol lists it."""
        return self.name.rpartition("/")[2]


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    """
    An entry that was offered but cannot be stored, with the reason.

    :ivar raw: the entry as offered, as one line of printable ASCII.
    :ivar reason: why it was refused, for a human.
    """

    raw: str
    reason: str


@dataclass(frozen=True, slots=True)
class Change:
    """
    An entry under a label, with where it came from: the unit of
    replication between HALP servers.

    :ivar label: the label the entry belongs to.
    :ivar entry: the entry, with its confirmed time.
    :ivar source: the network address (host only) of the client whose insert
        first brought this confirmation into HALP, as the server that took
        the insert saw it; ``""`` when unknown (the server's own entries, a
        client cache).
    :ivar via: the HALP server this server received the change from, as
        ``HOST:PORT`` (or its address alone when it did not name itself);
        ``""`` when the change was inserted here.  It is local knowledge:
        replication sends ``source`` on, and the receiver puts its own
        ``via``.
    """

    label: str
    entry: Entry
    source: str = ""
    via: str = ""


class Merged(NamedTuple):
    """What merging one :class:`Change` into a store did."""

    #: The entry's stored confirmed time after the merge, or ``None`` if the
    #: label's cap evicted it at once.
    stored: int | None
    #: Whether the store's state changed: the entry is new to its label, or
    #: its confirmed time moved forward.
    changed: bool


@dataclass(frozen=True, slots=True)
class ChangePage:
    """
    One page of a store's change feed.

    :ivar changes: entries changed after the cursor asked for, oldest change
        first, each with its provenance.
    :ivar cursor: where the next page starts; opaque, and only meaningful to
        the store that made it.
    :ivar more: whether changes beyond this page exist already.
    """

    changes: list[Change]
    cursor: str
    more: bool


@dataclass(frozen=True, slots=True)
class LabelCount:
    """
    A label that holds entries, as :meth:`~halp.interfaces.IHostStore.census`
    counts it.

    :ivar name: the full label.
    :ivar entries: the entries stored under exactly this label.
    :ivar active: its label index time: the newest confirmation stored in
        the label or one of its sublabels.
    """

    name: str
    entries: int
    active: int


@dataclass(frozen=True, slots=True)
class Census:
    """
    What a store holds: totals, and the most recently active labels.

    :ivar labels: how many labels hold entries.
    :ivar entries: how many entries they hold in all.
    :ivar busiest: up to the number asked for of those labels, most
        recently active first (ties by name).
    """

    labels: int
    entries: int
    busiest: list[LabelCount]


@dataclass(frozen=True, slots=True)
class Window:
    """
    A slice ``[start:stop]`` of a newest-first list.

    :ivar start: index of the first item, from 0.
    :ivar stop: index after the last item, or ``None`` for "as many as the
        server allows".
    """

    start: int
    stop: int | None


@dataclass(frozen=True, slots=True)
class Limits:
    """
    The numbers that bound what one HALP server stores and answers.

    Every server announces these in its ``hello`` answer.  The defaults are
    the ones documented in ``docs/protocol.rst``.
    """

    #: Entries kept per label; the oldest-confirmed ones are evicted.
    max_entries: int = 1000
    #: Seconds after its last confirmation that an entry stops being served.
    ttl: int = 86400
    #: Entries answered by ``get LABEL`` without a slice.
    default_slice: int = 10
    #: The widest slice one ``get`` answers.
    max_slice: int = 100
    #: Entry lines accepted in one ``insert`` block.
    max_insert_entries: int = 100
    #: Labels named by one ``insert`` request.
    max_insert_labels: int = 16
    #: Bytes in one request line, not counting its line ending.
    max_line: int = 1024
    #: Entry lines accepted in one ``push`` block, and returned by one
    #: ``changes`` request (Bitcoin relays at most 1000 addresses per
    #: ``addr`` message).
    max_gossip_entries: int = 1000


#: Label names that cannot be used, as a whole label or as its first
#: segment: ``get labels`` is the top-level index.
RESERVED_LABELS = frozenset({"labels"})

MAX_LABEL_LENGTH = 255
MAX_SEGMENT_LENGTH = 64
MAX_LABEL_DEPTH = 16
MAX_TIMESTAMP_DIGITS = 12  # up to the year 33658; anything later is garbage
MAX_HOST_LENGTH = 253

_SEGMENT = re.compile(r"[A-Za-z0-9_.\-]{1,%d}\Z" % MAX_SEGMENT_LENGTH)
_DIGITS = re.compile(r"[0-9]+\Z")
_DNS_LABEL = re.compile(r"(?!-)[a-z0-9\-]{1,63}(?<!-)\Z")
_LOOKS_NUMERIC = re.compile(r"[0-9.]+\Z")


def check_label(label: str) -> str:
    """
    Check that ``label`` is a valid HALP label and return it.

    A label is 1 to 16 segments joined by ``/``.  A segment is 1 to 64 ASCII
    letters, digits, ``_``, ``-`` or ``.``, and not made of dots only.  The
    whole label is at most 255 characters and does not start with a
    reserved segment (``labels``).  Labels are case-sensitive.

    :raises ProtocolError: with code ``bad-label`` naming the problem.
    """
    if not label:
        raise ProtocolError(ErrorCode.BAD_LABEL, "empty label")
    if len(label) > MAX_LABEL_LENGTH:
        raise ProtocolError(
            ErrorCode.BAD_LABEL, f"label longer than {MAX_LABEL_LENGTH} characters"
        )
    segments = label.split("/")
    if len(segments) > MAX_LABEL_DEPTH:
        raise ProtocolError(
            ErrorCode.BAD_LABEL, f"label deeper than {MAX_LABEL_DEPTH} segments"
        )
    for segment in segments:
        if not segment:
            raise ProtocolError(ErrorCode.BAD_LABEL, "empty label segment")
        if not _SEGMENT.match(segment):
            if len(segment) > MAX_SEGMENT_LENGTH:
                why = f"longer than {MAX_SEGMENT_LENGTH} characters"
            else:
                why = "allowed are A-Z a-z 0-9 _ - ."
            raise ProtocolError(
                ErrorCode.BAD_LABEL, f"bad label segment {segment!r}: {why}"
            )
        if segment.strip(".") == "":
            raise ProtocolError(
                ErrorCode.BAD_LABEL, f"bad label segment {segment!r}: dots only"
            )
    if segments[0] in RESERVED_LABELS:
        raise ProtocolError(ErrorCode.BAD_LABEL, f"label {segments[0]!r} is reserved")
    return label


def label_parent(label: str) -> str:
    """
    The label whose sublabel ``label`` is, or ``""`` for a top-level label.

    >>> label_parent("myapp/v2")
    'myapp'
    """
    return label.rpartition("/")[0]


def label_ancestors(label: str) -> list[str]:
    """
    ``label`` and every label above it, deepest first.

    >>> label_ancestors("a/b/c")
    ['a/b/c', 'a/b', 'a']
    """
    result = [label]
    while "/" in label:
        label = label_parent(label)
        result.append(label)
    return result


def check_host(host: str) -> str:
    """
    Check a host and return its canonical form.

    IPv4 addresses are dotted quads without leading zeros; IPv6 addresses are
    written without brackets or zone and come back compressed
    (``2001:DB8:0::1`` becomes ``2001:db8::1``; an IPv4-mapped address
    keeps its dotted tail, ``::ffff:192.0.2.1``, as RFC 5952 recommends).
    Anything else must be an RFC 1123 DNS name, which comes back in lower
    case without a trailing dot;
    a name whose last label is all digits is refused, so that a mistyped
    IPv4 address is not taken for a name.

    :raises ProtocolError: with code ``bad-entry``.
    """
    if not host or len(host) > MAX_HOST_LENGTH + 1:
        raise ProtocolError(ErrorCode.BAD_ENTRY, "bad host: wrong length")
    if not host.isascii():
        # Before lower(): U+212A (Kelvin) lower-cases to an ASCII "k".
        raise ProtocolError(ErrorCode.BAD_ENTRY, "bad host: not ASCII")
    if ":" in host:
        if "%" in host or "[" in host:
            raise ProtocolError(
                ErrorCode.BAD_ENTRY, "bad host: write IPv6 without brackets or zone"
            )
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise ProtocolError(
                ErrorCode.BAD_ENTRY, "bad host: not a valid IPv6 address"
            ) from None
        if address.ipv4_mapped is not None:
            # RFC 5952 section 5, and the same on every Python version.
            return f"::ffff:{address.ipv4_mapped}"
        return address.compressed
    if _LOOKS_NUMERIC.match(host):
        try:
            return ipaddress.IPv4Address(host).compressed
        except ValueError:
            raise ProtocolError(
                ErrorCode.BAD_ENTRY, "bad host: not a valid IPv4 address"
            ) from None
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    if len(name) > MAX_HOST_LENGTH:
        raise ProtocolError(ErrorCode.BAD_ENTRY, "bad host: name too long")
    labels = name.split(".")
    for part in labels:
        if not _DNS_LABEL.match(part):
            raise ProtocolError(ErrorCode.BAD_ENTRY, "bad host: not a valid DNS name")
    if labels[-1].isdigit():
        raise ProtocolError(
            ErrorCode.BAD_ENTRY, "bad host: numeric top-level domain"
        )
    return name


_BRACKETED = re.compile(r"\[(?P<host>[^\]]*)\]:(?P<port>.*)\Z", re.DOTALL)


def parse_host_port(text: str) -> tuple[str, int]:
    """
    Split and check ``HOST:PORT`` (``[IPV6]:PORT`` for an IPv6 address):
    the canonical host and the port.

    :raises ProtocolError: with code ``bad-entry`` and the reason.
    """
    match = _BRACKETED.match(text)
    if match:
        host, port = match.group("host"), match.group("port")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ProtocolError(ErrorCode.BAD_ENTRY, "expected HOST:PORT")
        if ":" in host:
            raise ProtocolError(
                ErrorCode.BAD_ENTRY, "write an IPv6 address as [ADDRESS]:PORT"
            )
    return check_host(host), check_port(port)


def format_host_port(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port(text: str) -> int:
    """
    Parse a port: decimal digits, 1 to 65535.

    :raises ProtocolError: with code ``bad-entry``.
    """
    if not _DIGITS.match(text) or len(text) > 5:
        raise ProtocolError(ErrorCode.BAD_ENTRY, "bad port: expected 1-65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ProtocolError(ErrorCode.BAD_ENTRY, "bad port: expected 1-65535")
    return port


def check_timestamp(text: str) -> int:
    """
    Parse a timestamp: non-negative integer POSIX seconds, in ASCII digits.

    :raises ProtocolError: with code ``bad-entry``.
    """
    if not _DIGITS.match(text) or len(text) > MAX_TIMESTAMP_DIGITS:
        raise ProtocolError(
            ErrorCode.BAD_ENTRY, "bad timestamp: expected integer POSIX seconds"
        )
    return int(text)


# -- address policy ----------------------------------------------------------
#
# Our own table of the IANA special-purpose registries rather than
# ``ipaddress``'s ``is_global``, whose ranges changed between Python
# versions (python/cpython#113171, CVE-2024-4032) and still miss blocks
# (100.64.0.0/10 is neither private nor global, #119812).  Each row: the
# block, its name, and whether it is ever a usable host (multicast,
# broadcast and "unspecified" are not, even on a LAN).

_V4_SPECIAL: list[tuple[ipaddress.IPv4Network, str, bool]] = [
    (ipaddress.IPv4Network(net), name, usable)
    for net, name, usable in [
        ("0.0.0.0/8", "'this network' (RFC 791)", False),
        ("10.0.0.0/8", "private-use (RFC 1918)", True),
        ("100.64.0.0/10", "shared address space, carrier-grade NAT (RFC 6598)", True),
        ("127.0.0.0/8", "loopback (RFC 1122)", True),
        ("169.254.0.0/16", "link-local (RFC 3927)", True),
        ("172.16.0.0/12", "private-use (RFC 1918)", True),
        ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)", True),
        ("192.0.2.0/24", "documentation, TEST-NET-1 (RFC 5737)", True),
        ("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)", True),
        ("192.168.0.0/16", "private-use (RFC 1918)", True),
        ("198.18.0.0/15", "benchmarking (RFC 2544)", True),
        ("198.51.100.0/24", "documentation, TEST-NET-2 (RFC 5737)", True),
        ("203.0.113.0/24", "documentation, TEST-NET-3 (RFC 5737)", True),
        ("224.0.0.0/4", "multicast (RFC 5771)", False),
        ("255.255.255.255/32", "limited broadcast (RFC 919)", False),
        ("240.0.0.0/4", "reserved for future use (RFC 1112)", True),
    ]
]

#: Addresses inside a special block that IANA lists as globally reachable.
_V4_GLOBAL_EXCEPTIONS = frozenset(
    ipaddress.IPv4Address(a) for a in ("192.0.0.9", "192.0.0.10")
)

_V6_SPECIAL: list[tuple[ipaddress.IPv6Network, str, bool]] = [
    (ipaddress.IPv6Network(net), name, usable)
    for net, name, usable in [
        ("::/128", "unspecified (RFC 4291)", False),
        ("::1/128", "loopback (RFC 4291)", True),
        ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation (RFC 8215)", True),
        ("100::/64", "discard-only (RFC 6666)", True),
        ("100:0:0:1::/64", "dummy IPv6 prefix (RFC 9780)", True),
        ("2001::/32", "Teredo (RFC 4380)", True),
        ("2001:2::/48", "benchmarking (RFC 5180)", True),
        ("2001:10::/28", "deprecated ORCHID (RFC 4843)", True),
        ("2001:20::/28", "ORCHIDv2 (RFC 7343)", True),
        ("2001:db8::/32", "documentation (RFC 3849)", True),
        ("3fff::/20", "documentation (RFC 9637)", True),
        ("5f00::/16", "segment routing SIDs (RFC 9602)", True),
        ("fc00::/7", "unique local (RFC 4193)", True),
        ("fe80::/10", "link-local (RFC 4291)", True),
        ("fec0::/10", "deprecated site-local (RFC 3879)", True),
        ("ff00::/8", "multicast (RFC 4291)", False),
    ]
]

#: The tables as integer ranges, which are much faster to test than
#: ``address in network``.
_V4_RANGES = [
    (int(net.network_address), int(net.broadcast_address), name, usable)
    for net, name, usable in _V4_SPECIAL
]
_V6_RANGES = [
    (int(net.network_address), int(net.broadcast_address), name, usable)
    for net, name, usable in _V6_SPECIAL
]

_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


def _embedded_ipv4(
    address: ipaddress.IPv6Address,
) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 address carries, and its form."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF), "6to4"
    return None


@lru_cache(maxsize=65536)
def network_key(host: str, v6_prefix: int) -> str:
    """
    What one client or host counts as: an IPv4 address (also in its
    IPv4-mapped, NAT64 and 6to4 forms, which reach the same host), or the
    ``/v6_prefix`` network of an IPv6 address, since one subscriber holds
    a whole prefix.  Anything else (a name) is itself.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return str(embedded[0])
    return str(ipaddress.IPv6Network((address, v6_prefix), strict=False))


@lru_cache(maxsize=65536)
def special_block(host: str) -> tuple[str, bool] | None:
    """
    The special-purpose block a canonical IP address falls in, as
    ``(description, usable)``, or ``None`` for a globally routable address
    (and for a DNS name, which only a lookup could place).

    ``usable`` is false for addresses that never name one host (multicast,
    broadcast, unspecified); the others (private, loopback, link-local,
    CGNAT, documentation, reserved...) can name a host on a LAN.
    IPv4-mapped, NAT64 (``64:ff9b::/96``) and 6to4 (``2002::/16``) forms
    are judged by the IPv4 address they carry.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            ipv4, form = embedded
            inner = special_block(str(ipv4))
            if inner is None:
                return None
            return f"{form} {inner[0]}", inner[1]
        value = int(address)
        for low, high, name, usable in _V6_RANGES:
            if low <= value <= high:
                return name, usable
        if address not in _V6_GLOBAL_UNICAST:
            return "reserved by the IETF, outside 2000::/3 (RFC 4291)", True
        return None
    if address in _V4_GLOBAL_EXCEPTIONS:
        return None
    value = int(address)
    for low, high, name, usable in _V4_RANGES:
        if low <= value <= high:
            return name, usable
    return None


def check_routable(host: str, allow_private: bool = False) -> None:
    """
    Refuse a canonical host that is not a globally routable unicast
    address: private, loopback, link-local, CGNAT, documentation and
    reserved blocks, unless ``allow_private`` (a LAN deployment); and
    multicast, broadcast and unspecified addresses always.  DNS names pass:
    only a lookup can place them.

    :raises ProtocolError: ``bad-entry``, naming the block.
    """
    block = special_block(host)
    if block is None:
        return
    name, usable = block
    if not usable:
        raise ProtocolError(ErrorCode.BAD_ENTRY, f"bad host: {host} is {name}, never a host")
    if not allow_private:
        raise ProtocolError(
            ErrorCode.BAD_ENTRY, f"bad host: {host} is not globally routable: {name}"
        )


@lru_cache(maxsize=65536)
def address_group(host: str) -> str:
    """
    The network group of a canonical host, for spreading answers and
    bounding what one network may fill (Bitcoin's ``GetGroup``): the /16 of
    a global IPv4 address (``"v4:1.2"``), the /32 of a global IPv6 address
    (``"v6:2001:0db8"``), IPv4-mapped, NAT64 and 6to4 forms as their IPv4
    address.  A non-global address (a LAN deployment) and a DNS name are
    a group of their own, so that hosts on one LAN are not squeezed into
    one share; ``""`` stays ``""`` (a server's own entries).
    """
    if not host:
        return ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "name:" + host
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_group(str(embedded[0]))
        if special_block(host) is not None:
            return "host:" + host
        return "v6:%04x:%04x" % (int(address) >> 112, (int(address) >> 96) & 0xFFFF)
    if special_block(host) is not None:
        return "host:" + host
    a, b, _, _ = str(address).split(".")
    return f"v4:{a}.{b}"
