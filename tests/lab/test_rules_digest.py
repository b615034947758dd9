"""The check of the whole rule table (enforce.netfilter.table_digest) in a namespace of its own:
any change another tool makes shows, what the kernel changes by itself (counters) does not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edufilter.rules.netfilter import InstalledRules, RuleSettings, install, remove_stale, table_digest
from edufilter_lab.netns import Host, Lab

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("require_lab")]


@pytest.fixture(scope="module")
def gateway(require_lab: None) -> Iterator[Host]:
    with Lab() as lab:
        yield lab.add_host("gateway")


@pytest.fixture
def rules(gateway: Host) -> Iterator[InstalledRules]:
    remove_stale(gateway.netns)
    installed = install(RuleSettings(queues=range(2), fail_open=True), netns=gateway.netns)
    yield installed
    remove_stale(gateway.netns)


def test_the_installed_table_is_its_own_reference(rules: InstalledRules, gateway: Host) -> None:
    assert rules.digest is not None and rules.digest == table_digest(gateway.netns)
    assert not rules.changed()


@pytest.mark.parametrize("change", [
    ["flush", "chain", "inet", "edufilter", "forward"],
    ["flush", "chain", "inet", "edufilter", "to_queue"],
    ["add", "rule", "inet", "edufilter", "inspect", "accept"],
    ["insert", "rule", "inet", "edufilter", "forward", "accept"],
    ["chain", "inet", "edufilter", "forward", "{ policy drop; }"],
    ["delete", "chain", "inet", "edufilter", "inspect"],
    ["delete", "table", "inet", "edufilter"],
], ids=["flush-forward", "flush-queue", "add-rule", "insert-accept", "policy-drop", "delete-chain", "delete-table"])
def test_any_change_by_another_tool_shows(rules: InstalledRules, gateway: Host, change: list[str]) -> None:
    if change[:2] == ["delete", "chain"]:
        gateway.run(["nft", "flush", "chain", "inet", "edufilter", "forward"])  # its jumps go first
    gateway.run(["nft", *change])
    assert rules.changed()


def test_counter_values_are_not_a_change(rules: InstalledRules, gateway: Host) -> None:
    """The same rule with a counter at 5 packets and at 0: one table, as far as the check sees."""
    digests = []
    for packets in (5, 0):
        remove_stale(gateway.netns)
        install(rules.settings, rules.backend, gateway.netns)
        gateway.run(["nft", "add", "rule", "inet", "edufilter", "inspect", "counter", "packets", str(packets),
                     "bytes", str(packets * 60)])
        digests.append(table_digest(gateway.netns))
    assert digests[0] == digests[1] != rules.digest
