"""End to end in the network-namespace lab (bench/labbench.py), each figure against its
baseline in the same run; noisy figures are measured repeatedly and their median kept.

On a 2-core machine the gateway gets one core and the clients and servers the other
(labbench.py), for both sides of each ratio alike; only the scaling test lets them mix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest

from edufilter_lab.netns import Lab, cleanup_stale, namespaces_available
from labbench import BenchLab, median, percentile
from querymix import HIT_SHARE, Rankings, realistic_queries

pytestmark = pytest.mark.lab

ROUNDS = 3
IPERF_SECONDS = 3
HTTPS_CONNECTIONS = 2000
DNS_SECONDS = 3
DNS_QUERIES = 100_000
PROBE_SECONDS = 1
THROUGHPUT_LOSS = 0.005
THROUGHPUT_START = 20_000
BISECTIONS = 4
# The worst case decides two targets within a few per cent of its limit: more rounds and a
# finer search (steps of ~5,000 packets/s) than the other figures.
QUEUE_ROUNDS = 5
QUEUE_BISECTIONS = 5
LATENCY_PACKETS = 10_000
LATENCY_RATE = 2000
BROWSE_PAGES = 400


@pytest.fixture(scope="module")
def require_lab() -> None:
    reason = namespaces_available()
    if reason is None and len(os.sched_getaffinity(0)) < 2:
        reason = "the lab gives the gateway a core of its own: it needs 2 cores"
    if reason is not None:
        pytest.skip(f"end-to-end benchmarks skipped: {reason}")
    cleanup_stale()


@pytest.fixture(scope="module")
def bench_lab(require_lab: None, rankings: Rankings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchLab]:
    with Lab() as lab:
        yield BenchLab(lab, tmp_path_factory.mktemp("bench-lab"), [name.decode() for name in rankings.listed])


@pytest.fixture(scope="module")
def dns_queries(rankings: Rankings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dns") / "queries"
    path.write_bytes(b"".join(name + b" A\n" for name in realistic_queries(rankings, DNS_QUERIES, seed=5)))
    return path


def measure_once(benchmark, measure, description: str) -> dict:
    """Runs the whole (repeated) measurement once under pytest-benchmark; its figures go to
    the JSON's extra_info."""
    figures = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(figures=figures, mix=description)
    return figures


def test_filtered_against_unfiltered(benchmark, bench_lab: BenchLab, dns_queries: Path) -> None:
    """iperf3 bulk TCP, new HTTPS connections (curl against nginx), DNS (dnsperf against
    dnsmasq): through `edufilter run` (one worker) and through the same gateway without it;
    the gateway on one core, clients and servers on the other."""
    benchmark.group = "end to end: filtered / unfiltered"

    def measure() -> dict:
        runs: dict[str, list[float]] = {}
        queued_per_connection = []
        for round_ in range(ROUNDS):
            for filtered in (False, True):
                with bench_lab.edufilter(workers=1) if filtered else nullcontext([]):
                    side = "filtered" if filtered else "unfiltered"
                    runs.setdefault(f"iperf_{side}_bps", []).append(bench_lab.iperf_bits_per_second(IPERF_SECONDS))
                    queued_before = bench_lab.queued(1) if filtered else 0
                    runs.setdefault(f"https_{side}_per_s", []).append(bench_lab.https_connections_per_second(
                        HTTPS_CONNECTIONS, offset=(2 * round_ + filtered) * HTTPS_CONNECTIONS))
                    if filtered:
                        queued_per_connection.append((bench_lab.queued(1) - queued_before) / HTTPS_CONNECTIONS)
                    runs.setdefault(f"dns_{side}_qps", []).append(
                        bench_lab.dns_queries_per_second(dns_queries, DNS_SECONDS))
        figures = {name: median(values) for name, values in runs.items()}
        figures["queued_per_new_connection"] = median(queued_per_connection)
        for metric, unit in (("iperf", "bps"), ("https", "per_s"), ("dns", "qps")):
            figures[f"{metric}_filtered_over_unfiltered"] = \
                figures[f"{metric}_filtered_{unit}"] / figures[f"{metric}_unfiltered_{unit}"]
        return figures

    measure_once(benchmark, measure,
                 f"medians of {ROUNDS} rounds; gateway on one core, clients and servers on the other; iperf3 {IPERF_SECONDS} s; {HTTPS_CONNECTIONS} HTTPS connections "
                 f"(curl, 4 in parallel, one name each, TLS 1.3 to nginx); dnsperf {DNS_SECONDS} s, 4 clients, "
                 f"queries from the realistic name mix ({HIT_SHARE:.0%} drawn from blocked names)")


def test_queued_fraction(benchmark, bench_lab: BenchLab) -> None:
    """How much of web-like traffic reaches user space: packets queued / packets forwarded,
    with offloads off so packets are counted as on a wire."""
    benchmark.group = "end to end: queued fraction"

    def measure() -> dict:
        with bench_lab.edufilter(workers=1), bench_lab.wire_sized_packets(), \
                bench_lab.forwarded_counter() as forwarded:
            queued_before, forwarded_before = bench_lab.queued(1), forwarded()
            bench_lab.browse(BROWSE_PAGES)
            queued, total = bench_lab.queued(1) - queued_before, forwarded() - forwarded_before
        return {"queued_fraction": queued / total, "browse_queued_packets": queued, "browse_forwarded_packets": total}

    measure_once(benchmark, measure,
                 f"{BROWSE_PAGES} connections: one DNS query, then one new TLS connection fetching one object of "
                 "8 KB (50%), 64 KB (30%), 256 KB (15%) or 1 MB (5%); mean 113 KB (HTTP Archive: ~2 MB per page "
                 "over ~17 connections); both directions counted")


def test_worst_case_queue(benchmark, bench_lab: BenchLab) -> None:
    """Every packet queued: a flood of small UDP packets, each a new flow, against edufilter
    (its own rules, failing closed so an overflow is a loss, not a bypass), the C accept-all
    loop and the dpkt worker; each the highest rate it forwards with at most THROUGHPUT_LOSS
    lost, on the gateway's one core. The contenders take turns in each round, so a change in
    the machine's load hits them alike."""
    benchmark.group = "end to end: every packet queued"
    contenders = {
        "c": lambda: bench_lab.baseline("c"),
        "dpkt": lambda: bench_lab.baseline("dpkt"),
        "edufilter": lambda: bench_lab.edufilter(workers=1, fail="closed"),
    }

    def measure() -> dict:
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        bounded = dict.fromkeys(contenders, 0)
        for _ in range(QUEUE_ROUNDS):
            for name, consumer in contenders.items():
                with consumer():
                    bench_lab.flood(0.3, rate=THROUGHPUT_START)  # warm-up: caches, page faults
                    found = bench_lab.throughput(PROBE_SECONDS, THROUGHPUT_LOSS, THROUGHPUT_START,
                                                 QUEUE_BISECTIONS)
                rates[name].append(found.pps)
                bounded[name] += found.generator_bound
        figures = {f"queue_{name}_pps": median(measured) for name, measured in rates.items()}
        # rounds in which the generator, not the gateway, was the limit: the rate is a lower bound
        figures.update({f"queue_{name}_generator_bound_rounds": count for name, count in bounded.items()})
        figures["queue_over_c"] = figures["queue_edufilter_pps"] / figures["queue_c_pps"]
        figures["queue_over_dpkt"] = figures["queue_edufilter_pps"] / figures["queue_dpkt_pps"]
        # The most any consumer could reach over the dpkt worker here: the C loop's ratio.
        figures["queue_c_over_dpkt"] = figures["queue_c_pps"] / figures["queue_dpkt_pps"]
        return figures

    measure_once(benchmark, measure,
                 f"46-byte UDP packets (64-byte frames) from 64 pupil addresses, each a new flow; highest rate with "
                 f"at most {THROUGHPUT_LOSS:.1%} lost ({PROBE_SECONDS} s probes, doubling from {THROUGHPUT_START:,}/s "
                 f"then {QUEUE_BISECTIONS} bisections), median of {QUEUE_ROUNDS} rounds in turns; gateway on one core; "
                 "baselines behind `-p udp -m conntrack --ctdir ORIGINAL -j NFQUEUE`")


def test_latency(benchmark, bench_lab: BenchLab) -> None:
    """Time a new flow's first packet spends in the gateway, from tcpdump on both of its
    interfaces: through edufilter (1 worker), through the C accept-all loop, and with no
    filter; in turns, each round a third of the packets."""
    benchmark.group = "end to end: latency"
    contenders = {
        "unfiltered": lambda: nullcontext([]),
        "c": lambda: bench_lab.baseline("c"),
        "edufilter": lambda: bench_lab.edufilter(workers=1),
    }

    def measure() -> dict:
        delays: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(ROUNDS):
            for name, consumer in contenders.items():
                with consumer():
                    delays[name] += bench_lab.transit_delays(LATENCY_PACKETS // ROUNDS, LATENCY_RATE)
        figures = {}
        for name, measured in delays.items():
            for label, share in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
                figures[f"latency_{name}_{label}_us"] = percentile(measured, share) * 1e6
            figures[f"latency_{name}_samples"] = len(measured)
        for label in ("p50", "p99", "p999"):
            figures[f"latency_added_{label}_us"] = \
                figures[f"latency_edufilter_{label}_us"] - figures[f"latency_unfiltered_{label}_us"]
        return figures

    measure_once(benchmark, measure,
                 f"{LATENCY_PACKETS} UDP packets at {LATENCY_RATE}/s, each a new flow, in {ROUNDS} turns; capture "
                 "timestamps (microseconds) on the gateway's two interfaces; added = edufilter minus unfiltered per "
                 "percentile; gateway on one core, sender on the other")


def test_queue_scaling(benchmark, bench_lab: BenchLab) -> None:
    """One queue and worker against one per core, the flood spread over the queues by the
    kernel's hash of its 64 source addresses; the gateway's receive processing on every
    core, nothing pinned: on 2 cores the generator competes with the workers."""
    benchmark.group = "end to end: scaling"

    def measure() -> dict:
        figures = {}
        with bench_lab.gateway_on_all_cores():
            for workers in (1, 2):
                with bench_lab.edufilter(workers=workers, fail="closed", pinned=False):
                    bench_lab.flood(0.3, rate=THROUGHPUT_START, pinned=False)
                    found = [bench_lab.throughput(PROBE_SECONDS, THROUGHPUT_LOSS, THROUGHPUT_START, BISECTIONS,
                                                  pinned=False) for _ in range(ROUNDS)]
                    shares = [queue["packets"] for queue in bench_lab.school.status()["queues"]]
                figures[f"scaling_{workers}_pps"] = median([throughput.pps for throughput in found])
                figures[f"scaling_{workers}_busiest_queue_share"] = max(shares) / max(1, sum(shares))
        figures["scaling_2_over_1"] = figures["scaling_2_pps"] / figures["scaling_1_pps"]
        return figures

    measure_once(benchmark, measure, f"the worst-case flood's throughput (as above), median of {ROUNDS}; gateway "
                 "receive processing, generator and workers spread over both cores")
