"""`make demo`: a school in network namespaces, filtered live by `edufilter run` with the bundled
default policy, and pupils whose requests are allowed and blocked while you watch.

Four pupils (primary, secondary, staff, guest Wi-Fi, on the bundled policy's networks) reach
an upstream "internet" (dnsmasq answering every name, nginx, openssl s_server, an HTTP/3
server) only through the gateway. The category lists are the real UT1 snapshot from
../shared/blocklists when it is there. Nothing leaves the namespaces; everything is removed
at the end.
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from edufilter_lab.netns import Lab, LabError, cleanup_stale, namespaces_available
from edufilter_lab.school import (
    EDUFILTER,
    UPSTREAM_V4,
    UPSTREAM_V6,
    FilteredSchool,
    start_filtered_school,
)
from edufilter_lab.traffic import quic_client
from edufilter.policy.defaults import default_policy_dir

SHARED_UT1 = Path(__file__).resolve().parents[3].parent / "shared" / "blocklists" / "ut1"
# Pupils on the bundled policy's networks (policies/*.toml): subnet index, IPv6 /64.
PUPILS = {
    "primary": (16, "2001:2:0:16::/64"),
    "secondary": (24, "2001:2:0:24::/64"),
    "staff": (32, "2001:2:0:32::/64"),
    "guest": (40, "2001:2:0:40::/64"),
}
# When the UT1 snapshot is absent: a few names per category, enough to show each rule.
SAMPLE_LISTS = {
    "social_networks": ["facebook.com", "tiktok.com", "instagram.com"],
    "games": ["roblox.com"],
    "gambling": ["bet365.com"],
    "ai": ["chatgpt.com"],
    "vpn": ["nordvpn.com"],
    "doh": ["dns.google", "cloudflare-dns.com"],
}


@dataclass(frozen=True)
class Request:
    pupil: str
    kind: str  # https | http | dns | quic
    name: str
    family: int = 4


SCENARIO = (
    Request("primary", "https", "www.smartschool.be"),
    Request("primary", "https", "www.facebook.com"),
    Request("primary", "http", "www.roblox.com"),
    Request("primary", "dns", "bet365.com"),
    Request("primary", "dns", "www.google.com"),
    Request("primary", "https", "chatgpt.com", 6),
    Request("primary", "quic", "www.tiktok.com"),
    Request("primary", "dns", "use-application-dns.net"),
    Request("secondary", "https", "www.wikipedia.org"),
    Request("secondary", "https", "www.instagram.com"),
    Request("secondary", "https", "nordvpn.com"),
    Request("staff", "https", "www.facebook.com"),
    Request("staff", "dns", "www.google.com"),
    Request("guest", "https", "www.bet365.com"),
    Request("guest", "http", "www.example.org"),
)


def run_request(school: FilteredSchool, request: Request) -> str:
    """Do the request with a real client; say what the pupil saw."""
    host = school.pupils[request.pupil].host
    address = str(UPSTREAM_V4 if request.family == 4 else UPSTREAM_V6)
    bracketed = f"[{address}]" if request.family == 6 else address
    if request.kind == "dns":
        output = host.run(["dig", f"@{address}", request.name, "+tries=1", "+time=2", "+noall", "+answer",
                           "+comments"], check=False, timeout=8).stdout
        status = next((line.split("status:")[1].split(",")[0].strip() for line in output.splitlines()
                       if "status:" in line), "no answer")
        records = [" ".join(line.split()[3:]) for line in output.splitlines() if line and not line.startswith(";")]
        return f"DNS {status}" + (f": {', '.join(records)}" if records else "")
    if request.kind == "quic":
        try:
            return f"HTTP/3 {quic_client(host, ipaddress.ip_address(address), 443, request.name)}"
        except LabError:
            return "QUIC handshake failed (blocked)"
    port = 443 if request.kind == "https" else 80
    completed = host.run(
        ["curl", "-k", "-sS", "--max-time", "4", "-H", "Accept-Language: nl-BE,nl;q=0.9", "--resolve",
         f"{request.name}:{port}:{bracketed}", "-w", "\n%{http_code}", f"{request.kind}://{request.name}/"],
        check=False, timeout=8)
    if completed.returncode != 0:
        return "connection reset" if "reset" in completed.stderr.lower() else completed.stderr.strip()[:44]
    body, _, code = completed.stdout.rpartition("\n")
    if code == "403" and "geblokkeerd" in body.lower():
        return "403 block page (in Dutch)"
    return f"HTTP {code}"


def explain(school: FilteredSchool, request: Request) -> str:
    from edufilter.enforce.dns import bypass_answer, safe_search_target
    from edufilter.policy.check import open_current
    from edufilter.policy.model import ClientIdentity

    group = school.pupils[request.pupil]
    if request.kind == "dns" and bypass_answer(request.name):
        return "bypass shield: tells Firefox/iCloud to step aside (if on)"
    if request.kind == "dns" and safe_search_target(request.name):
        return "safe search: DNS rewritten (if on for the group)"

    address = group.address if request.family == 4 else group.address6
    explanation = open_current(school.state_dir).explain(request.name, ClientIdentity(str(address)),
                                                         datetime.now(timezone.utc))
    if explanation.decided_by == "group default":
        return f"{explanation.action}: default of group {explanation.group}"
    rule = explanation.rule or {}
    schedule = f" during {rule['schedule']}" if rule.get("schedule") else ""
    return f"{explanation.action}: {explanation.decided_by} {explanation.list}{schedule}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edufilter_lab.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="keep the lab's files (state, logs) in this folder")
    parser.add_argument("--rounds", type=int, default=1, help="play the scenario this many times")
    args = parser.parse_args(argv)
    reason = namespaces_available()
    if reason is not None:
        print(f"the demo needs network namespaces: {reason}", file=sys.stderr)
        return 2
    cleanup_stale()
    workdir = Path(tempfile.mkdtemp(prefix="edufilter-demo-")) if args.keep is None else args.keep
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with Lab() as lab:
            return play(lab, workdir, args.rounds)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def play(lab: Lab, workdir: Path, rounds: int) -> int:
    print("edufilter demo: a school in network namespaces, filtered live by `edufilter run`\n")
    school = start_filtered_school(lab, workdir)
    for name, (subnet, prefix) in PUPILS.items():
        school.add_pupil(name, subnet, prefix)
    # The bundled policy's block-page addresses live on the gateway.
    school.gateway.run(["ip", "address", "add", "198.18.0.1/32", "dev", "lo"])
    school.gateway.run(["ip", "-6", "address", "add", "2001:2::1/128", "dev", "lo", "nodad"])
    ut1 = SHARED_UT1 if SHARED_UT1.is_dir() else None
    lan = ", ".join(f'"{school.gateway_interface(name)}"' for name in PUPILS)
    started = time.monotonic()
    school.start_daemon(default_policy_dir(), f"[network]\nlan_interfaces = [{lan}]\n", ut1=ut1,
                        lists=None if ut1 else SAMPLE_LISTS)
    lists = f"the UT1 snapshot in {ut1}" if ut1 else "a small sample (the UT1 snapshot in ../shared is absent)"
    print(f"gateway: `edufilter run` with the bundled default policy and {lists}, "
          f"ready in {time.monotonic() - started:.1f} s")
    print(f"school time: {datetime.now(ZoneInfo('Europe/Brussels')):%A %H:%M} (lesson-time rules follow the clock)")
    for name, pupil in school.pupils.items():
        print(f"  {name:<9} pupil at {pupil.address} / {pupil.address6}")
    print()
    header = f"{'PUPIL':<10} {'REQUEST':<38} {'WHAT THE PUPIL GOT':<46} WHY"
    for round_number in range(rounds):
        print(header)
        for request in SCENARIO:
            target = f"{request.kind}://{request.name}" + (" (IPv6)" if request.family == 6 else "")
            print(f"{request.pupil:<10} {target:<38} {run_request(school, request):<46} {explain(school, request)}",
                  flush=True)
        print()
    time.sleep(1.5)  # the workers report events and counters once a second
    events = school.events()[-8:]
    print("the last block events (client pseudonymised with a key that changes daily):")
    for event in events:
        print(f"  {event['time'][11:19]}  {event['group']:<9} {event['client']:<15} {event['action']:<8} "
              f"{event['kind']:<9} {event['name'] or event['destination']}  [{event['category']}] ref {event['reference']}")
    print()
    print(school.gateway.run([*EDUFILTER, "status", "--config", str(school.config_path)], check=False).stdout)
    code = school.stop_daemon()
    leftover = "EDUFILTER" in school.ruleset()
    print(f"`edufilter run` stopped (exit {code}); its netfilter rules are {'STILL THERE' if leftover else 'gone'}.")
    return 0 if code == 0 and not leftover else 1


if __name__ == "__main__":
    sys.exit(main())
