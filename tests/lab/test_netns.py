"""The namespace lab comes up, carries IPv4 and IPv6, and always goes away."""

from __future__ import annotations

import subprocess

import pytest

from edufilter_lab.netns import (
    Host,
    Lab,
    LabError,
    cleanup_stale,
    client_gateway_server,
    list_namespaces,
)

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("require_lab")]


def ping(host: Host, address: object, family: int) -> None:
    host.run(["ping", f"-{family}", "-c", "1", "-W", "2", str(address)], timeout=5)


def namespaces_with(prefix: str) -> list[str]:
    return [name for name in list_namespaces() if name.startswith(prefix)]


def test_lab_up_and_down() -> None:
    with Lab() as lab:
        lab.add_host("alpha")
        lab.add_host("beta")
        assert sorted(namespaces_with(lab.prefix)) == [lab.prefix + "alpha", lab.prefix + "beta"]
        loopback = lab.hosts["alpha"].run(["ip", "-brief", "link", "show", "lo"]).stdout
        assert "UP" in loopback or "UNKNOWN" in loopback
    assert namespaces_with(lab.prefix) == []


def test_ping_across_a_link_v4_and_v6() -> None:
    with Lab() as lab:
        alpha, beta = lab.add_host("alpha"), lab.add_host("beta")
        link = lab.link(alpha, beta, subnet_index=7)
        lab.wait_until_up()
        assert str(link.end(alpha).ipv4) == "198.18.7.1/24"
        assert str(link.end(beta).ipv6) == "2001:2:0:7::2/64"
        ping(alpha, link.end(beta).address(4), 4)
        ping(beta, link.end(alpha).address(6), 6)


def test_client_reaches_server_through_gateway() -> None:
    with Lab() as lab:
        topology = client_gateway_server(lab)
        ping(topology.client, topology.server_address, 4)
        ping(topology.client, topology.server_address6, 6)
        route = topology.client.run(["ip", "-4", "route", "get", str(topology.server_address)])
        assert "via 198.18.0.2" in route.stdout


def test_small_mtu_link_carries_ipv4_only() -> None:
    with Lab() as lab:
        alpha, beta = lab.add_host("alpha"), lab.add_host("beta")
        link = lab.link(alpha, beta, subnet_index=3, mtu=576)
        lab.wait_until_up()
        assert link.end(beta).ipv6 is None
        shown = beta.run(["ip", "link", "show", link.end(beta).ifname]).stdout
        assert "mtu 576" in shown
        ping(alpha, link.end(beta).address(4), 4)


def test_offloads_switch_off() -> None:
    with Lab() as lab:
        alpha, beta = lab.add_host("alpha"), lab.add_host("beta")
        link = lab.link(alpha, beta, subnet_index=4)
        ifname = link.end(alpha).ifname
        lab.set_offloads(alpha, ifname, tso=False, gso=False, gro=False)
        features = alpha.run(["ethtool", "-k", ifname]).stdout
        assert "tcp-segmentation-offload: off" in features
        assert "generic-segmentation-offload: off" in features


def test_cleanup_after_an_exception_kills_processes() -> None:
    prefix = ""
    with pytest.raises(RuntimeError, match="test failure"):
        with Lab() as lab:
            prefix = lab.prefix
            host = lab.add_host("alpha")
            sleeper = host.popen(["sleep", "60"])
            raise RuntimeError("test failure")
    assert namespaces_with(prefix) == []
    assert sleeper.poll() is not None


def test_processes_not_started_by_the_lab_are_killed_too() -> None:
    with Lab() as lab:
        host = lab.add_host("alpha")
        # Started around the lab's bookkeeping; only `ip netns pids` can find it.
        host.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 &"])
        assert host.run(["ip", "netns", "pids", host.netns]).stdout.strip()
    assert namespaces_with(lab.prefix) == []


def test_lab_rejects_bad_names_and_reused_subnets() -> None:
    with Lab() as lab:
        alpha, beta = lab.add_host("alpha"), lab.add_host("beta")
        with pytest.raises(LabError):
            lab.add_host("Not-A-Host")
        lab.link(alpha, beta, subnet_index=5)
        with pytest.raises(LabError):
            lab.link(alpha, beta, subnet_index=5)


def test_close_is_idempotent() -> None:
    lab = Lab()
    lab.add_host("alpha")
    lab.close()
    lab.close()
    assert namespaces_with(lab.prefix) == []


def test_cleanup_stale_removes_namespaces_of_dead_runs() -> None:
    exited = subprocess.Popen(["true"])
    exited.wait()
    stale = f"efl-{exited.pid}-0-alpha"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        removed = cleanup_stale()
        assert stale in removed
        assert stale not in list_namespaces()
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True)


def test_cleanup_stale_keeps_namespaces_of_live_runs() -> None:
    with Lab() as lab:
        lab.add_host("alpha")
        assert lab.prefix + "alpha" not in cleanup_stale()
        assert namespaces_with(lab.prefix) == [lab.prefix + "alpha"]
