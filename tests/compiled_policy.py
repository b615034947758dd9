"""A policy written as TOML, stored, compiled and mapped as a worker maps it; and the worker
loop given it, as Worker.install gives it (for tests of the loop and of its slow path)."""

from __future__ import annotations

from pathlib import Path

from edufilter.daemon.worker import PolicyView
from edufilter.enforce._enforce import Enforcer
from edufilter.enforce.dns import bypass_names, safe_search_names
from edufilter.policy.compile import compile_policy
from edufilter.policy.defaults import load_policy_dir
from edufilter.policy.store import PolicyStore
from edufilter.state import StateDir

# A school's pupils under safe search and the bypass shield, with a blocked, a sinkholed and
# a blocked-network list.
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
    with PolicyStore(StateDir(state).policy_db) as store:
        store.replace_all(load_policy_dir(state / "policy"))
    compile_policy(state)
    return PolicyView.load(StateDir(state).images)


def set_policy(loop: Enforcer, view: PolicyView) -> None:
    loop.set_policy(view.engine.classifier, view.groups, safe_search_names(), bypass_names(), view.url_hosts)
