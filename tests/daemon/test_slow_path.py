"""The worker's slow path (daemon/worker.py: SlowPath) over the real classify pass, without a
queue or root: each packet goes through Enforcer.classify_offline, then SlowPath.handle gets
the batch as the worker loop hands it over. What it answers, rewrites, decides and logs."""

from __future__ import annotations

import socket
from pathlib import Path

import dpkt
import pytest
from compiled_policy import MASK, POLICY, compiled_view, set_policy
from packets import (
    CLIENT4,
    SERVER4,
    dns_query,
    ipv4,
    ipv6,
    openssl_client_hello,
    segments,
    syn,
    udp,
)

from edufilter._fastpath import FlowExtractor
from edufilter._wire import Code
from edufilter.capture._queue import DROP, REPEAT
from edufilter.config import Config
from edufilter.daemon.worker import PolicyView, SlowPath
from edufilter.enforce._enforce import Enforcer, Reason, Slow
from edufilter.enforce.safe_search import SafeSearchAddresses
from edufilter.rules.marks import MarkLayout

SAFE_ADDRESS = "198.18.5.5"


class RecordingEnforcer:
    """The real enforcer, with the verdicts the slow path sets kept (the queue would send them)."""

    def __init__(self, enforcer: Enforcer) -> None:
        self.enforcer = enforcer
        self.verdicts: dict[int, tuple[int, bytes | None, int | None]] = {}

    def __getattr__(self, name: str) -> object:
        return getattr(self.enforcer, name)

    def set_verdict(self, index: int, verdict: int, payload: bytes | None = None, code: int | None = None) -> None:
        self.verdicts[index] = (verdict, payload, code)
        self.enforcer.set_verdict(index, verdict, payload=payload, code=code)


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory) -> PolicyView:
    return compiled_view(tmp_path_factory.mktemp("state"), POLICY)


@pytest.fixture
def slow(view: PolicyView) -> SlowPath:
    path = SlowPath(Config(), sender=None, layout=MarkLayout(MASK), worker=0,  # type: ignore[arg-type]
                    safe_addresses=SafeSearchAddresses(None, 0, 1))
    path.view = view
    return path


def run(view: PolicyView, slow: SlowPath, packets: list[bytes]) -> tuple[RecordingEnforcer, list]:
    """One batch through the classify pass, then the slow path; the enforcer and what was flagged."""
    enforcer = Enforcer(None, FlowExtractor(), None, MarkLayout(MASK), 16)
    set_policy(enforcer, view)
    flagged = enforcer.classify_offline(packets, 1.0)[2]
    recording = RecordingEnforcer(enforcer)
    slow.handle(recording, len(packets))  # type: ignore[arg-type]
    return recording, flagged


def dns_message(packet: bytes) -> dpkt.dns.DNS:
    ip = dpkt.ip.IP(packet) if packet[0] >> 4 == 4 else dpkt.ip6.IP6(packet)
    return dpkt.dns.DNS(ip.data.data)


def query(name: str, qtype: int = dpkt.dns.DNS_A, sport: int = 33000, v6: bool = False) -> bytes:
    segment = udp(dns_query(name, qtype), 53, sport=sport)
    return ipv6(segment, 17) if v6 else ipv4(segment, 17)


def dns_over_tcp(name: str, qtype: int = dpkt.dns.DNS_A) -> list[bytes]:
    message = dns_query(name, qtype)
    return [syn(5000, sport=41000, dport=53),
            *segments(len(message).to_bytes(2, "big") + message, [], 5000, sport=41000, dport=53)]


# ---- DNS: one flag per cause, each answered its own way


@pytest.mark.parametrize("name, rcode, answers", [("www.blocked.test", dpkt.dns.DNS_RCODE_NXDOMAIN, 0),
                                                  ("sink.test", dpkt.dns.DNS_RCODE_NOERR, 1)])
def test_a_blocked_query_is_answered_as_its_rule_says_and_logged(view: PolicyView, slow: SlowPath, name: str,
                                                                 rcode: int, answers: int) -> None:
    enforcer, flagged = run(view, slow, [query(name)])
    assert [reason for _, reason, _ in flagged] == [Slow.SLOW_DNS_ANSWER]
    assert enforcer.verdicts == {0: (DROP, None, None)}
    message = dns_message(slow.outbox[0])
    assert (message.rcode, len(message.an)) == (rcode, answers), "NXDOMAIN, or the block page's address"
    assert [(event["name"], event["kind"]) for event in slow.events] == [(name, "dns")]


def test_a_bypass_signal_gets_nxdomain_and_the_query_is_dropped(view: PolicyView, slow: SlowPath) -> None:
    enforcer, flagged = run(view, slow, [query("use-application-dns.net")])
    assert [reason for _, reason, _ in flagged] == [Slow.SLOW_DNS_BYPASS]
    assert enforcer.verdicts == {0: (DROP, None, None)}
    (answer,) = slow.outbox
    message = dns_message(answer)
    assert (message.qr, message.rcode, message.id) == (1, dpkt.dns.DNS_RCODE_NXDOMAIN, 0x1234)
    assert not slow.events, "the shield's answers are not block events"


def test_an_https_record_query_gets_nodata(view: PolicyView, slow: SlowPath) -> None:
    enforcer, flagged = run(view, slow, [query("www.allowed.test", qtype=65)])
    assert [reason for _, reason, _ in flagged] == [Slow.SLOW_DNS_SERVICE_BINDING]
    assert enforcer.verdicts == {0: (DROP, None, None)}
    message = dns_message(slow.outbox[0])
    assert (message.rcode, len(message.an)) == (dpkt.dns.DNS_RCODE_NOERR, 0), "NODATA: no ECH keys learned"


@pytest.mark.parametrize("v6", [False, True])
def test_a_safe_search_query_is_rewritten_and_its_reply_restored(view: PolicyView, slow: SlowPath,
                                                                 v6: bool) -> None:
    enforcer, flagged = run(view, slow, [query("www.google.com", v6=v6)])
    assert [reason for _, reason, _ in flagged] == [Slow.SLOW_DNS_SAFE_SEARCH]
    verdict, rewritten, code = enforcer.verdicts[0]
    assert (verdict, code) == (REPEAT, Code.CODE_SAFE_SEARCH)
    assert dns_message(rewritten).qd[0].name == "forcesafesearch.google.com"
    # The query's id, read where the fast path said the UDP payload starts, keys the rewrite.
    client = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, "2001:2::1" if v6 else CLIENT4)
    assert list(slow.rewritten) == [(client, 33000, 0x1234)]

    response = dpkt.dns.DNS(id=0x1234, qr=1, rd=1, ra=1, qd=[dpkt.dns.DNS.Q(name="forcesafesearch.google.com")])
    response.an = [dpkt.dns.DNS.RR(name="forcesafesearch.google.com", type=dpkt.dns.DNS_A, ttl=300,
                                   rdata=socket.inet_aton(SAFE_ADDRESS))]
    reply = udp(bytes(response), 33000, sport=53)
    reply_packet = ipv6(reply, 17, src="2001:2::2", dst="2001:2::1") if v6 else ipv4(reply, 17, src=SERVER4,
                                                                                       dst=CLIENT4)
    enforcer, flagged = run(view, slow, [reply_packet])
    assert [reason for _, reason, _ in flagged] == [Slow.SLOW_DNS_REPLY]
    verdict, restored, code = enforcer.verdicts[0]
    assert (verdict, code) == (REPEAT, Code.CODE_PASS)
    assert dns_message(restored).qd[0].name == "www.google.com", "the client sees the name it asked for"
    assert not slow.rewritten
    assert slow.safe_addresses.knows("forcesafesearch.google.com", socket.inet_aton(SAFE_ADDRESS), 2.0)


def test_a_reply_to_a_query_never_rewritten_is_left_alone(view: PolicyView, slow: SlowPath) -> None:
    response = dpkt.dns.DNS(id=0x4321, qr=1, qd=[dpkt.dns.DNS.Q(name="www.google.com")])
    enforcer, flagged = run(view, slow, [ipv4(udp(bytes(response), 33001, sport=53), 17, src=SERVER4, dst=CLIENT4)])
    assert [reason for _, reason, _ in flagged] == [Slow.SLOW_DNS_REPLY]
    assert enforcer.verdicts == {}


@pytest.mark.parametrize("name, qtype, cause", [
    ("use-application-dns.net", dpkt.dns.DNS_A, Slow.SLOW_DNS_BYPASS),
    ("www.allowed.test", 65, Slow.SLOW_DNS_SERVICE_BINDING),
    ("www.google.com", dpkt.dns.DNS_A, Slow.SLOW_DNS_SAFE_SEARCH),
])
def test_each_cause_over_tcp_resets_the_connection(view: PolicyView, slow: SlowPath, name: str, qtype: int,
                                                   cause: Slow) -> None:
    """A stream cannot take another answer nor a rewritten query: the flow is decided REJECT,
    once, and the enforcer and the event say the same."""
    enforcer, flagged = run(view, slow, dns_over_tcp(name, qtype))
    assert [(index, reason) for index, reason, _ in flagged] == [(1, cause)]
    decided = enforcer.packet(1)
    assert (decided["code"], decided["reason"], decided["mark_code"]) == (Code.CODE_REJECT, Reason.REASON_DNS_TCP,
                                                                          Code.CODE_REJECT)
    ((_, category, action),) = [(e["name"], e["category"], e["action"]) for e in slow.events]
    assert (category, action) == ("dns-over-tcp", "block")
    assert len(slow.outbox) == 1, "the server is reset too"


def test_a_safe_search_name_in_a_group_without_safe_search_is_not_flagged(tmp_path: Path, slow: SlowPath) -> None:
    view = compiled_view(tmp_path, POLICY.replace("safe_search = true", "safe_search = false"))
    slow.view = view
    _, flagged = run(view, slow, [query("www.google.com"), query("use-application-dns.net", sport=33002)])
    assert [reason for _, reason, _ in flagged] == [Slow.SLOW_DNS_BYPASS]


# ---- TLS under safe search, the block page


def test_tls_to_a_safe_search_name_is_reset_unless_the_rewrite_gave_its_address(view: PolicyView,
                                                                                 slow: SlowPath) -> None:
    hello = openssl_client_hello("www.google.com")
    elsewhere = segments(hello, [], 7000, sport=42000)
    enforcer, flagged = run(view, slow, [syn(7000, sport=42000), *elsewhere])
    assert [reason for _, reason, _ in flagged] == [Slow.SLOW_SAFE_SEARCH]
    decided = enforcer.packet(1)
    assert (decided["code"], decided["reason"]) == (Code.CODE_REJECT, Reason.REASON_SAFE_SEARCH)
    assert [event["category"] for event in slow.events] == ["safe-search-bypass"]

    slow.safe_addresses.learn("forcesafesearch.google.com", socket.inet_aton(SERVER4), 300)
    slow.events.clear()
    enforcer, _ = run(view, slow, [syn(8000, sport=42001), *segments(hello, [], 8000, sport=42001)])
    assert enforcer.packet(1)["code"] == Code.CODE_ALLOW and not slow.events


def test_the_block_page_speaks_the_request_s_language_and_the_flow_is_dropped_after(view: PolicyView,
                                                                                      slow: SlowPath) -> None:
    request = b"GET /x HTTP/1.1\r\nHost: www.blocked.test\r\nAccept-Language: fr-BE,fr;q=0.9\r\n\r\n"
    enforcer, flagged = run(view, slow, [syn(9000, sport=43000, dport=80),
                                         *segments(request, [], 9000, sport=43000, dport=80)])
    assert [reason for _, reason, _ in flagged] == [Slow.SLOW_HTTP_BLOCK]
    page = b"".join(bytes(dpkt.ip.IP(segment).data.data) for segment in slow.outbox)
    assert b'<html lang="fr">' in page
    decided = enforcer.packet(1)
    assert (decided["code"], decided["mark_code"]) == (Code.CODE_DROP, Code.CODE_DROP), \
        "after the page and its close, the rest of the flow is dropped quietly"
    ((name, action),) = [(event["name"], event["action"]) for event in slow.events]
    assert (name, action) == ("www.blocked.test", "block")


def test_the_fast_path_hands_over_where_the_transport_and_its_payload_start(view: PolicyView,
                                                                            slow: SlowPath) -> None:
    v4, v6 = query("use-application-dns.net"), query("use-application-dns.net", v6=True)
    enforcer, _ = run(view, slow, [v4, v6])
    assert [(enforcer.packet(i)["transport_offset"], enforcer.packet(i)["payload_offset"]) for i in (0, 1)] == \
        [(20, 28), (40, 48)]
