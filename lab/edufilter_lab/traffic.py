"""Real servers and clients across a lab, and tcpdump captures of what they send.

Servers: dnsmasq (DNS over UDP and TCP), openssl s_server (TLS), nginx (HTTP), aioquic
(QUIC v1/v2 with HTTP/3). Clients: dig, kdig, openssl s_client, curl, an aioquic client and
headless Chromium. None of these clients can send Encrypted Client Hello (ECH) with a real
config here: openssl 3.0, curl and aioquic have no ECH, and Chromium only sends ECH GREASE
(extension 0xfe0d with random contents) when DNS gives it no ECH config.

The QUIC server and client are this module run as a script (`python -m edufilter_lab.traffic`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ipaddress
import os
import select
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import edufilter
from edufilter_lab.netns import (
    Host,
    IPAddress,
    Lab,
    LabError,
    Link,
    ThreeHostTopology,
    client_gateway_server,
)

SCHOOL_DOMAIN = "school.test"
# Real-looking domains the lab's resolver answers for, besides the school's own.
LAB_DOMAINS = (SCHOOL_DOMAIN, "wikipedia.org", "example.org")
TLS_PORTS = (443, 8443)
HTTP_PORTS = (80, 8080)
QUIC_PORTS = (443, 8443)
# Below curl's ~520-byte ClientHello record twice over, so the handshake spans three segments.
SMALL_MTU = 296
CLIENT_TIMEOUT = 10.0
CHROMIUM_TIMEOUT = 20.0


def _bracketed(address: IPAddress) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def wait_for_listener(host: Host, protocol: str, port: int, timeout: float = 5.0) -> None:
    """Wait until something in host listens on port (protocol "tcp" or "udp")."""
    flag = "-ltnH" if protocol == "tcp" else "-lunH"
    deadline = time.monotonic() + timeout
    while True:
        listening = host.run(["ss", flag, f"sport = :{port}"]).stdout.strip()
        if listening:
            return
        if time.monotonic() > deadline:
            raise LabError(f"{host.name}: nothing listens on {protocol}/{port} after {timeout} s")
        time.sleep(0.05)


# --- capture ------------------------------------------------------------------------------


@contextlib.contextmanager
def capture(host: Host, ifname: str, path: Path, timeout: float = 5.0) -> Iterator[Path]:
    """Record everything on host's ifname into path (pcap) while the block runs."""
    tcpdump = host.popen(
        # -Z root: tcpdump would otherwise drop to user tcpdump and fail to write into the
        # caller's private temporary directory.
        ["tcpdump", "-n", "-i", ifname, "-U", "--immediate-mode", "-Z", "root", "-w", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert tcpdump.stderr is not None
    deadline = time.monotonic() + timeout
    banner = b""
    while b"listening on" not in banner:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([tcpdump.stderr], [], [], max(remaining, 0))
        chunk = os.read(tcpdump.stderr.fileno(), 4096) if ready else b""
        if not chunk:
            tcpdump.kill()
            tcpdump.wait()
            raise LabError(f"tcpdump on {host.name}/{ifname} did not start: {banner!r}")
        banner += chunk
    try:
        yield path
    finally:
        # Packets cross veth pairs synchronously; a short pause lets the last ones be written.
        time.sleep(0.1)
        tcpdump.send_signal(signal.SIGINT)
        try:
            tcpdump.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            tcpdump.kill()
            tcpdump.communicate()


# --- servers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    spki_sha256: str  # base64, for Chromium's --ignore-certificate-errors-spki-list


def make_self_signed_certificate(directory: Path, names: Sequence[str]) -> Certificate:
    """A throwaway P-256 certificate valid for names (wildcards allowed)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    san = ",".join(f"DNS:{name}" for name in names)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "7", "-subj", f"/CN={names[0]}", "-addext",
            f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True, timeout=CLIENT_TIMEOUT,
    )  # fmt: skip
    public_key = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
        check=True, capture_output=True, timeout=CLIENT_TIMEOUT,
    ).stdout  # fmt: skip
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"],
        input=public_key, check=True, capture_output=True, timeout=CLIENT_TIMEOUT,
    ).stdout  # fmt: skip
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"],
        input=der, check=True, capture_output=True, timeout=CLIENT_TIMEOUT,
    ).stdout  # fmt: skip
    return Certificate(cert, key, base64.b64encode(digest).decode())


def start_dnsmasq(
    host: Host,
    listen: Sequence[IPAddress],
    answers: Mapping[str, Sequence[IPAddress]],
    workdir: Path,
) -> subprocess.Popen[Any]:
    """An authoritative-style resolver on port 53 (UDP and TCP) answering only for answers.

    answers maps a domain to addresses returned for it and every name below it.
    """
    argv = [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--bind-interfaces", "--port=53", f"--pid-file={workdir / 'dnsmasq.pid'}",
        "--log-facility=-",
    ]  # fmt: skip
    argv += [f"--listen-address={address}" for address in listen]
    argv += [
        f"--address=/{domain}/{address}"
        for domain, addresses in answers.items()
        for address in addresses
    ]
    with open(workdir / "dnsmasq.log", "w") as log:
        process = host.popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    wait_for_listener(host, "udp", 53)
    wait_for_listener(host, "tcp", 53)
    return process


def start_tls_server(host: Host, port: int, certificate: Certificate) -> subprocess.Popen[Any]:
    """openssl s_server answering `GET /` with its status page, on all v4 and v6 addresses."""
    process = host.popen(
        [
            "openssl", "s_server", "-accept", str(port), "-cert", str(certificate.cert),
            "-key", str(certificate.key), "-www", "-quiet",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_listener(host, "tcp", port)
    return process


NGINX_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log {workdir}/nginx-access.log;
    client_body_temp_path {workdir}/client-body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
{listen}
        location / {{
            default_type text/html;
            return 200 "<html><body>edufilter lab: $host</body></html>\\n";
        }}
    }}
}}
"""


def start_nginx(host: Host, ports: Sequence[int], workdir: Path) -> subprocess.Popen[Any]:
    """nginx serving a one-line page on ports, IPv4 and IPv6; everything lives in workdir."""
    listen = "\n".join(
        f"        listen {port};\n        listen [::]:{port};" for port in ports
    )
    config = workdir / "nginx.conf"
    config.write_text(NGINX_CONFIG.format(workdir=workdir, listen=listen))
    process = host.popen(
        ["nginx", "-p", str(workdir), "-c", str(config), "-e", str(workdir / "nginx-error.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for port in ports:
        wait_for_listener(host, "tcp", port)
    return process


def script_environment() -> dict[str, str]:
    """Environment under which `python -m edufilter...` run in a lab host finds this package."""
    source_root = str(Path(edufilter.__file__).resolve().parent.parent)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [source_root, environment.get("PYTHONPATH")])
    )
    return environment


def start_quic_server(
    host: Host, ports: Sequence[int], certificate: Certificate, workdir: Path, retry: bool = False
) -> subprocess.Popen[Any]:
    """An aioquic HTTP/3 server (QUIC v1 and v2) on [::] for each port; with retry, every new
    connection is first sent a Retry (RFC 9000 8.1.2)."""
    argv = [sys.executable, "-m", "edufilter_lab.traffic", "quic-server"]
    argv += ["--cert", str(certificate.cert), "--key", str(certificate.key)]
    argv += [f"--port={port}" for port in ports]
    argv += ["--retry"] if retry else []
    with open(workdir / f"quic-server{'-retry' if retry else ''}.log", "w") as log:
        process = host.popen(
            argv, env=script_environment(), stdout=subprocess.DEVNULL, stderr=log
        )
    for port in ports:
        wait_for_listener(host, "udp", port, timeout=15.0)
    return process


# --- clients ------------------------------------------------------------------------------


def dig(
    host: Host, server: IPAddress, name: str, qtype: str = "A", tcp: bool = False
) -> list[str]:
    """Ask server for name with dig (UDP, or TCP); return the answer records' data."""
    argv = ["dig", f"@{server}", name, qtype, "+short", "+tries=1", "+time=3"]
    if tcp:
        argv.append("+tcp")
    return host.run(argv, timeout=CLIENT_TIMEOUT).stdout.split()


def kdig(
    host: Host, server: IPAddress, name: str, qtype: str = "A", tcp: bool = False
) -> list[str]:
    """Ask server for name with Knot's kdig; return the answer records' data."""
    argv = ["kdig", f"@{server}", name, qtype, "+short", "+retry=0", "+timeout=3"]
    if tcp:
        argv.append("+tcp")
    return host.run(argv, timeout=CLIENT_TIMEOUT).stdout.split()


def openssl_s_client(host: Host, address: IPAddress, port: int, server_name: str) -> str:
    """A TLS handshake with openssl s_client sending server_name; returns the protocol."""
    completed = host.run(
        [
            "openssl", "s_client", "-connect", f"{_bracketed(address)}:{port}",
            "-servername", server_name, "-brief",
        ],
        timeout=CLIENT_TIMEOUT,
    )  # fmt: skip
    for line in completed.stderr.splitlines():
        if line.startswith("Protocol version:"):
            return line.split(":", 1)[1].strip()
    raise LabError(f"s_client to {server_name} did not finish a handshake: {completed.stderr}")


def curl_https(host: Host, name: str, port: int, address: IPAddress) -> str:
    """GET https://name:port/ with curl, name resolved to address; returns the status code."""
    return host.run(
        [
            "curl", "-k", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
            "--resolve", f"{name}:{port}:{_bracketed(address)}", f"https://{name}:{port}/",
        ],
        timeout=CLIENT_TIMEOUT,
    ).stdout  # fmt: skip


def curl_http(
    host: Host, url: str, host_header: str | None = None, resolve: str | None = None
) -> str:
    """GET url with curl, optionally with an explicit Host header or --resolve NAME:PORT:IP."""
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"]
    if host_header is not None:
        argv += ["-H", f"Host: {host_header}"]
    if resolve is not None:
        argv += ["--resolve", resolve]
    return host.run([*argv, url], timeout=CLIENT_TIMEOUT).stdout


def quic_client(
    host: Host, address: IPAddress, port: int, server_name: str, version: int = 1,
    large_hello: bool = False, lose_second_initial: bool = False,
) -> str:
    """An aioquic handshake plus one HTTP/3 GET; returns the response status. large_hello: a
    ClientHello over two Initial datagrams; lose_second_initial: the second is not sent, so
    the client sends its rest again once the server answered, to the server's connection ID
    (the client fails unless it did)."""
    argv = [sys.executable, "-m", "edufilter_lab.traffic", "quic-client"]
    argv += [f"--address={address}", f"--port={port}", f"--server-name={server_name}"]
    argv += [f"--version={version}"]
    argv += ["--large-hello"] if large_hello or lose_second_initial else []
    argv += ["--lose-second-initial"] if lose_second_initial else []
    completed = subprocess.run(
        host.command(argv),
        env=script_environment(),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if completed.returncode != 0:
        raise LabError(f"aioquic client to {server_name}: {completed.stderr.strip()[-2000:]}")
    return completed.stdout.strip()


def chromium(
    host: Host,
    url: str,
    address: IPAddress,
    profile_dir: Path,
    quic: bool = False,
    certificate: Certificate | None = None,
) -> str:
    """Load url in headless Chromium with its host mapped to address; returns the DOM.

    Only url's host is mapped; every other name fails to resolve, so Chromium's own
    background connections cannot reach anything. Chromium is always killed at the end.
    """
    url_host = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
    argv = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--disable-breakpad", "--no-default-browser-check",
        f"--user-data-dir={profile_dir}",
        f"--host-resolver-rules=MAP {url_host} {_bracketed(address)}, MAP * ~NOTFOUND",
        "--ignore-certificate-errors",
    ]  # fmt: skip
    if certificate is not None:
        argv.append(f"--ignore-certificate-errors-spki-list={certificate.spki_sha256}")
    if quic:
        argv += ["--enable-quic", f"--origin-to-force-quic-on={url_host}:443"]
    argv += ["--dump-dom", url]
    process = host.popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        dom: str
        errors: str
        dom, errors = process.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired as error:
        raise LabError(f"chromium did not load {url} within {CHROMIUM_TIMEOUT} s") from error
    finally:
        # Renderer and utility processes share Chromium's session; none may outlive the run.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.wait(timeout=5)
    if process.returncode != 0 or "<html" not in dom:
        raise LabError(f"chromium failed on {url} ({process.returncode}): {errors[-2000:]}")
    return dom


# --- a school network ---------------------------------------------------------------------


@dataclass(frozen=True)
class SchoolNetwork:
    """client — gateway — server with servers running, plus a small-MTU client—server link.

    Every name under LAB_DOMAINS resolves to the server's address on the gateway link.
    """

    lab: Lab
    topology: ThreeHostTopology
    small_mtu_link: Link
    certificate: Certificate
    workdir: Path

    @property
    def client(self) -> Host:
        return self.topology.client

    @property
    def server(self) -> Host:
        return self.topology.server

    def server_address(self, family: int = 4) -> IPAddress:
        return self.topology.server_link.end(self.server).address(family)

    @property
    def server_ifname(self) -> str:
        """The server's interface toward the gateway, where captures are taken."""
        return self.topology.server_link.end(self.server).ifname

    @property
    def client_ifname(self) -> str:
        return self.topology.client_link.end(self.client).ifname

    def capture(
        self, path: Path, small_mtu: bool = False
    ) -> contextlib.AbstractContextManager[Path]:
        """Capture on the server's side of the gateway link, or of the small-MTU link."""
        if small_mtu:
            return capture(self.server, self.small_mtu_link.end(self.server).ifname, path)
        return capture(self.server, self.server_ifname, path)

    def new_profile_dir(self) -> Path:
        """A fresh Chromium user-data directory."""
        return Path(tempfile.mkdtemp(prefix="chromium-", dir=self.workdir))

    @contextlib.contextmanager
    def client_offloads_off(self) -> Iterator[None]:
        """TSO/GSO off on the client's veth while the block runs, so TCP segments for real."""
        self.lab.set_offloads(self.client, self.client_ifname, tso=False, gso=False, gro=False)
        try:
            yield
        finally:
            self.lab.set_offloads(self.client, self.client_ifname, tso=True, gso=True, gro=False)


def start_school_network(lab: Lab, workdir: Path) -> SchoolNetwork:
    """Build the topology in lab and start dnsmasq, s_server, nginx and aioquic on the server."""
    topology = client_gateway_server(lab)
    small_mtu_link = lab.link(topology.client, topology.server, subnet_index=2, mtu=SMALL_MTU)
    # Without TSO/GSO on the sender, a large write really leaves as MTU-sized segments.
    lab.set_offloads(topology.client, small_mtu_link.end(topology.client).ifname)
    lab.wait_until_up()
    server = topology.server
    server_v4 = topology.server_link.end(server).address(4)
    server_v6 = topology.server_link.end(server).address(6)
    names = [name for domain in LAB_DOMAINS for name in (domain, f"*.{domain}")]
    certificate = make_self_signed_certificate(workdir, names)
    start_dnsmasq(
        server,
        listen=[server_v4, server_v6],
        answers={domain: [server_v4, server_v6] for domain in LAB_DOMAINS},
        workdir=workdir,
    )
    for port in TLS_PORTS:
        start_tls_server(server, port, certificate)
    nginx_dir = workdir / "nginx"
    nginx_dir.mkdir()
    start_nginx(server, HTTP_PORTS, nginx_dir)
    start_quic_server(server, QUIC_PORTS, certificate, workdir)
    return SchoolNetwork(lab, topology, small_mtu_link, certificate, workdir)


def chromium_available() -> bool:
    return shutil.which("chromium") is not None


# --- capture scenarios --------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """Clients run while the server side of a link is captured, and the names they send."""

    name: str
    run: Callable[[SchoolNetwork], None]
    expected: frozenset[tuple[str, str]]  # (kind, name) as `edufilter inspect` reports them
    small_mtu: bool = False
    needs_chromium: bool = False
    ech_grease: bool = False  # Chromium offers ECH GREASE in every ClientHello


@dataclass(frozen=True)
class Recording:
    scenario: Scenario
    capture: Path
    seconds: float
    error: str | None = None  # why the scenario failed; the capture may then be partial


def _dns_udp(network: SchoolNetwork) -> None:
    server = network.server_address(4)
    dig(network.client, server, "www.school.test")
    dig(network.client, server, "Docs.Example.ORG")


def _dns_tcp(network: SchoolNetwork) -> None:
    dig(network.client, network.server_address(4), "www.wikipedia.org", tcp=True)


def _dns_kdig(network: SchoolNetwork) -> None:
    server = network.server_address(4)
    kdig(network.client, server, "library.school.test")
    kdig(network.client, server, "Maths.School.Test", tcp=True)


def _dns_ipv6(network: SchoolNetwork) -> None:
    server = network.server_address(6)
    dig(network.client, server, "v6.school.test", "AAAA")
    kdig(network.client, server, "docs.example.org", "AAAA", tcp=True)


def _tls_s_client(network: SchoolNetwork) -> None:
    server = network.server_address(4)
    openssl_s_client(network.client, server, 443, "Www.Wikipedia.ORG")
    openssl_s_client(network.client, server, 8443, "docs.example.org")


def _tls_curl(network: SchoolNetwork) -> None:
    server = network.server_address(4)
    curl_https(network.client, "maths.school.test", 443, server)
    curl_https(network.client, "homework.school.test", 8443, server)


def _tls_ipv6(network: SchoolNetwork) -> None:
    server = network.server_address(6)
    openssl_s_client(network.client, server, 443, "v6.school.test")
    curl_https(network.client, "www.wikipedia.org", 8443, server)


def _tls_small_mtu(network: SchoolNetwork) -> None:
    server = network.small_mtu_link.end(network.server).address(4)
    curl_https(network.client, "small-mtu.school.test", 443, server)


def _http(network: SchoolNetwork) -> None:
    server = network.server_address(4)
    curl_http(network.client, f"http://{server}/", host_header="Intranet.School.TEST")
    curl_http(
        network.client,
        "http://Docs.Example.ORG:8080/",
        resolve=f"Docs.Example.ORG:8080:{server}",
    )


def _http_ipv6(network: SchoolNetwork) -> None:
    server = network.server_address(6)
    curl_http(network.client, f"http://[{server}]:8080/", host_header="v6.school.test")
    curl_http(network.client, "http://www.school.test/", resolve=f"www.school.test:80:[{server}]")


def _quic_v1(network: SchoolNetwork) -> None:
    quic_client(network.client, network.server_address(4), 443, "quic.school.test", version=1)


def _quic_v2_ipv6(network: SchoolNetwork) -> None:
    quic_client(network.client, network.server_address(6), 8443, "Quic2.School.test", version=2)


def _chromium_tls(network: SchoolNetwork) -> None:
    chromium(
        network.client, "https://www.school.test/", network.server_address(4),
        network.new_profile_dir(),
    )  # fmt: skip


def _chromium_tls_tso_off(network: SchoolNetwork) -> None:
    with network.client_offloads_off():
        chromium(
            network.client, "https://pupils.school.test/", network.server_address(4),
            network.new_profile_dir(),
        )  # fmt: skip


def _chromium_quic(network: SchoolNetwork) -> None:
    chromium(
        network.client, "https://video.school.test/", network.server_address(4),
        network.new_profile_dir(), quic=True, certificate=network.certificate,
    )  # fmt: skip


def _names(kind: str, *names: str) -> frozenset[tuple[str, str]]:
    return frozenset((kind, name) for name in names)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("dns-udp", _dns_udp, _names("dns", "www.school.test", "docs.example.org")),
    Scenario("dns-tcp", _dns_tcp, _names("dns", "www.wikipedia.org")),
    Scenario("dns-kdig", _dns_kdig, _names("dns", "library.school.test", "maths.school.test")),
    Scenario("dns-ipv6", _dns_ipv6, _names("dns", "v6.school.test", "docs.example.org")),
    Scenario("tls-s-client", _tls_s_client, _names("sni", "www.wikipedia.org", "docs.example.org")),
    Scenario("tls-curl", _tls_curl, _names("sni", "maths.school.test", "homework.school.test")),
    Scenario("tls-ipv6", _tls_ipv6, _names("sni", "v6.school.test", "www.wikipedia.org")),
    Scenario(
        "tls-small-mtu", _tls_small_mtu, _names("sni", "small-mtu.school.test"), small_mtu=True
    ),
    Scenario("http", _http, _names("http_host", "intranet.school.test", "docs.example.org")),
    Scenario("http-ipv6", _http_ipv6, _names("http_host", "v6.school.test", "www.school.test")),
    Scenario("quic-v1", _quic_v1, _names("quic_sni", "quic.school.test")),
    Scenario("quic-v2-ipv6", _quic_v2_ipv6, _names("quic_sni", "quic2.school.test")),
    Scenario(
        "chromium-tls", _chromium_tls, _names("sni", "www.school.test"),
        needs_chromium=True, ech_grease=True,
    ),  # fmt: skip
    Scenario(
        "chromium-tls-tso-off", _chromium_tls_tso_off, _names("sni", "pupils.school.test"),
        needs_chromium=True, ech_grease=True,
    ),  # fmt: skip
    Scenario(
        "chromium-quic", _chromium_quic, _names("quic_sni", "video.school.test"),
        needs_chromium=True, ech_grease=True,
    ),  # fmt: skip
)


def record_scenarios(
    network: SchoolNetwork, directory: Path, scenarios: Iterable[Scenario] = SCENARIOS
) -> dict[str, Recording]:
    """Capture each scenario into directory/<name>.pcap; failures are recorded, not raised."""
    recordings = {}
    for scenario in scenarios:
        path = directory / f"{scenario.name}.pcap"
        started = time.monotonic()
        error = None
        try:
            with network.capture(path, small_mtu=scenario.small_mtu):
                scenario.run(network)
        except (LabError, subprocess.SubprocessError, OSError) as failure:
            error = str(failure)
        recordings[scenario.name] = Recording(
            scenario, path, time.monotonic() - started, error
        )
    return recordings


# --- the QUIC server and client, run as `python -m edufilter_lab.traffic` ------------------


def _run_quic_server(cert: str, key: str, ports: Sequence[int], retry: bool) -> None:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.asyncio.server import serve
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ProtocolNegotiated, QuicEvent
    from aioquic.quic.packet import QuicProtocolVersion

    class Http3Server(QuicConnectionProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._http: H3Connection | None = None

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
                self._http = H3Connection(self._quic)
            if self._http is None:
                return
            for http_event in self._http.handle_event(event):
                if isinstance(http_event, HeadersReceived) and http_event.stream_ended:
                    body = b"<html><body>edufilter lab over QUIC</body></html>\n"
                    self._http.send_headers(
                        http_event.stream_id,
                        [
                            (b":status", b"200"),
                            (b"content-type", b"text/html"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    )
                    self._http.send_data(http_event.stream_id, body, end_stream=True)
            self.transmit()

    async def main() -> None:
        configuration = QuicConfiguration(
            is_client=False,
            alpn_protocols=H3_ALPN,
            supported_versions=[QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2],
        )
        configuration.load_cert_chain(cert, key)
        for port in ports:
            await serve("::", port, configuration=configuration, create_protocol=Http3Server, retry=retry)
        await asyncio.Event().wait()

    asyncio.run(main())


# ALPN values after "h3" that make aioquic's ClientHello need two Initial datagrams, as
# Chromium's post-quantum key share does.
LARGE_HELLO_ALPN = [f"h3-experiment-{index:02d}-" + "x" * 80 for index in range(12)]


def _run_quic_client(address: str, port: int, server_name: str, version: int, large_hello: bool,
                     lose_second_initial: bool) -> None:
    from aioquic.asyncio.client import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import QuicEvent
    from aioquic.quic.packet import QuicProtocolVersion

    class Http3Client(QuicConnectionProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.http = H3Connection(self._quic)
            self.status = ""
            self.done = asyncio.Event()
            self.initial_dcids: list[bytes] = []
            self.first_flight = True

        def transmit(self) -> None:
            """Records the connection IDs Initials are sent to; with lose_second_initial the
            first flight's second datagram is left out, as if it had been lost."""
            self._transmit_task = None
            now = self._loop.time()
            for index, (data, address) in enumerate(self._quic.datagrams_to_send(now=now)):
                if data[0] & 0xC0 == 0xC0 and (data[0] >> 4) & 0x03 == (0 if version == 1 else 1):
                    self.initial_dcids.append(data[6:6 + data[5]])
                if not (lose_second_initial and self.first_flight and index == 1):
                    self._transport.sendto(data, address)
            self.first_flight = False
            timer_at = self._quic.get_timer()
            if self._timer is not None and self._timer_at != timer_at:
                self._timer.cancel()
                self._timer = None
            if self._timer is None and timer_at is not None:
                self._timer = self._loop.call_at(timer_at, self._handle_timer)
            self._timer_at = timer_at

        def quic_event_received(self, event: QuicEvent) -> None:
            for http_event in self.http.handle_event(event):
                if isinstance(http_event, HeadersReceived):
                    self.status = dict(http_event.headers).get(b":status", b"").decode()
                if isinstance(http_event, (HeadersReceived, DataReceived)):
                    if http_event.stream_ended:
                        self.done.set()

    versions = {1: QuicProtocolVersion.VERSION_1, 2: QuicProtocolVersion.VERSION_2}
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN + (LARGE_HELLO_ALPN if large_hello else []),
        server_name=server_name,
        verify_mode=ssl.CERT_NONE,
        supported_versions=[versions[version]],
        idle_timeout=4.0,  # a blocked handshake fails in seconds, inside the caller's timeout
    )

    async def main() -> None:
        async with connect(
            address, port, configuration=configuration, create_protocol=Http3Client
        ) as client:
            assert isinstance(client, Http3Client)
            stream_id = client._quic.get_next_available_stream_id()
            client.http.send_headers(
                stream_id,
                [
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":authority", server_name.encode()),
                    (b":path", b"/"),
                ],
                end_stream=True,
            )
            client.transmit()
            await asyncio.wait_for(client.done.wait(), timeout=5)
            if lose_second_initial and len(set(client.initial_dcids)) < 2:
                raise SystemExit("the client never sent an Initial to the server's connection ID")
            print(client.status)

    asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edufilter_lab.traffic")
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("quic-server", help="aioquic HTTP/3 server on [::]")
    server.add_argument("--cert", required=True)
    server.add_argument("--key", required=True)
    server.add_argument("--port", type=int, action="append", required=True)
    server.add_argument("--retry", action="store_true", help="send a Retry to every new connection")
    client = commands.add_parser("quic-client", help="one HTTP/3 GET with aioquic")
    client.add_argument("--address", type=ipaddress.ip_address, required=True)
    client.add_argument("--port", type=int, default=443)
    client.add_argument("--server-name", required=True)
    client.add_argument("--version", type=int, choices=(1, 2), default=1)
    client.add_argument("--large-hello", action="store_true", help="a ClientHello over two Initials")
    client.add_argument("--lose-second-initial", action="store_true",
                        help="leave out the first flight's second datagram")
    arguments = parser.parse_args(argv)
    if arguments.command == "quic-server":
        _run_quic_server(arguments.cert, arguments.key, arguments.port, arguments.retry)
    else:
        _run_quic_client(str(arguments.address), arguments.port, arguments.server_name, arguments.version,
                         arguments.large_hello, arguments.lose_second_initial)


if __name__ == "__main__":
    main()
