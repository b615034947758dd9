"""The worker's classify pass (enforce/_enforce.pyx) without a queue: what it decides per packet, what
it leaves to the Python slow path, and that a flow is decided once. The queue and the kernel
are in tests/lab/test_daemon.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from edufilter.enforce._enforce import Code, Enforcer, Slow
from edufilter._fastpath import FlowExtractor
from edufilter.daemon.worker import PolicyView
from edufilter.enforce.dns import special_names
from edufilter.policy.compile import compile_policy
from edufilter.policy.defaults import load_policy_dir
from edufilter.policy.store import PolicyStore
from packets import (
    SERVER4,
    dns_query,
    ipv4,
    openssl_client_hello,
    post_quantum_client_hello,
    segments,
    syn,
    tcp,
    tls_records,
    udp,
)

POLICY = """
[settings]
default_group = "pupils"
[lists.blocked]
domain = ["blocked.test"]
[lists.sink]
domain = ["sink.test"]
[lists.network]
cidr = ["198.51.100.0/24"]
[groups.pupils]
safe_search = true
bypass_shield = true
[[groups.pupils.rules]]
action = "block"
lists = ["blocked", "network"]
[[groups.pupils.rules]]
action = "sinkhole"
lists = ["sink"]
"""
MASK = 0x0F000000


def compiled_view(state: Path, policy: str) -> PolicyView:
    (state / "policy").mkdir(parents=True)
    (state / "policy" / "school.toml").write_text(policy)
    with PolicyStore(state / "policy.sqlite") as store:
        store.replace_all(load_policy_dir(state / "policy"))
    compile_policy(state)
    return PolicyView.load(state)


def set_policy(loop: Enforcer, view: PolicyView) -> None:
    loop.set_policy(view.engine.classifier, view.groups, special_names(), view.url_hosts)


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory) -> Enforcer:
    loop = Enforcer(None, FlowExtractor(), None, MASK, 16)
    set_policy(loop, compiled_view(tmp_path_factory.mktemp("state"), POLICY))
    return loop


def tls_flow(name: str, isn: int, sport: int, cuts: list[int] | None = None) -> list[bytes]:
    hello = tls_records(post_quantum_client_hello(name.encode())) if cuts else openssl_client_hello(name)
    return [syn(isn, sport=sport), *segments(hello, cuts or [], isn, sport=sport)]


def dns_queries(names: list[str], first_port: int) -> list[bytes]:
    return [ipv4(udp(dns_query(name), 53, sport=first_port + index), 17) for index, name in enumerate(names)]


def test_names_are_decided_and_blocks_counted(enforcer: Enforcer) -> None:
    packets = [*tls_flow("www.allowed.test", 1000, 40001), *tls_flow("www.blocked.test", 2000, 40002),
               *tls_flow("a.blocked.test", 3000, 40003, cuts=[1400])]
    names, blocked, slow = enforcer.classify_offline(packets, 1.0)
    assert (names, blocked) == (3, 2)
    # Each blocked TLS flow goes to Python once: its event (and the reset of the server side).
    assert [(reason, name) for _, reason, name in slow] == [(Slow.SLOW_EVENT, "www.blocked.test"),
                                                            (Slow.SLOW_EVENT, "a.blocked.test")]


def test_dns_blocks_safe_search_and_bypass_signals_go_to_the_slow_path(enforcer: Enforcer) -> None:
    queries = ["www.allowed.test", "www.blocked.test", "sink.test", "www.google.com", "use-application-dns.net"]
    names, blocked, slow = enforcer.classify_offline(dns_queries(queries, 30000), 1.0)
    assert (names, blocked) == (5, 2)
    assert slow == [(1, Slow.SLOW_DNS_ANSWER, "www.blocked.test"), (2, Slow.SLOW_DNS_ANSWER, "sink.test"),
                    (3, Slow.SLOW_DNS_SPECIAL, "www.google.com"), (4, Slow.SLOW_DNS_SPECIAL, "use-application-dns.net")]
    https_record = ipv4(udp(dns_query("www.allowed.test", qtype=65), 53, sport=31000), 17)
    assert enforcer.classify_offline([https_record], 1.0)[2] == [(0, Slow.SLOW_DNS_SPECIAL, "www.allowed.test")]


def test_tls_to_a_name_safe_search_rewrites_goes_to_the_handler(enforcer: Enforcer) -> None:
    """Only the handler knows which addresses the rewrite answered: it checks the destination."""
    packets = [*tls_flow("www.google.com", 12000, 42300), *tls_flow("www.allowed.test", 13000, 42301)]
    names, blocked, slow = enforcer.classify_offline(packets, 1.0)
    assert (names, blocked) == (2, 0)
    assert [(reason, name) for _, reason, name in slow] == [(Slow.SLOW_SAFE_SEARCH, "www.google.com")]


def test_a_flow_without_a_name_is_decided_by_address_when_it_settles(enforcer: Enforcer) -> None:
    to_listed_network = ipv4(tcp(b"SSH-2.0-OpenSSH_9.2\r\n", 5001, dport=22, sport=41000), 6, dst="198.51.100.7")
    elsewhere = ipv4(tcp(b"SSH-2.0-OpenSSH_9.2\r\n", 6001, dport=22, sport=41001), 6, dst=SERVER4)
    names, blocked, slow = enforcer.classify_offline([to_listed_network, elsewhere], 1.0)
    assert (names, blocked) == (0, 0)
    assert slow == [(0, Slow.SLOW_EVENT, None)]  # blocked by the network list: an event, no name
    stats = enforcer.stats
    assert stats["flows_decided"] >= 2


def test_packets_of_a_decided_flow_get_its_verdict_again(enforcer: Enforcer) -> None:
    first = tls_flow("again.blocked.test", 7000, 42000)
    before = enforcer.stats["repeated"]
    enforcer.classify_offline(first, 1.0)
    # a segment queued before the mark was saved: same flow, no name in it
    late = ipv4(tcp(b"\x17\x03\x03\x00\x10" + bytes(16), 7000 + 1 + 600, sport=42000), 6)
    enforcer.classify_offline([late], 1.0)
    assert enforcer.stats["repeated"] == before + 1
    flows = {(flow[4], flow[8]): flow[7] for flow in enforcer.decided_flows()}
    assert flows[(42000, "again.blocked.test")] == Code.CODE_REJECT


def test_a_new_connection_on_a_decided_five_tuple_is_judged_by_its_own_name(enforcer: Enforcer) -> None:
    """A SYN forgets what an earlier connection on the same 5-tuple was given: its ClientHello
    decides, in both directions (allowed then blocked, blocked then allowed)."""
    before = enforcer.stats["decided_forgotten"]
    for first, second, expected in (("www.allowed.test", "reuse.blocked.test", Code.CODE_REJECT),
                                    ("again2.blocked.test", "www.allowed.test", Code.CODE_ALLOW)):
        enforcer.classify_offline(tls_flow(first, 11000, 42200), 1.0)
        enforcer.classify_offline(tls_flow(second, 52000, 42200), 2.0)
        flows = {flow[4]: (flow[8], flow[7]) for flow in enforcer.decided_flows()}
        assert flows[42200] == (second, expected)
    assert enforcer.stats["decided_forgotten"] == before + 3  # each SYN after the first


def test_a_flow_decided_earlier_in_the_same_batch_gets_its_verdict(enforcer: Enforcer) -> None:
    """The batch's decisions are written to the table after the batch: a later packet of the
    same flow in the batch must still find its flow's decision."""
    late = ipv4(tcp(b"\x17\x03\x03\x00\x10" + bytes(16), 8000 + 1 + 600, sport=42100), 6)
    other = ipv4(tcp(b"\x17\x03\x03\x00\x10" + bytes(16), 9000, sport=42101), 6)
    before = enforcer.stats["repeated"]
    names, blocked, _ = enforcer.classify_offline([*tls_flow("same.blocked.test", 8000, 42100), late, other], 1.0)
    assert (names, blocked) == (1, 1)
    assert enforcer.stats["repeated"] == before + 1  # the late segment; the other flow is not it
    flows = {(flow[4], flow[8]): flow[7] for flow in enforcer.decided_flows()}
    assert flows[(42100, "same.blocked.test")] == Code.CODE_REJECT


def test_bad_packets_are_counted_and_dropped_not_raised(enforcer: Enforcer) -> None:
    before = enforcer.stats["malformed_dropped"]
    junk = [b"", b"\x45", b"\x45\x00\x00\x50" + bytes(16), b"\x60" + bytes(30), bytes(range(256)) * 3]
    assert enforcer.classify_offline(junk, 1.0)[:2] == (0, 0)
    assert enforcer.stats["malformed_dropped"] >= before + 3
    with pytest.raises(TypeError):
        enforcer.classify_offline(["not bytes"], 1.0)


NESTED_POLICY = """
[settings]
default_group = "pupils"
[lists.blocked]
domain = ["deep.test"]
[lists.sink]
domain = ["a.deep.test"]
[lists.open]
domain = ["b.a.deep.test"]
[groups.pupils]
[[groups.pupils.rules]]
action = "allow"
lists = ["open"]
[[groups.pupils.rules]]
action = "block"
lists = ["blocked"]
[[groups.pupils.rules]]
action = "sinkhole"
lists = ["sink"]
"""


def test_a_name_asked_again_is_answered_from_the_name_cache(tmp_path: Path) -> None:
    """The worker remembers the tables' answer per name; a name asked again gets the same
    decision without the lookup. A name with more than two listed suffixes (b.a.deep.test:
    three lists) or longer than 112 bytes is looked up every time, and decided the same."""
    loop = Enforcer(None, FlowExtractor(), None, MASK, 16)
    set_policy(loop, compiled_view(tmp_path, NESTED_POLICY))
    long_name = "x" * 40 + ".long.deep.test"  # 55 bytes: both entries of its set
    too_long = "x" * 60 + "." + "y" * 50 + ".long.deep.test"
    names = ["www.deep.test", "c.a.deep.test", "b.a.deep.test", "www.elsewhere.test", long_name, too_long,
             "deep.test"]
    first = loop.classify_offline(dns_queries(names, 30000), 1.0)
    assert (loop.stats["name_cache_hits"], loop.stats["name_cache_misses"]) == (0, len(names))
    again = loop.classify_offline(dns_queries(names, 31000), 1.0)
    assert again == first
    assert first[:2] == (7, 5)  # b.a.deep.test is allowed, www.elsewhere.test has no rule
    assert [name for _, _, name in first[2]] == ["www.deep.test", "c.a.deep.test", long_name, too_long, "deep.test"]
    assert (loop.stats["name_cache_hits"], loop.stats["name_cache_misses"]) == (5, len(names) + 2)


def test_a_new_policy_empties_the_name_cache(tmp_path: Path) -> None:
    """A cached answer holds set ids of the old tables: after set_policy, a name is looked
    up in the new ones (here the old set id would block an allowed name)."""
    loop = Enforcer(None, FlowExtractor(), None, MASK, 16)
    set_policy(loop, compiled_view(tmp_path / "old", POLICY.replace("blocked.test", "first.test")))
    assert loop.classify_offline(dns_queries(["www.first.test"], 32000), 1.0)[:2] == (1, 1)
    set_policy(loop, compiled_view(tmp_path / "new", POLICY.replace("blocked.test", "second.test")))
    assert loop.classify_offline(dns_queries(["www.first.test", "www.second.test"], 33000), 1.0)[:2] == (2, 1)
    assert loop.stats["name_cache_hits"] == 0


def test_cached_answers_keep_the_override_and_the_list_apart(tmp_path: Path) -> None:
    """Overrides, admin lists and categories are three tables; a cached name remembers which
    table each of its listed suffixes was in, so the override still wins when asked again."""
    from datetime import datetime, timedelta, timezone

    from edufilter.policy.model import Action

    compiled_view(tmp_path, POLICY)
    now = datetime.now(timezone.utc)
    with PolicyStore(tmp_path / "policy.sqlite") as store:
        store.add_override("pupils", "open.blocked.test", Action.ALLOW, now - timedelta(minutes=1),
                           now + timedelta(minutes=50))
    compile_policy(tmp_path)
    view = PolicyView.load(tmp_path)
    loop = Enforcer(None, FlowExtractor(), None, MASK, 16)
    set_policy(loop, view)
    names = ["www.open.blocked.test", "www.blocked.test"]
    first = loop.classify_offline(dns_queries(names, 34000), now.timestamp())
    again = loop.classify_offline(dns_queries(names, 35000), now.timestamp())
    assert first[:2] == again[:2] == (2, 1)
    assert [name for _, _, name in again[2]] == ["www.blocked.test"]
    assert loop.stats["name_cache_hits"] == 2
