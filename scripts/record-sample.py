#!/usr/bin/env python3
"""Record a pupil's morning across the namespace lab into src/edufilter/data/sample-school.pcapng.

DNS lookups, HTTPS with curl and Chromium (one ClientHello as a GSO packet, one in two TCP
segments), plain HTTP, QUIC from aioquic and Chromium, and IPv6 — all captured on the
server's side of the gateway. Needs root (network namespaces); run from the repository.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from edufilter_lab.netns import Lab, namespaces_available  # noqa: E402
from edufilter_lab.traffic import (  # noqa: E402
    SchoolNetwork,
    chromium,
    curl_http,
    curl_https,
    dig,
    kdig,
    quic_client,
    start_school_network,
)
from edufilter_lab.tshark import observe  # noqa: E402

DEFAULT_OUTPUT = ROOT / "src" / "edufilter" / "data" / "sample-school.pcapng"
SIZE_LIMIT = 300 * 1024


def pupils_morning(network: SchoolNetwork) -> None:
    client = network.client
    resolver = network.server_address(4)
    resolver6 = network.server_address(6)

    def lookup(name: str) -> None:
        dig(client, resolver, name)

    # Logging in to the school portal.
    lookup("www.school.test")
    curl_https(client, "www.school.test", 443, resolver)
    # The timetable over IPv6.
    kdig(client, resolver6, "timetable.school.test", "AAAA")
    curl_https(client, "timetable.school.test", 443, resolver6)
    # Research in the browser: one ClientHello leaves as a single GSO packet...
    lookup("Www.Wikipedia.ORG")
    chromium(client, "https://www.wikipedia.org/", resolver, network.new_profile_dir())
    # ...and one, with segmentation offloads off, as two TCP segments.
    dig(client, resolver, "docs.example.org", tcp=True)
    with network.client_offloads_off():
        chromium(client, "https://docs.example.org/", resolver, network.new_profile_dir())
    # The class intranet over plain HTTP, then the library over HTTP and IPv6.
    lookup("intranet.school.test")
    curl_http(client, f"http://{resolver}/", host_header="intranet.school.test")
    curl_http(client, f"http://[{resolver6}]:8080/", host_header="Library.School.Test")
    # A lesson video over QUIC, from Chromium and from a QUIC v1 client.
    lookup("video.school.test")
    chromium(
        client, "https://video.school.test/", resolver, network.new_profile_dir(),
        quic=True, certificate=network.certificate,
    )  # fmt: skip
    quic_client(client, resolver, 443, "video.school.test", version=1)


def record(output: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="edufilter-sample-") as work:
        workdir = Path(work)
        raw = workdir / "morning.pcap"
        with Lab() as lab:
            network = start_school_network(lab, workdir)
            with network.capture(raw):
                pupils_morning(network)
        output.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "editcap", "-F", "pcapng", "--capture-comment",
                "edufilter lab: a pupil's morning (scripts/record-sample.py)",
                str(raw), str(output),
            ],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args()
    reason = namespaces_available()
    if reason is not None:
        print(f"record-sample: {reason}", file=sys.stderr)
        return 1
    started = time.monotonic()
    record(arguments.output)
    size = os.path.getsize(arguments.output)
    kinds: dict[str, int] = {}
    for observation in observe(arguments.output):
        kinds[observation.kind] = kinds.get(observation.kind, 0) + 1
    print(
        f"{arguments.output}: {size} bytes in {time.monotonic() - started:.1f} s; "
        f"tshark sees {dict(sorted(kinds.items()))}"
    )
    if size > SIZE_LIMIT:
        print(f"record-sample: larger than {SIZE_LIMIT} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
