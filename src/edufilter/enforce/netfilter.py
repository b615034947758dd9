"""The enforce stage's kernel rules: queue what still needs a decision, act on the rest.

A worker decides a flow with an NF_REPEAT verdict whose packet mark carries a verdict code;
the rules save that code in the conntrack mark and from then on the kernel handles the flow
alone (return to the school's own rules, TCP reset, ICMP administratively prohibited, drop).
Only undecided flows' first packets (up to a connbytes bound), DNS queries and, for safe
search, DNS answers reach user space.

Two backends render the same logic: native nftables (an `inet` table with the `queue`
expression) and iptables-nft (own chains, the xt NFQUEUE target) for kernels without
nft_queue. Every function works in the current network namespace, or in `netns` when given.
"""

from __future__ import annotations

import enum
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edufilter.enforce.marks import (
    ALLOW,
    BOUND,
    DROP,
    INJECTED,
    PASS,
    REJECT,
    SAFE_SEARCH,
    UNDECIDED,
    VERDICT_CODES,
    MarkLayout,
)
from edufilter.errors import NetfilterError

# SYN, ACK and a ClientHello or HTTP request of up to three segments; two QUIC Initials fit
# with room to spare. Measured in the lab (packet that completes the name, original
# direction): curl HTTPS/HTTP 3, Chromium TLS (two-segment ClientHello, TSO off) 4, curl over
# a 296-byte MTU 5, Chromium QUIC 2. The packet after the bound is still queued (code BOUND),
# so one retransmission inside the handshake still leaves the name visible to the worker.
DEFAULT_INSPECT_PACKETS = 5
MAX_QUEUE = 65535
DNS_PORT = 53
COMMAND_TIMEOUT = 30.0

NFT_TABLE = "edufilter"
NFT_PROBE_TABLE = "edufilter-probe"
# Before the school's own filter chains (iptables-nft's sit at priority 0), as the iptables
# backend's jump at the top of FORWARD is.
NFT_PRIORITY = "filter - 10"

IPTABLES_FORWARD = "EDUFILTER-FORWARD"
IPTABLES_OUTPUT = "EDUFILTER-OUTPUT"
IPTABLES_INSPECT = "EDUFILTER-INSPECT"
IPTABLES_SAVE_ALLOW = "EDUFILTER-SAVE-ALLOW"
IPTABLES_CHAINS = (IPTABLES_FORWARD, IPTABLES_OUTPUT, IPTABLES_INSPECT, IPTABLES_SAVE_ALLOW)
IPTABLES = {4: "iptables", 6: "ip6tables"}
IPTABLES_REJECT_ICMP = {4: "icmp-admin-prohibited", 6: "icmp6-adm-prohibited"}
IPTABLES_NFT_FAMILIES = ("ip", "ip6")  # where iptables-nft and ip6tables-nft keep their tables

# Linux interface names: up to 15 bytes, no '/', ':' or whitespace; quotes would break the
# scripts, and iptables' '+' wildcard has no plain nft equivalent.
_INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")


class Backend(enum.Enum):
    NFT = "nft"  # native nftables with the queue expression
    IPTABLES = "iptables"  # iptables-nft / ip6tables-nft with the xt NFQUEUE target


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """What the rules queue and how; validated on creation."""

    queues: range = range(1)  # NFQUEUE numbers, one worker each (--queue-balance first:last)
    fail_open: bool = False  # accept instead of drop while no worker listens (queue bypass)
    inspect_packets: int = DEFAULT_INSPECT_PACKETS  # connbytes bound, original direction
    lan_interfaces: tuple[str, ...] = ()  # interfaces facing the pupils; empty: all forwarded
    filter_local: bool = False  # also the gateway's own outgoing flows (OUTPUT)
    layout: MarkLayout = field(default_factory=MarkLayout)
    ipv6: bool = True
    # Pick the queue by the CPU handling the packet, not by the kernel's hash of addresses and
    # protocol. It helps with one worker pinned per CPU behind a NIC whose RSS keeps each flow
    # on one CPU: no cross-CPU handoff, and the load spreads even when a few address pairs
    # carry most flows. Off by default: elsewhere (veth, no RSS, a sender moving between CPUs)
    # one flow's segments reach different workers and a split ClientHello is never reassembled.
    cpu_fanout: bool = False

    def __post_init__(self) -> None:
        queues = self.queues
        if not isinstance(queues, range) or len(queues) == 0 or queues.step != 1:
            raise NetfilterError(f"queues {queues!r}: need a non-empty range with step 1")
        if queues.start < 0 or queues[-1] > MAX_QUEUE:
            raise NetfilterError(f"queues {queues!r}: queue numbers are 0-{MAX_QUEUE}")
        if self.cpu_fanout and len(queues) < 2:
            raise NetfilterError("cpu_fanout needs more than one queue")
        if not 1 <= self.inspect_packets < 2**32:
            raise NetfilterError(f"inspect_packets {self.inspect_packets}: must be at least 1")
        for name in self.lan_interfaces:
            if not _INTERFACE_NAME.fullmatch(name) or name in (".", ".."):
                raise NetfilterError(f"lan interface {name!r}: not a valid interface name")
        if len(set(self.lan_interfaces)) != len(self.lan_interfaces):
            raise NetfilterError(f"lan interfaces {self.lan_interfaces}: listed twice")

    @property
    def families(self) -> tuple[int, ...]:
        return (4, 6) if self.ipv6 else (4,)


# --- running the tools ----------------------------------------------------------------


def _run(
    argv: Sequence[str], netns: str | None, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    command = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    try:
        completed = subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NetfilterError(f"{' '.join(argv)}: {error}") from error
    if check and completed.returncode != 0:
        raise NetfilterError(
            f"{' '.join(argv)} exited {completed.returncode}: {completed.stderr.strip()}"
        )
    return completed


def _nft_json(args: Sequence[str], netns: str | None) -> list[dict[str, Any]]:
    """Objects of `nft -j <args>` ({"table": {...}}, {"chain": {...}}, ...), metainfo left out."""
    output = _run(["nft", "-j", *args], netns).stdout
    objects: list[dict[str, Any]] = json.loads(output)["nftables"] if output.strip() else []
    return [item for item in objects if "metainfo" not in item]


def _iptables_is_nft(netns: str | None) -> bool:
    """True when iptables writes nftables tables (iptables-nft), not legacy x_tables."""
    if shutil.which("nft") is None:
        return False
    return "nf_tables" in _run(["iptables", "-V"], netns).stdout


# --- rendering ------------------------------------------------------------------------


def _hex(value: int) -> str:
    return f"{value:#010x}"


def _iptables_queue(settings: RuleSettings) -> str:
    queues = settings.queues
    if len(queues) == 1:
        target = f"-j NFQUEUE --queue-num {queues.start}"
    else:
        target = f"-j NFQUEUE --queue-balance {queues.start}:{queues[-1]}"
    if settings.fail_open:
        target += " --queue-bypass"
    if settings.cpu_fanout:
        target += " --queue-cpu-fanout"
    return target


def _nft_queue(settings: RuleSettings) -> str:
    queues = settings.queues
    numbers = str(queues.start) if len(queues) == 1 else f"{queues.start}-{queues[-1]}"
    flags = [
        name for name, wanted in (("bypass", settings.fail_open), ("fanout", settings.cpu_fanout))
        if wanted
    ]
    return f"queue num {numbers}" + (f" {','.join(flags)}" if flags else "")


def _iptables_lines(settings: RuleSettings, family: int) -> list[str]:
    layout = settings.layout
    mask = _hex(layout.mask)
    queue = _iptables_queue(settings)

    def mark(code: int) -> str:
        return f"-m mark --mark {_hex(layout.value(code))}/{mask}"

    def connmark(code: int) -> str:
        return f"-m connmark --mark {_hex(layout.value(code))}/{mask}"

    def to_inspect(chain: str, interfaces: Iterable[str | None], matches: str = "",
                   target: str = f"-j {IPTABLES_INSPECT}") -> list[str]:
        return [
            f"-A {chain}{f' -i {interface}' if interface else ''} -p {protocol}{matches} "
            f"-m conntrack --ctdir ORIGINAL {target}"
            for interface in interfaces
            for protocol in ("tcp", "udp")
        ]

    # Original-direction TCP/UDP of a flow that is undecided (or a safe-search DNS flow).
    connbytes = (
        f"-m connbytes --connbytes 0:{settings.inspect_packets} "
        "--connbytes-dir original --connbytes-mode packets"
    )

    def entry_chain(chain: str, interfaces: Iterable[str | None]) -> list[str]:
        interfaces = list(interfaces)
        # The common packets first, each ending where the full list below would end it, in
        # fewer rules: the decision of an allowed flow coming back (NF_REPEAT), a new flow's
        # first packets (the worst case, a flood of them) and an allowed flow's (the bulk of
        # the traffic; the rules before it fail on their first matches).
        unmarked = f"{mark(UNDECIDED)} {connmark(UNDECIDED)}"
        # goto: when the chain ends the packet leaves ours too, as after a RETURN here
        rules = [f"-A {chain} {mark(ALLOW)} -g {IPTABLES_SAVE_ALLOW}", f"-A {chain} {mark(PASS)} -j RETURN"]
        rules += to_inspect(chain, interfaces, f" {unmarked} {connbytes}", queue)
        rules += [f"-A {chain} {mark(UNDECIDED)} {connmark(ALLOW)} -j RETURN"]
        rules += to_inspect(chain, interfaces, f" {unmarked}")
        rules += [f"-A {chain} {unmarked} -j RETURN", f"-A {chain} {mark(INJECTED)} -j RETURN"]
        rules += [
            f"-A {chain} {mark(code)} -j CONNMARK --set-xmark {_hex(layout.value(code))}/{mask}"
            for code in VERDICT_CODES
            if code != ALLOW  # saved above
        ]
        rules += [
            f"-A {chain} {connmark(ALLOW)} -j RETURN",
            f"-A {chain} -p tcp {connmark(REJECT)} -j REJECT --reject-with tcp-reset",
            f"-A {chain} {connmark(REJECT)} -j REJECT "
            f"--reject-with {IPTABLES_REJECT_ICMP[family]}",
            f"-A {chain} {connmark(DROP)} -j DROP",
            # A query a worker has just marked for safe search: on its way, never queued twice.
            f"-A {chain} {mark(SAFE_SEARCH)} -j RETURN",
            f"-A {chain} -p udp --sport {DNS_PORT} -m conntrack --ctdir REPLY "
            f"{connmark(SAFE_SEARCH)} {queue}",
        ]
        return rules + to_inspect(chain, interfaces)

    chains = [IPTABLES_FORWARD, IPTABLES_INSPECT, IPTABLES_SAVE_ALLOW]
    jumps = [f"-I FORWARD 1 -j {IPTABLES_FORWARD}"]
    rules = entry_chain(IPTABLES_FORWARD, settings.lan_interfaces or [None])
    if settings.filter_local:
        chains.insert(1, IPTABLES_OUTPUT)
        jumps.append(f"-I OUTPUT 1 -j {IPTABLES_OUTPUT}")
        rules += entry_chain(IPTABLES_OUTPUT, [None])
    rules += [
        f"-A {IPTABLES_SAVE_ALLOW} -j CONNMARK --set-xmark {_hex(layout.value(ALLOW))}/{mask}",
        f"-A {IPTABLES_INSPECT} -p udp --dport {DNS_PORT} {queue}",
        f"-A {IPTABLES_INSPECT} -m connmark ! --mark {_hex(layout.value(UNDECIDED))}/{mask} "
        "-j RETURN",
        f"-A {IPTABLES_INSPECT} {connbytes} {queue}",
        f"-A {IPTABLES_INSPECT} -j MARK --set-xmark {_hex(layout.value(BOUND))}/{mask}",
        f"-A {IPTABLES_INSPECT} {queue}",
    ]
    return ["*filter", *(f":{chain} - [0:0]" for chain in chains), *jumps, *rules, "COMMIT"]


def _iptables_script(settings: RuleSettings, family: int) -> str:
    return "\n".join(_iptables_lines(settings, family)) + "\n"


def _nft_script(settings: RuleSettings) -> str:
    layout = settings.layout
    mask = _hex(layout.mask)
    keep = _hex(~layout.mask & 0xFFFFFFFF)
    queue = _nft_queue(settings)

    def mark(code: int) -> str:
        return f"meta mark & {mask} == {_hex(layout.value(code))}"

    def connmark(code: int) -> str:
        return f"ct mark & {mask} == {_hex(layout.value(code))}"

    def entry_chain(name: str, hook: str, interfaces: Sequence[str]) -> list[str]:
        rules = [f"type filter hook {hook} priority {NFT_PRIORITY}; policy accept;"]
        if not settings.ipv6:
            rules.append("meta nfproto ipv6 return")
        rules.append(f"{mark(INJECTED)} return")
        rules += [
            f"{mark(code)} ct mark set ct mark & {keep} | {_hex(layout.value(code))}"
            for code in VERDICT_CODES
            if code != ALLOW  # saved above
        ]
        incoming = ""
        if interfaces:
            incoming = "iifname { " + ", ".join(f'"{lan}"' for lan in interfaces) + " } "
        new_flow = f"{incoming}meta l4proto {{ tcp, udp }} ct direction original"
        to_inspect = f"{new_flow} jump inspect"
        # The common packets first, each ending where the full list below would end it, in
        # fewer rules: the decision of an allowed flow coming back (NF_REPEAT), a new flow's
        # first packets (the worst case, a flood of them) and an allowed flow's (the bulk of
        # the traffic; the rules before it fail on their first matches).
        unmarked = f"{mark(UNDECIDED)} {connmark(UNDECIDED)}"
        first = 1 if settings.ipv6 else 2
        rules[first:first] = [
            f"{mark(ALLOW)} ct mark set ct mark & {keep} | {_hex(layout.value(ALLOW))} return",
            f"{mark(PASS)} return",
            f"{unmarked} {new_flow} ct original packets 0-{settings.inspect_packets} {queue}",
            f"{mark(UNDECIDED)} {connmark(ALLOW)} return",
            f"{unmarked} {to_inspect}",
            f"{unmarked} return",
        ]
        rules += [
            f"{connmark(ALLOW)} return",
            f"{connmark(REJECT)} meta l4proto tcp reject with tcp reset",
            f"{connmark(REJECT)} reject with icmpx admin-prohibited",
            f"{connmark(DROP)} drop",
            f"{mark(SAFE_SEARCH)} return",
            f"{connmark(SAFE_SEARCH)} ct direction reply udp sport {DNS_PORT} {queue}",
            to_inspect,
        ]
        return [f"\tchain {name} {{", *(f"\t\t{rule}" for rule in rules), "\t}"]

    chains = entry_chain("forward", "forward", settings.lan_interfaces)
    if settings.filter_local:
        chains += entry_chain("output", "output", ())
    chains += [
        "\tchain inspect {",
        f"\t\tudp dport {DNS_PORT} {queue}",
        f"\t\tct mark & {mask} != {_hex(layout.value(UNDECIDED))} return",
        f"\t\tct original packets 0-{settings.inspect_packets} {queue}",
        f"\t\tmeta mark set meta mark & {keep} | {_hex(layout.value(BOUND))} {queue}",
        "\t}",
    ]
    return "\n".join([f"table inet {NFT_TABLE} {{", *chains, "}"]) + "\n"


def render(settings: RuleSettings, backend: Backend) -> str:
    """The exact script install() applies: one nft transaction, or one restore per family."""
    if backend is Backend.NFT:
        return _nft_script(settings)
    return "".join(
        f"# {IPTABLES[family]}-restore --noflush\n{_iptables_script(settings, family)}"
        for family in settings.families
    )


# --- what is installed ----------------------------------------------------------------


def _nft_table_exists(netns: str | None) -> bool:
    if shutil.which("nft") is None:
        return False
    tables = _nft_json(["list", "tables"], netns)
    return any(
        t["table"]["family"] == "inet" and t["table"]["name"] == NFT_TABLE for t in tables
    )


def _iptables_filter_rules(family: int, netns: str | None) -> list[str]:
    """The filter table as `iptables-save` prints it; empty when the tool is missing."""
    if shutil.which(f"{IPTABLES[family]}-save") is None:
        return []
    return _run([f"{IPTABLES[family]}-save", "-t", "filter"], netns).stdout.splitlines()


def _our_iptables_chains(lines: Iterable[str]) -> list[str]:
    declared = {line[1:].split()[0] for line in lines if line.startswith(":")}
    return [chain for chain in IPTABLES_CHAINS if chain in declared]


def _installed_parts(netns: str | None) -> list[str]:
    parts = [f"nft table inet {NFT_TABLE}"] if _nft_table_exists(netns) else []
    for family in (4, 6):
        chains = _our_iptables_chains(_iptables_filter_rules(family, netns))
        parts += [f"{IPTABLES[family]} chain {chain}" for chain in chains]
    return parts


def _remove_iptables(family: int, netns: str | None) -> bool:
    """Delete our chains and every rule that jumps to them; False when none were there."""
    lines = _iptables_filter_rules(family, netns)
    ours = _our_iptables_chains(lines)
    if not ours:
        return False
    jumps = []
    for line in lines:
        words = line.split()
        if len(words) > 2 and words[0] == "-A" and words[1] not in ours:
            if "-j" in words and words[words.index("-j") + 1] in ours:
                jumps.append("-D" + line[2:])
    script = ["*filter", *jumps]
    script += [f"-F {chain}" for chain in ours] + [f"-X {chain}" for chain in ours]
    script.append("COMMIT")
    _run([f"{IPTABLES[family]}-restore", "--noflush"], netns, input="\n".join(script) + "\n")
    return True


def _remove_nft_table(netns: str | None) -> bool:
    if not _nft_table_exists(netns):
        return False
    _run(["nft", "delete", "table", "inet", NFT_TABLE], netns)
    return True


# The filter tables and base chains iptables-nft makes on demand: (nft family, chain or None
# for the table itself). install() notes which of them it made, remove() deletes those again
# when nobody else has put anything in them, so the ruleset ends exactly as it started.
_BaseObject = tuple[str, str | None]


def _iptables_base_objects(netns: str | None) -> set[_BaseObject]:
    present: set[_BaseObject] = set()
    for item in _nft_json(["list", "chains"], netns):
        chain = item.get("chain")
        if chain and chain["table"] == "filter" and chain["family"] in IPTABLES_NFT_FAMILIES:
            if chain["name"] in ("FORWARD", "OUTPUT"):
                present.add((chain["family"], chain["name"]))
    for item in _nft_json(["list", "tables"], netns):
        table = item["table"]
        if table["name"] == "filter" and table["family"] in IPTABLES_NFT_FAMILIES:
            present.add((table["family"], None))
    return present


def _delete_if_unused(created: Iterable[_BaseObject], netns: str | None) -> None:
    # Chains before their tables; a chain only when empty and still accepting, a table only
    # when it holds nothing at all (deleting a table would take its contents with it).
    for family, chain in sorted(created, key=lambda item: item[1] is None):
        if chain is not None:
            listing = _nft_json(["list", "chain", family, "filter", chain], netns)
            rules = [item for item in listing if "rule" in item]
            (definition,) = [item["chain"] for item in listing if "chain" in item]
            if not rules and definition.get("policy", "accept") == "accept":
                _run(["nft", "delete", "chain", family, "filter", chain], netns)
        elif len(_nft_json(["list", "table", family, "filter"], netns)) == 1:
            _run(["nft", "delete", "table", family, "filter"], netns)


# --- install and remove ---------------------------------------------------------------


@dataclass
class InstalledRules:
    """Rules install() put in place; remove() takes exactly those away again."""

    backend: Backend
    settings: RuleSettings
    netns: str | None = None
    created_base: frozenset[_BaseObject] = frozenset()
    removed: bool = False

    def queued_packets(self) -> int | None:
        """Packets our rules have handed to NFQUEUE since install (both families), from the
        rules' own counters; None with the nft backend, whose queue rules keep no counter.

        The kernel counts no fail-open accept anywhere else: this minus the packets the queues
        really took (their id sequences) and dropped is what passed uninspected."""
        if self.backend is Backend.NFT:
            return None
        total = 0
        for family in self.settings.families:
            save = _run([f"{IPTABLES[family]}-save", "-c", "-t", "filter"], self.netns).stdout
            for line in save.splitlines():
                if line.startswith("[") and " -j NFQUEUE" in line and " EDUFILTER-" in line:
                    total += int(line[1:line.index(":")])
        return total

    def remove(self) -> None:
        """Remove our table or chains and jumps; a second call does nothing."""
        if self.removed:
            return
        if self.backend is Backend.NFT:
            _remove_nft_table(self.netns)
        else:
            for family in self.settings.families:
                _remove_iptables(family, self.netns)
            if self.created_base:
                _delete_if_unused(self.created_base, self.netns)
        self.removed = True


def detect_backend(netns: str | None = None) -> Backend:
    """NFT when the kernel takes a queue rule (tried by `nft -c`, nothing stays), else IPTABLES."""
    if shutil.which("nft") is not None:
        probe = (
            f"table inet {NFT_PROBE_TABLE} {{\n\tchain probe {{\n"
            "\t\ttype filter hook forward priority filter; policy accept;\n"
            "\t\tqueue num 0 bypass\n\t}\n}\n"
        )
        checked = _run(["nft", "-c", "-f", "-"], netns, input=probe, check=False)
        if checked.returncode == 0:
            return Backend.NFT
        # The kernel knows no "queue" expression (nft_queue not built): ENOENT on that rule.
        if "No such file or directory" not in checked.stderr:
            raise NetfilterError(f"nft -c (queue probe): {checked.stderr.strip()}")
    if shutil.which("iptables-restore") is None:
        raise NetfilterError("no backend: nft has no queue expression and iptables is missing")
    return Backend.IPTABLES


def install(
    settings: RuleSettings, backend: Backend | None = None, netns: str | None = None
) -> InstalledRules:
    """Install the rules atomically: all of them or, on any error, none (NetfilterError)."""
    backend = backend or detect_backend(netns)
    present = _installed_parts(netns)
    if present:
        raise NetfilterError(
            f"edufilter rules are already installed ({', '.join(present)}): "
            "another daemon runs here, or remove_stale() after a crash"
        )
    if backend is Backend.NFT:
        _run(["nft", "-f", "-"], netns, input=_nft_script(settings))
        return InstalledRules(backend, settings, netns)
    tracks_base = _iptables_is_nft(netns)
    base_before = _iptables_base_objects(netns) if tracks_base else set()
    installed = InstalledRules(backend, settings, netns)
    try:
        for family in settings.families:
            _run(
                [f"{IPTABLES[family]}-restore", "--noflush"],
                netns,
                input=_iptables_script(settings, family),
            )
            if tracks_base:
                installed.created_base = frozenset(_iptables_base_objects(netns) - base_before)
    except NetfilterError:
        # One family's restore failed after another's succeeded: take the first back out.
        installed.remove()
        raise
    return installed


def remove_stale(netns: str | None = None) -> bool:
    """Remove edufilter's table and chains a crashed run left behind; True if there were any."""
    removed = _remove_nft_table(netns)
    for family in (4, 6):
        removed = _remove_iptables(family, netns) or removed
    return removed
