"""A group's NATS cluster and its gateways in namespaces: three JetStream servers (TLS for
clients, one user per site) and gateway hosts, all behind one router, for tests and demos."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from edufilter.hub.topology import ServerSettings, server_config
from edufilter_lab.netns import Host, Lab, LabError

CLIENT_PORT = 4222
CLUSTER_PORT = 6222
ADMIN = ("group-admin", "admin-secret")
# Clear of the school lab's subnets (lab/school.py), so both can share one Lab.
SERVER_SUBNET = 61  # server i is at 198.18.<SERVER_SUBNET + i>.2
GATEWAY_SUBNET = 70  # gateway agent i is at 198.18.<GATEWAY_SUBNET + i>.2
DAEMON_SUBNET = 90  # a school's gateway running `edufilter run`


def nats_server_available() -> str | None:
    """None when nats-server is installed, else why not."""
    return None if shutil.which("nats-server") else "nats-server is not installed (apt-get install nats-server)"


def make_tls(folder: Path, addresses: list[str]) -> tuple[Path, Path, Path]:
    """A test CA and one server certificate for these IP addresses: (ca, certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edufilter lab group CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edufilter lab nats")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


@dataclass
class NatsServer:
    host: Host
    address: str
    config: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"tls://{self.address}:{CLIENT_PORT}"


@dataclass
class GroupCluster:
    """The lab: a router, the servers, the gateways (by site name), the files they use."""

    lab: Lab
    folder: Path
    router: Host
    servers: list[NatsServer]
    gateways: dict[str, Host]
    ca: Path
    passwords: dict[str, Path] = field(default_factory=dict)  # user -> password file

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def start(self, server: NatsServer) -> None:
        log = open(self.folder / f"{server.host.name}.log", "ab")
        server.process = server.host.popen(["nats-server", "-c", str(server.config)], stdout=log, stderr=log)
        _wait_for_port(server, 10.0)

    def kill(self, server: NatsServer) -> None:
        assert server.process is not None
        server.process.kill()
        server.process.wait(5)
        server.process = None

    def admin_args(self) -> list[str]:
        args = [f"--server={url}" for url in self.urls]
        return [*args, f"--user={ADMIN[0]}", f"--password-file={self.passwords[ADMIN[0]]}", f"--ca={self.ca}"]

    def hub(self, *args: str, check: bool = True, host: Host | None = None) -> subprocess.CompletedProcess[str]:
        """`edufilter hub <action> <args>` as the group admin, from the router (or host)."""
        action, *rest = args
        return (host or self.router).run([sys.executable, "-m", "edufilter", "hub", action, *self.admin_args(),
                                          *rest], timeout=150, check=check)

    def gateway_config(self, site: str, state_dir: Path, user: str | None = None) -> Path:
        """An edufilter.toml for the site's gateway ([hub] with the site's credentials)."""
        user = user or site
        servers = ", ".join(f'"{url}"' for url in self.urls)
        path = self.folder / f"{site}-{user}.toml"
        path.write_text(f'state_dir = "{state_dir}"\n[hub]\nservers = [{servers}]\nsite = "{site}"\n'
                        f'user = "{user}"\npassword_file = "{self.passwords[user]}"\nca_file = "{self.ca}"\n')
        return path

    def connect_gateway(self, site: str, gateway: Host) -> None:
        """Join a site's gateway built elsewhere (a FilteredSchool's) to the router, routed to the servers."""
        self.gateways[site] = gateway
        self.lab.link(self.router, gateway, DAEMON_SUBNET)
        self.lab.route(gateway, self.router, [f"{server.address.rsplit('.', 1)[0]}.0/24" for server in self.servers])
        self.lab.wait_until_up()

    def link_down(self, site: str, down: bool = True) -> None:
        """Cut (or restore) a gateway's only link: its traffic to every server is lost."""
        end = self.lab.link_between(self.gateways[site], self.router).end(self.router)
        self.router.run(["ip", "link", "set", "dev", end.ifname, "down" if down else "up"])


def start_group_cluster(lab: Lab, folder: Path, sites: list[str], server_count: int = 3,
                        agent_hosts: bool = True) -> GroupCluster:
    """Build the namespaces (a host per site for its agent unless not agent_hosts), the TLS
    files, the users, and start the servers (JetStream clustered)."""
    router = lab.add_host("router")
    lab.enable_forwarding(router)
    hosts = []
    for index in range(server_count):
        host = lab.add_host(f"nats{index + 1}")
        lab.link(router, host, SERVER_SUBNET + index)
        lab.route(host, router)
        hosts.append(host)
    gateways = {}
    for index, site in enumerate(sites if agent_hosts else []):
        host = lab.add_host(f"gw{index + 1}")
        lab.link(router, host, GATEWAY_SUBNET + index)
        lab.route(host, router)
        gateways[site] = host
    lab.wait_until_up()
    addresses = [f"198.18.{SERVER_SUBNET + index}.2" for index in range(server_count)]
    ca, certificate, key = make_tls(folder, addresses)
    users = {ADMIN[0]: ADMIN[1], **{site: f"{site}-secret" for site in sites}}
    passwords = {}
    for user, password in users.items():
        passwords[user] = folder / f"{user}.password"
        passwords[user].write_text(password + "\n")
        passwords[user].chmod(0o600)
    servers = []
    for index, (host, address) in enumerate(zip(hosts, addresses)):
        settings = ServerSettings(
            name=host.name, listen=f"{address}:{CLIENT_PORT}", cluster_listen=f"{address}:{CLUSTER_PORT}",
            routes=[f"{other}:{CLUSTER_PORT}" for other in addresses if other != address],
            store_dir=str(folder / f"{host.name}-store"), certificate=str(certificate), key=str(key),
        )
        config = folder / f"{host.name}.conf"
        config.write_text(server_config(settings, ADMIN, {site: users[site] for site in sites}))
        config.chmod(0o600)  # the users' passwords
        servers.append(NatsServer(host, address, config))
    cluster = GroupCluster(lab, folder, router, servers, gateways, ca, passwords)
    for server in servers:
        cluster.start(server)
    return cluster


def _wait_for_port(server: NatsServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = server.host.run([sys.executable, "-c", f"import socket; socket.create_connection(('{server.address}',"
                                 f" {CLIENT_PORT}), 1)"], check=False)
        if probe.returncode == 0:
            return
        if server.process is not None and server.process.poll() is not None:
            raise LabError(f"nats-server on {server.host.name} exited {server.process.returncode}")
        time.sleep(0.2)
    raise LabError(f"nats-server on {server.host.name} not listening after {timeout} s")


def main(argv: list[str] | None = None) -> int:
    """The multi-site lab demo: a three-server cluster, three sites' agents following it."""
    import argparse
    import tempfile

    from edufilter_lab.netns import namespaces_available
    from edufilter.policy.defaults import default_policy_dir

    parser = argparse.ArgumentParser(prog="python -m edufilter_lab.hub", description=main.__doc__)
    parser.add_argument("--sites", nargs="+", default=["ghent", "bruges", "leuven"])
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (default: at Ctrl-C)")
    args = parser.parse_args(argv)
    for reason in (namespaces_available(), nats_server_available()):
        if reason:
            print(f"cannot run the demo: {reason}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="edufilter-hub-demo-") as temporary, Lab() as lab:
        folder = Path(temporary)
        cluster = start_group_cluster(lab, folder, args.sites)
        cluster.hub("init", "--sites", *args.sites)
        cluster.hub("put", "--group", str(default_policy_dir()))
        agents = []
        for index, site in enumerate(args.sites):
            part = folder / f"part-{site}"
            part.mkdir()
            (part / "clients.toml").write_text(f'[[clients.primary]]\ncidr = "198.18.{100 + index}.0/24"\n')
            cluster.hub("put", f"--site={site}", str(part))
            config = cluster.gateway_config(site, folder / f"state-{site}")
            log = open(folder / f"agent-{site}.log", "ab")
            agents.append(cluster.gateways[site].popen([sys.executable, "-m", "edufilter", "hub", "agent", "--config",
                                                        str(config)], stdout=log, stderr=log))
        time.sleep(3)
        admin = " ".join(cluster.admin_args())
        print(f"servers: {', '.join(cluster.urls)}\nsites: {', '.join(args.sites)} (state folders in {folder})\n"
              f"as the group admin, from the router namespace:\n"
              f"  ip netns exec {cluster.router.netns} {sys.executable} -m edufilter hub show --group {admin}\n"
              f"  ip netns exec {cluster.router.netns} {sys.executable} -m edufilter hub put --group "
              f"--if-match=REVISION FOLDER {admin}\n"
              f"  ip netns exec {cluster.router.netns} {sys.executable} -m edufilter hub events {admin}\n"
              f"each agent's applied revisions: {folder}/state-SITE/hub/applied.json; logs: {folder}/agent-SITE.log")
        try:
            deadline = time.monotonic() + args.seconds if args.seconds else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        for agent in agents:
            agent.terminate()
            agent.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
