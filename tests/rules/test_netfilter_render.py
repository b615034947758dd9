"""Rendered rule scripts for both backends and the settings they come from (no root needed).

The scripts are applied and exercised for real in tests/lab/test_netfilter.py: the XT one
(this machine's kernel has no queue expression), which differs from the NFT one only in its
queue rule; the NFT one is checked there with `nft -c`.
"""

from __future__ import annotations

import re

import pytest

from edufilter.rules.marks import MarkLayout
from edufilter.rules.netfilter import DEFAULT_INSPECT_PACKETS, Backend, RuleSettings, render
from edufilter.errors import NetfilterError

TYPICAL = RuleSettings(queues=range(4), fail_open=True, lan_interfaces=("eth1",))

TYPICAL_NFT = """\
table inet edufilter {
\tchain to_queue {
\t\tcounter queue num 0-3 bypass
\t}
\tchain injected {
\t\ttype filter hook output priority raw; policy accept;
\t\tmeta mark & 0x0f000000 != 0x07000000 return
\t\ttcp flags & rst == rst return
\t\tnotrack
\t}
\tchain forward {
\t\ttype filter hook forward priority filter - 10; policy accept;
\t\tmeta mark & 0x0f000000 == 0x01000000 ct mark set ct mark & 0xf0ffffff | 0x01000000 return
\t\tmeta mark & 0x0f000000 == 0x04000000 return
\t\tmeta mark & 0x0f000000 == 0x00000000 ct mark & 0x0f000000 == 0x00000000 iifname { "eth1" } meta l4proto { tcp, udp } ct direction original ct original packets 0-5 goto to_queue
\t\tmeta mark & 0x0f000000 == 0x00000000 ct mark & 0x0f000000 == 0x01000000 return
\t\tmeta mark & 0x0f000000 == 0x08000000 ct mark set ct mark & 0xf0ffffff | 0x08000000 return
\t\tmeta mark & 0x0f000000 == 0x00000000 ct mark & 0x0f000000 == 0x08000000 goto http_follow
\t\tmeta mark & 0x0f000000 == 0x00000000 ct mark & 0x0f000000 == 0x00000000 iifname { "eth1" } meta l4proto { tcp, udp } ct direction original jump inspect
\t\tmeta mark & 0x0f000000 == 0x00000000 ct mark & 0x0f000000 == 0x00000000 return
\t\tmeta mark & 0x0f000000 == 0x07000000 return
\t\tmeta mark & 0x0f000000 == 0x02000000 ct mark set ct mark & 0xf0ffffff | 0x02000000
\t\tmeta mark & 0x0f000000 == 0x03000000 ct mark set ct mark & 0xf0ffffff | 0x03000000
\t\tmeta mark & 0x0f000000 == 0x06000000 ct mark set ct mark & 0xf0ffffff | 0x06000000
\t\tct mark & 0x0f000000 == 0x01000000 return
\t\tct mark & 0x0f000000 == 0x02000000 meta l4proto tcp reject with tcp reset
\t\tct mark & 0x0f000000 == 0x02000000 reject with icmpx admin-prohibited
\t\tct mark & 0x0f000000 == 0x03000000 drop
\t\tmeta mark & 0x0f000000 == 0x06000000 return
\t\tct mark & 0x0f000000 == 0x06000000 ct direction reply udp sport 53 goto to_queue
\t\tiifname { "eth1" } meta l4proto { tcp, udp } ct direction original jump inspect
\t}
\tchain http_follow {
\t\tct direction reply return
\t\tip hdrlength 5 ip length . @th,96,8 { 40 . 0x50, 44 . 0x60, 48 . 0x70, 52 . 0x80, 56 . 0x90, 60 . 0xa0, 64 . 0xb0, 68 . 0xc0, 72 . 0xd0, 76 . 0xe0, 80 . 0xf0 } return
\t\tip6 nexthdr tcp ip6 length . @th,96,8 { 20 . 0x50, 24 . 0x60, 28 . 0x70, 32 . 0x80, 36 . 0x90, 40 . 0xa0, 44 . 0xb0, 48 . 0xc0, 52 . 0xd0, 56 . 0xe0, 60 . 0xf0 } return
\t\tmeta mark set meta mark & 0xf0ffffff | 0x08000000 goto to_queue
\t}
\tchain inspect {
\t\tudp dport 53 goto to_queue
\t\tct mark & 0x0f000000 != 0x00000000 return
\t\tct original packets 0-5 goto to_queue
\t\tct original packets 0-100000 meta mark set meta mark & 0xf0ffffff | 0x05000000 goto to_queue
\t}
}
"""


def test_typical_nft_script() -> None:
    assert render(TYPICAL, Backend.NFT) == TYPICAL_NFT


def test_the_xt_script_is_the_same_but_dormant_with_an_empty_queue_chain() -> None:
    """nft_netlink adds the queue rule and wakes the table; everything else is shared."""
    xt = render(TYPICAL, Backend.XT)
    assert xt == TYPICAL_NFT.replace(
        "table inet edufilter {\n\tchain to_queue {\n\t\tcounter queue num 0-3 bypass\n\t}\n",
        "table inet edufilter {\n\tflags dormant\n\tchain to_queue {\n\t}\n",
    )


@pytest.mark.parametrize("backend", list(Backend))
def test_every_queued_packet_passes_the_one_counted_queue_rule(backend: Backend) -> None:
    script = render(RuleSettings(filter_local=True), backend)
    assert script.count("queue num") == (1 if backend is Backend.NFT else 0)
    # forward and output: a new flow, a safe-search answer; inspect: DNS, within the bound, BOUND;
    # http_follow: a followed plain-HTTP flow's client data
    assert script.count("goto to_queue") == 8
    assert "jump to_queue" not in script


@pytest.mark.parametrize("backend", list(Backend))
def test_allowed_flows_return_and_nothing_is_accepted(backend: Backend) -> None:
    """The base chain's policy hands every packet on to the school's own chains; no rule of
    ours accepts one outright."""
    script = render(RuleSettings(filter_local=True), backend)
    assert [line for line in script.splitlines() if re.search(r"\baccept\b", line)] == [
        line for line in script.splitlines() if "policy accept;" in line
    ]


def test_one_queue_uses_queue_num_and_fail_closed_has_no_bypass() -> None:
    nft = render(RuleSettings(queues=range(3, 4), fail_open=False), Backend.NFT)
    assert "\t\tcounter queue num 3\n" in nft and "bypass" not in nft


def test_cpu_fanout_is_only_rendered_when_asked() -> None:
    with_fanout = RuleSettings(queues=range(2), cpu_fanout=True, fail_open=True)
    assert "queue num 0-1 bypass,fanout\n" in render(with_fanout, Backend.NFT)
    assert "fanout" not in render(RuleSettings(queues=range(2)), Backend.NFT)


def test_every_forwarded_packet_without_lan_interfaces() -> None:
    nft = render(RuleSettings(), Backend.NFT)
    assert "iifname" not in nft
    assert "\t\tmeta l4proto { tcp, udp } ct direction original jump inspect\n" in nft


def test_several_lan_interfaces() -> None:
    settings = RuleSettings(lan_interfaces=("eth1", "vlan20"))
    assert 'iifname { "eth1", "vlan20" } ' in render(settings, Backend.NFT)


def test_filter_local_adds_the_output_hook() -> None:
    assert "\tchain output {" not in render(RuleSettings(), Backend.NFT)
    nft = render(RuleSettings(filter_local=True, lan_interfaces=("eth1",)), Backend.NFT)
    assert nft.count("type filter hook output priority filter - 10; policy accept;") == 1
    output = nft[nft.index("\tchain output {"):nft.index("\tchain inspect {")]
    # The gateway's own packets have no input interface: no iifname in the output chain.
    assert "iifname" not in output
    assert "meta l4proto { tcp, udp } ct direction original ct original packets 0-5 goto to_queue" in output


def test_ipv4_only() -> None:
    nft = render(RuleSettings(ipv6=False), Backend.NFT)
    assert "policy accept;\n\t\tmeta nfproto ipv6 return\n" in nft


def test_inspection_bound_and_mark_layout_follow_the_settings() -> None:
    settings = RuleSettings(inspect_packets=8, handshake_packets=900, layout=MarkLayout(0x000000F0))
    nft = render(settings, Backend.NFT)
    assert "ct original packets 0-8 " in nft
    assert "ct original packets 0-900 meta mark set" in nft
    assert "ct mark set ct mark & 0xffffff0f | 0x00000010" in nft
    assert "meta mark set meta mark & 0xffffff0f | 0x00000050 goto to_queue" in nft
    assert "meta mark set meta mark & 0xffffff0f | 0x00000080 goto to_queue" in nft
    assert DEFAULT_INSPECT_PACKETS == 5


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"queues": range(0)}, "non-empty"),
        ({"queues": range(0, 4, 2)}, "step 1"),
        ({"queues": range(-1, 1)}, "0-65535"),
        ({"queues": range(65535, 65537)}, "0-65535"),
        ({"queues": [0, 1]}, "range"),
        ({"cpu_fanout": True}, "more than one queue"),
        ({"inspect_packets": 0}, "at least 1"),
        ({"inspect_packets": 8, "handshake_packets": 8}, "above inspect_packets"),
        ({"lan_interfaces": ("a-very-long-interface",)}, "not a valid"),
        ({"lan_interfaces": ("eth 1",)}, "not a valid"),
        ({"lan_interfaces": ('eth"1',)}, "not a valid"),
        ({"lan_interfaces": ("eth+",)}, "not a valid"),
        ({"lan_interfaces": ("..",)}, "not a valid"),
        ({"lan_interfaces": ("eth1", "eth1")}, "twice"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(NetfilterError, match=message):
        RuleSettings(**settings)  # type: ignore[arg-type]
