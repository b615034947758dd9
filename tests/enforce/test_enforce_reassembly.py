"""The classify pass against circumvention tools: shielded groups reset flows that show a decoy,
a differing overlap, urgent data or a handshake unfinished at the bound (reason evasion);
a handshake still under way past the kernel's packet bound stays queued; unshielded groups
keep the group's default."""

from __future__ import annotations

from pathlib import Path

import dpkt
import pytest

from edufilter.enforce._enforce import Code, Enforcer, Slow
from edufilter._fastpath import FlowExtractor
from edufilter.rules.marks import BOUND, MarkLayout
from evasion_packets import http_request, pieces, segment, syn_segment
from packets import post_quantum_client_hello, tls_records
from test_enforce import MASK, compiled_view, set_policy

POLICY = """
[settings]
default_group = "pupils"
[lists.blocked]
domain = ["blocked.test"]
[groups.pupils]
bypass_shield = {shield}
[[groups.pupils.rules]]
action = "block"
lists = ["blocked"]
"""
BOUND_MARK = MarkLayout(MASK).value(BOUND)


def enforcer_for(tmp_path: Path, shield: bool) -> Enforcer:
    loop = Enforcer(None, FlowExtractor(handshake_timeout=5.0), None, MASK, 16)
    set_policy(loop, compiled_view(tmp_path, POLICY.format(shield="true" if shield else "false")))
    return loop


@pytest.fixture
def shielded(tmp_path: Path) -> Enforcer:
    return enforcer_for(tmp_path, True)


@pytest.fixture
def unshielded(tmp_path: Path) -> Enforcer:
    return enforcer_for(tmp_path, False)


def decided(loop: Enforcer, sport: int) -> list[tuple[int, str | None]]:
    return [(flow[7], flow[8]) for flow in loop.decided_flows() if flow[4] == sport]


def hello(name: str) -> bytes:
    return tls_records(post_quantum_client_hello(name.encode()))


DECOY = segment(http_request("allowed.test"), 0, 100, sport=41000, dport=80, ttl=3)
REAL = segment(http_request("www.blocked.test"), 0, 100, sport=41000, dport=80)


def test_a_low_ttl_decoy_resets_the_flow_of_a_shielded_group(shielded: Enforcer) -> None:
    _, _, slow = shielded.classify_offline([syn_segment(100, sport=41000, dport=80), DECOY], 1.0)
    assert decided(shielded, 41000) == [(Code.CODE_REJECT, None)]
    assert slow == [(1, Slow.SLOW_EVENT, None)] and shielded.stats["evasion"] == 1


def test_an_unshielded_group_reads_past_the_decoy(unshielded: Enforcer) -> None:
    names, blocked, _ = unshielded.classify_offline([syn_segment(100, sport=41000, dport=80), DECOY, REAL], 1.0)
    assert (names, blocked) == (1, 1)  # the real request, not the decoy, decided the flow
    assert decided(unshielded, 41000) == [(Code.CODE_REJECT, "www.blocked.test")]
    assert unshielded.stats["evasion"] == 0


def test_a_differing_overlap_resets_even_an_allowed_name(shielded: Enforcer) -> None:
    real, other = hello("www.allowed.test"), hello("www.alloweb.test")
    packets = [syn_segment(200, sport=41001), segment(real[900:], 900, 200, sport=41001),
               segment(other, 0, 200, sport=41001)]
    shielded.classify_offline(packets, 1.0)
    assert decided(shielded, 41001) == [(Code.CODE_REJECT, None)] and shielded.stats["evasion"] == 1


def test_urgent_data_resets_the_flow(shielded: Enforcer) -> None:
    stream = hello("www.allowed.test")
    urgent = segment(stream[:300], 0, 300, sport=41002, flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_URG, urgent=5)
    shielded.classify_offline([syn_segment(300, sport=41002), urgent], 1.0)
    assert decided(shielded, 41002) == [(Code.CODE_REJECT, None)] and shielded.stats["evasion"] == 1


def split_hello(name: str, isn: int, sport: int, size: int) -> list[bytes]:
    stream = hello(name)
    return [segment(data, offset, isn, sport=sport)
            for offset, data in pieces(stream, list(range(size, len(stream), size)))]


@pytest.mark.parametrize("name, code", [("www.blocked.test", Code.CODE_REJECT), ("www.allowed.test", Code.CODE_ALLOW)])
@pytest.mark.parametrize("shield", [True, False])
def test_a_split_hello_past_the_packet_bound_is_read_whole(tmp_path: Path, shield: bool, name: str,
                                                           code: int) -> None:
    loop = enforcer_for(tmp_path, shield)
    first, *rest = split_hello(name, 400, 41003, 40)      # ~46 segments, all but the first past the bound
    loop.classify_offline([syn_segment(400, sport=41003), first], 1.0)
    names, _, _ = loop.classify_offline(rest, 2.0, mark=BOUND_MARK)
    assert names == 1 and decided(loop, 41003) == [(code, name)]
    assert loop.stats["held_past_bound"] == len(rest) - 1 and loop.stats["evasion"] == 0


@pytest.mark.parametrize("shield, code, evasion", [(True, Code.CODE_REJECT, 1), (False, Code.CODE_ALLOW, 0)])
def test_a_hello_unfinished_at_the_time_bound(tmp_path: Path, shield: bool, code: int, evasion: int) -> None:
    loop = enforcer_for(tmp_path, shield)
    segments = split_hello("www.blocked.test", 500, 41004, 100)
    loop.classify_offline([syn_segment(500, sport=41004), *segments[:3]], 1.0)
    loop.classify_offline([segments[3]], 2.0, mark=BOUND_MARK)
    assert decided(loop, 41004) == []                      # still under way: held
    loop.classify_offline([segments[4]], 7.0, mark=BOUND_MARK)
    assert decided(loop, 41004) == [(code, None)] and loop.stats["evasion"] == evasion


def test_past_the_bound_a_flow_without_a_handshake_gets_the_default(shielded: Enforcer) -> None:
    ssh = segment(b"SSH-2.0-OpenSSH_9.6\r\n", 0, 600, sport=41005, dport=22)
    after = segment(b"\x00" * 40, 21, 600, sport=41005, dport=22)
    shielded.classify_offline([syn_segment(600, sport=41005, dport=22), ssh], 1.0)
    assert decided(shielded, 41005) == [(Code.CODE_ALLOW, None)]   # settled at once: not TLS or HTTP
    unknown = segment(b"\x00" * 40, 0, 700, sport=41006, dport=22)  # a flow never seen starting
    shielded.classify_offline([after, unknown], 2.0, mark=BOUND_MARK)
    assert decided(shielded, 41006) == [(Code.CODE_ALLOW, None)] and shielded.stats["evasion"] == 0
