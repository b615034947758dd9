"""Read and change the decision codes in conntrack marks, through ctnetlink (pyroute2).

Used for live policy changes: find the flows decided under the old policy and re-decide them
(set a new code, or reset them to undecided so the next packet is queued again). Works in
the current network namespace, or in `netns` when given.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from errno import ENOENT
from typing import Any, NamedTuple

from pyroute2 import NFCTSocket
from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import IPCTNL_MSG_CT_GET, NFCTAttrTuple, nfct_msg

from edufilter.rules.marks import UNDECIDED, MarkLayout
from edufilter.errors import NetfilterError

_ADDRESS_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_VERSION = {socket.AF_INET: 4, socket.AF_INET6: 6}
_ADDRESS_ATTRS = {4: ("CTA_IP_V4_SRC", "CTA_IP_V4_DST"), 6: ("CTA_IP_V6_SRC", "CTA_IP_V6_DST")}


class ConntrackError(NetfilterError):
    """A ctnetlink request failed; errno is the kernel's reason (None if it gave none)."""

    def __init__(self, message: str, errno: int | None) -> None:
        super().__init__(message)
        self.errno = errno


class FlowTuple(NamedTuple):
    """A flow as conntrack knows it, in the original direction (client to server)."""

    family: int  # 4 or 6
    proto: int  # IP protocol number (6 TCP, 17 UDP)
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    sport: int  # 0 for protocols without ports
    dport: int


@contextmanager
def _socket(action: str, family: int, netns: str | None) -> Iterator[NFCTSocket]:
    """A ctnetlink socket; family AF_UNSPEC for dumps of every address family."""
    # flags=0: never create the namespace when netns names none (pyroute2 would by default).
    options: dict[str, Any] = {"netns": netns, "flags": 0} if netns else {}
    sock = NFCTSocket(nfgen_family=family, **options)
    try:
        yield sock
    except NetlinkError as error:
        message = f"conntrack {action}: {os.strerror(error.code)} (errno {error.code})"
        raise ConntrackError(message, error.code) from error
    except OSError as error:  # the socket is opened on first use: no such netns, no rights
        raise ConntrackError(f"conntrack {action}: {error}", error.errno) from error
    finally:
        sock.close()


def _entries(
    layout: MarkLayout, action: str, netns: str | None, code: int | None = None
) -> Iterator[tuple[FlowTuple, int]]:
    """Every conntrack entry (or those whose code is `code`) as (flow, code)."""
    filters: dict[str, int] = {}
    if code is not None:
        # The kernel compares (ct mark & mask) == value, so code 0 (undecided) filters too.
        filters = {"mark": layout.value(code), "mark_mask": layout.mask}
    with _socket(action, socket.AF_UNSPEC, netns) as sock:
        request = nfct_msg.create_from(**filters)
        for message in sock.request(
            request, IPCTNL_MSG_CT_GET, msg_flags=NLM_F_REQUEST | NLM_F_DUMP
        ):
            flow = _flow_of(message)
            if flow is not None:
                yield flow, layout.code_of(message.get_attr("CTA_MARK") or 0)


def _flow_of(message: nfct_msg) -> FlowTuple | None:
    version = _VERSION.get(message["nfgen_family"])
    original = message.get_attr("CTA_TUPLE_ORIG")
    if version is None or original is None:
        return None
    addresses = original.get_attr("CTA_TUPLE_IP")
    protocol = original.get_attr("CTA_TUPLE_PROTO")
    source_attr, destination_attr = _ADDRESS_ATTRS[version]
    return FlowTuple(
        family=version,
        proto=protocol.get_attr("CTA_PROTO_NUM"),
        src=ipaddress.ip_address(addresses.get_attr(source_attr)),
        dst=ipaddress.ip_address(addresses.get_attr(destination_attr)),
        sport=protocol.get_attr("CTA_PROTO_SRC_PORT") or 0,
        dport=protocol.get_attr("CTA_PROTO_DST_PORT") or 0,
    )


def flows_with_code(layout: MarkLayout, code: int, netns: str | None = None) -> list[FlowTuple]:
    """The flows whose conntrack mark carries code."""
    return [flow for flow, _ in _entries(layout, "dump", netns, code)]


def count_by_code(layout: MarkLayout, netns: str | None = None) -> dict[int, int]:
    """How many conntrack entries carry each code (codes with no entries left out)."""
    return dict(Counter(code for _, code in _entries(layout, "count", netns)))


def _set_mark(sock: NFCTSocket, layout: MarkLayout, flow: FlowTuple, code: int) -> bool:
    original = NFCTAttrTuple(
        family=_ADDRESS_FAMILY[flow.family],
        saddr=str(flow.src),
        daddr=str(flow.dst),
        proto=flow.proto,
        sport=flow.sport or None,
        dport=flow.dport or None,
    )
    try:
        # The kernel writes (ct mark & ~mask) ^ value: the school's bits of the mark survive.
        sock.entry("set", tuple_orig=original, mark=layout.value(code), mark_mask=layout.mask)
    except NetlinkError as error:
        if error.code == ENOENT:  # the flow ended meanwhile
            return False
        raise
    return True


def _check_family(flow: FlowTuple) -> int:
    if flow.family not in _ADDRESS_FAMILY:
        raise NetfilterError(f"flow {flow}: family must be 4 or 6")
    return _ADDRESS_FAMILY[flow.family]


def set_code(layout: MarkLayout, flow: FlowTuple, code: int, netns: str | None = None) -> bool:
    """Write code into the flow's conntrack mark, other bits untouched; False if it is gone."""
    with _socket("set mark", _check_family(flow), netns) as sock:
        return _set_mark(sock, layout, flow, code)


def reset_codes(layout: MarkLayout, codes: Iterable[int], netns: str | None = None) -> int:
    """Set every flow whose code is in codes back to undecided; returns how many were reset."""
    wanted = sorted(set(codes) - {UNDECIDED})
    flows = [flow for code in wanted for flow in flows_with_code(layout, code, netns)]
    reset = 0
    for version in sorted({flow.family for flow in flows}):
        with _socket("reset marks", _ADDRESS_FAMILY[version], netns) as sock:
            reset += sum(
                _set_mark(sock, layout, flow, UNDECIDED)
                for flow in flows
                if flow.family == version
            )
    return reset
