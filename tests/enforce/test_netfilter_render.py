"""Rendered rule scripts for both backends and the settings they come from (no root needed).

The scripts are applied and exercised for real in tests/lab/test_netfilter.py; the nft one can
only be checked there with `nft -c`, since this machine's kernel has no queue expression.
"""

from __future__ import annotations

import re

import pytest

from edufilter.enforce.marks import MarkLayout
from edufilter.enforce.netfilter import DEFAULT_INSPECT_PACKETS, Backend, RuleSettings, render
from edufilter.errors import NetfilterError

TYPICAL = RuleSettings(queues=range(4), fail_open=True, lan_interfaces=("eth1",))

TYPICAL_IPTABLES_V4 = """\
# iptables-restore --noflush
*filter
:EDUFILTER-FORWARD - [0:0]
:EDUFILTER-INSPECT - [0:0]
:EDUFILTER-SAVE-ALLOW - [0:0]
-I FORWARD 1 -j EDUFILTER-FORWARD
-A EDUFILTER-FORWARD -m mark --mark 0x01000000/0x0f000000 -g EDUFILTER-SAVE-ALLOW
-A EDUFILTER-FORWARD -m mark --mark 0x04000000/0x0f000000 -j RETURN
-A EDUFILTER-FORWARD -i eth1 -p tcp -m mark --mark 0x00000000/0x0f000000 -m connmark --mark 0x00000000/0x0f000000 -m connbytes --connbytes 0:5 --connbytes-dir original --connbytes-mode packets -m conntrack --ctdir ORIGINAL -j NFQUEUE --queue-balance 0:3 --queue-bypass
-A EDUFILTER-FORWARD -i eth1 -p udp -m mark --mark 0x00000000/0x0f000000 -m connmark --mark 0x00000000/0x0f000000 -m connbytes --connbytes 0:5 --connbytes-dir original --connbytes-mode packets -m conntrack --ctdir ORIGINAL -j NFQUEUE --queue-balance 0:3 --queue-bypass
-A EDUFILTER-FORWARD -m mark --mark 0x00000000/0x0f000000 -m connmark --mark 0x01000000/0x0f000000 -j RETURN
-A EDUFILTER-FORWARD -i eth1 -p tcp -m mark --mark 0x00000000/0x0f000000 -m connmark --mark 0x00000000/0x0f000000 -m conntrack --ctdir ORIGINAL -j EDUFILTER-INSPECT
-A EDUFILTER-FORWARD -i eth1 -p udp -m mark --mark 0x00000000/0x0f000000 -m connmark --mark 0x00000000/0x0f000000 -m conntrack --ctdir ORIGINAL -j EDUFILTER-INSPECT
-A EDUFILTER-FORWARD -m mark --mark 0x00000000/0x0f000000 -m connmark --mark 0x00000000/0x0f000000 -j RETURN
-A EDUFILTER-FORWARD -m mark --mark 0x07000000/0x0f000000 -j RETURN
-A EDUFILTER-FORWARD -m mark --mark 0x02000000/0x0f000000 -j CONNMARK --set-xmark 0x02000000/0x0f000000
-A EDUFILTER-FORWARD -m mark --mark 0x03000000/0x0f000000 -j CONNMARK --set-xmark 0x03000000/0x0f000000
-A EDUFILTER-FORWARD -m mark --mark 0x06000000/0x0f000000 -j CONNMARK --set-xmark 0x06000000/0x0f000000
-A EDUFILTER-FORWARD -m connmark --mark 0x01000000/0x0f000000 -j RETURN
-A EDUFILTER-FORWARD -p tcp -m connmark --mark 0x02000000/0x0f000000 -j REJECT --reject-with tcp-reset
-A EDUFILTER-FORWARD -m connmark --mark 0x02000000/0x0f000000 -j REJECT --reject-with icmp-admin-prohibited
-A EDUFILTER-FORWARD -m connmark --mark 0x03000000/0x0f000000 -j DROP
-A EDUFILTER-FORWARD -m mark --mark 0x06000000/0x0f000000 -j RETURN
-A EDUFILTER-FORWARD -p udp --sport 53 -m conntrack --ctdir REPLY -m connmark --mark 0x06000000/0x0f000000 -j NFQUEUE --queue-balance 0:3 --queue-bypass
-A EDUFILTER-FORWARD -i eth1 -p tcp -m conntrack --ctdir ORIGINAL -j EDUFILTER-INSPECT
-A EDUFILTER-FORWARD -i eth1 -p udp -m conntrack --ctdir ORIGINAL -j EDUFILTER-INSPECT
-A EDUFILTER-SAVE-ALLOW -j CONNMARK --set-xmark 0x01000000/0x0f000000
-A EDUFILTER-INSPECT -p udp --dport 53 -j NFQUEUE --queue-balance 0:3 --queue-bypass
-A EDUFILTER-INSPECT -m connmark ! --mark 0x00000000/0x0f000000 -j RETURN
-A EDUFILTER-INSPECT -m connbytes --connbytes 0:5 --connbytes-dir original --connbytes-mode packets -j NFQUEUE --queue-balance 0:3 --queue-bypass
-A EDUFILTER-INSPECT -j MARK --set-xmark 0x05000000/0x0f000000
-A EDUFILTER-INSPECT -j NFQUEUE --queue-balance 0:3 --queue-bypass
COMMIT
"""

TYPICAL_NFT = """\
table inet edufilter {
\tchain forward {
\t\ttype filter hook forward priority filter - 10; policy accept;
\t\tmeta mark & 0x0f000000 == 0x01000000 ct mark set ct mark & 0xf0ffffff | 0x01000000 return
\t\tmeta mark & 0x0f000000 == 0x04000000 return
\t\tmeta mark & 0x0f000000 == 0x00000000 ct mark & 0x0f000000 == 0x00000000 iifname { "eth1" } meta l4proto { tcp, udp } ct direction original ct original packets 0-5 queue num 0-3 bypass
\t\tmeta mark & 0x0f000000 == 0x00000000 ct mark & 0x0f000000 == 0x01000000 return
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
\t\tct mark & 0x0f000000 == 0x06000000 ct direction reply udp sport 53 queue num 0-3 bypass
\t\tiifname { "eth1" } meta l4proto { tcp, udp } ct direction original jump inspect
\t}
\tchain inspect {
\t\tudp dport 53 queue num 0-3 bypass
\t\tct mark & 0x0f000000 != 0x00000000 return
\t\tct original packets 0-5 queue num 0-3 bypass
\t\tmeta mark set meta mark & 0xf0ffffff | 0x05000000 queue num 0-3 bypass
\t}
}
"""


def iptables_part(script: str, tool: str) -> str:
    """One restore script out of render()'s output for the iptables backend."""
    parts = re.split(r"^# (\S+) --noflush\n", script, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))[tool]


def test_typical_iptables_script() -> None:
    script = render(TYPICAL, Backend.IPTABLES)
    assert script.startswith(TYPICAL_IPTABLES_V4)
    ipv6 = iptables_part(script, "ip6tables-restore")
    ipv4 = iptables_part(script, "iptables-restore")
    assert ipv6 == ipv4.replace("icmp-admin-prohibited", "icmp6-adm-prohibited")


def test_typical_nft_script() -> None:
    assert render(TYPICAL, Backend.NFT) == TYPICAL_NFT


@pytest.mark.parametrize("backend", list(Backend))
def test_allowed_flows_return_and_nothing_is_accepted(backend: Backend) -> None:
    """ACCEPT would skip the school's own rules after ours; only RETURN hands back to them."""
    script = render(RuleSettings(filter_local=True), backend)
    assert "ACCEPT" not in script
    assert [line for line in script.splitlines() if re.search(r"\baccept\b", line)] == [
        line for line in script.splitlines() if "policy accept;" in line
    ]


def test_one_queue_uses_queue_num_and_fail_closed_has_no_bypass() -> None:
    settings = RuleSettings(queues=range(3, 4), fail_open=False)
    iptables = render(settings, Backend.IPTABLES)
    assert "-j NFQUEUE --queue-num 3\n" in iptables
    assert "bypass" not in iptables and "balance" not in iptables
    nft = render(settings, Backend.NFT)
    assert "queue num 3\n" in nft and "bypass" not in nft


def test_cpu_fanout_is_only_rendered_when_asked() -> None:
    with_fanout = RuleSettings(queues=range(2), cpu_fanout=True, fail_open=True)
    assert "--queue-balance 0:1 --queue-bypass --queue-cpu-fanout\n" in render(
        with_fanout, Backend.IPTABLES
    )
    assert "queue num 0-1 bypass,fanout\n" in render(with_fanout, Backend.NFT)
    assert "fanout" not in render(RuleSettings(queues=range(2)), Backend.NFT)


def test_every_forwarded_packet_without_lan_interfaces() -> None:
    iptables = render(RuleSettings(), Backend.IPTABLES)
    assert " -i " not in iptables
    assert "-A EDUFILTER-FORWARD -p tcp -m conntrack --ctdir ORIGINAL -j EDUFILTER-INSPECT" in iptables
    nft = render(RuleSettings(), Backend.NFT)
    assert "iifname" not in nft
    assert "\t\tmeta l4proto { tcp, udp } ct direction original jump inspect\n" in nft


def test_several_lan_interfaces() -> None:
    settings = RuleSettings(lan_interfaces=("eth1", "vlan20"))
    iptables = render(settings, Backend.IPTABLES)
    for interface in ("eth1", "vlan20"):
        for protocol in ("tcp", "udp"):
            assert f"-A EDUFILTER-FORWARD -i {interface} -p {protocol} " in iptables
    assert 'iifname { "eth1", "vlan20" } ' in render(settings, Backend.NFT)


def test_filter_local_adds_the_output_hook() -> None:
    without = render(RuleSettings(), Backend.IPTABLES)
    assert "OUTPUT" not in without
    local = render(RuleSettings(filter_local=True, lan_interfaces=("eth1",)), Backend.IPTABLES)
    ipv4 = iptables_part(local, "iptables-restore")
    assert ipv4.count("-I OUTPUT 1 -j EDUFILTER-OUTPUT\n") == 1
    assert ipv4.count("-I FORWARD 1 -j EDUFILTER-FORWARD\n") == 1
    # The gateway's own packets have no input interface: no -i in the OUTPUT chain.
    output_rules = [line for line in ipv4.splitlines() if line.startswith("-A EDUFILTER-OUTPUT")]
    unmarked = "-m mark --mark 0x00000000/0x0f000000 -m connmark --mark 0x00000000/0x0f000000"
    assert output_rules[0] == "-A EDUFILTER-OUTPUT -m mark --mark 0x01000000/0x0f000000 -g EDUFILTER-SAVE-ALLOW"
    assert output_rules[1] == "-A EDUFILTER-OUTPUT -m mark --mark 0x04000000/0x0f000000 -j RETURN"
    assert output_rules[4] == (
        "-A EDUFILTER-OUTPUT -m mark --mark 0x00000000/0x0f000000 -m connmark --mark 0x01000000/0x0f000000 -j RETURN"
    )
    assert output_rules[5:8] == [
        f"-A EDUFILTER-OUTPUT -p tcp {unmarked} -m conntrack --ctdir ORIGINAL -j EDUFILTER-INSPECT",
        f"-A EDUFILTER-OUTPUT -p udp {unmarked} -m conntrack --ctdir ORIGINAL -j EDUFILTER-INSPECT",
        f"-A EDUFILTER-OUTPUT {unmarked} -j RETURN",
    ]
    assert not any(" -i " in line for line in output_rules)
    nft = render(RuleSettings(filter_local=True), Backend.NFT)
    assert "type filter hook output priority filter - 10; policy accept;" in nft


def test_ipv4_only() -> None:
    settings = RuleSettings(ipv6=False)
    assert "ip6tables-restore" not in render(settings, Backend.IPTABLES)
    nft = render(settings, Backend.NFT)
    assert "policy accept;\n\t\tmeta nfproto ipv6 return\n" in nft


def test_inspection_bound_and_mark_layout_follow_the_settings() -> None:
    settings = RuleSettings(inspect_packets=8, layout=MarkLayout(0x00000070))
    iptables = render(settings, Backend.IPTABLES)
    assert "--connbytes 0:8 --connbytes-dir original --connbytes-mode packets" in iptables
    assert "-j MARK --set-xmark 0x00000050/0x00000070" in iptables
    assert "-m connmark --mark 0x00000010/0x00000070 -j RETURN" in iptables
    nft = render(settings, Backend.NFT)
    assert "ct original packets 0-8 " in nft
    assert "ct mark set ct mark & 0xffffff8f | 0x00000010" in nft
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
