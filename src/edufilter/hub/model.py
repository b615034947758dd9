"""Names shared by the hub, the gateways and the server configuration: buckets, subjects,
and a policy part (a folder of policy TOML files) as the bytes a bucket stores."""

from __future__ import annotations

import json
import re
import tempfile
import tomllib
from dataclasses import replace
from pathlib import Path

from edufilter.errors import EdufilterError, PolicyError
from edufilter.policy.model import ClientMatch, Policy

GROUP_BUCKET = "edufilter-group"
SITE_BUCKET_PREFIX = "edufilter-site-"
POLICY_KEY = "policy"
EVENTS_STREAM = "EDUFILTER_EVENTS"
EVENTS_SUBJECT_PREFIX = "edufilter.events."
KV_HISTORY = 64  # the most JetStream keeps per key
SITE_PART_PREFIX = "site-"  # a site's files sit beside the group's under this prefix
SITE_CLIENTS = "clients.toml"  # a site's networks in the group's groups
_CLIENT_KEYS = ("cidr", "interface", "vlan", "mac")

_SITE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")


class HubError(EdufilterError):
    """The hub is unreachable, refused a request, or holds something unusable."""


def check_site_name(site: str) -> str:
    if not _SITE_NAME.fullmatch(site):
        raise HubError(f"site name {site!r}: use 1-31 lowercase letters, digits and '-'")
    return site


def site_bucket(site: str) -> str:
    return SITE_BUCKET_PREFIX + check_site_name(site)


def bucket_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def bucket_subject(bucket: str) -> str:
    return f"$KV.{bucket}.{POLICY_KEY}"


def events_subject(site: str) -> str:
    return EVENTS_SUBJECT_PREFIX + check_site_name(site)


def site_inbox(site: str) -> str:
    """Replies to a site's requests come here; only that site may subscribe to it."""
    return f"_INBOX_{check_site_name(site)}"


def read_part(folder: Path) -> dict[str, str]:
    """The policy TOML files of a folder, by file name."""
    files = {path.name: path.read_text() for path in sorted(folder.glob("*.toml")) if not path.name.startswith(".")}
    if not files:
        raise HubError(f"{folder}: no policy files (*.toml)")
    return files


def encode_part(files: dict[str, str]) -> bytes:
    return json.dumps({"files": files}, sort_keys=True).encode()


def decode_part(data: bytes) -> dict[str, str]:
    """The files of a stored part; HubError when the bytes are not one."""
    try:
        files = json.loads(data)["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise HubError(f"not a policy part: {error}") from error
    if not isinstance(files, dict) or not all(
        isinstance(name, str) and isinstance(text, str) and name.endswith(".toml") and "/" not in name
        and not name.startswith(".") for name, text in files.items()
    ):
        raise HubError("not a policy part: files must map plain *.toml names to text")
    return files


def combined_policy(group: dict[str, str], site: dict[str, str]) -> Policy:
    """The gateway's policy: the group's files plus the site's, which add items of their own
    (a site redefining a group's item is refused) and, in SITE_CLIENTS, put the site's
    networks into the group's groups. PolicyError names the file and item at fault."""
    from edufilter.policy.defaults import load_policy_dir
    from edufilter.policy.store import check_policy

    with tempfile.TemporaryDirectory(prefix="edufilter-part-") as temporary:
        folder = Path(temporary)
        for name, text in group.items():
            (folder / name).write_text(text)
        for name, text in site.items():
            if name != SITE_CLIENTS:
                (folder / (SITE_PART_PREFIX + name)).write_text(text)
        policy = load_policy_dir(folder)
    if SITE_CLIENTS not in site:
        return policy
    clients = _site_clients(site[SITE_CLIENTS])
    return check_policy(replace(policy, clients=policy.clients + clients))


def _site_clients(text: str) -> tuple[ClientMatch, ...]:
    """[[clients.<group>]] tables of cidr/interface/vlan/mac, as in a group's clients."""
    try:
        tables = tomllib.loads(text).get("clients", {})
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{SITE_CLIENTS}: not valid TOML: {error}") from error
    if not isinstance(tables, dict):
        raise PolicyError(f"{SITE_CLIENTS}: [clients] must be a table of groups")
    matches = []
    for group, entries in tables.items():
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise PolicyError(f"{SITE_CLIENTS}: clients.{group} must be [[clients.{group}]] tables")
        for entry in entries:
            unknown = set(entry) - set(_CLIENT_KEYS)
            if unknown:
                raise PolicyError(f"{SITE_CLIENTS}: clients.{group}: unknown key {sorted(unknown)[0]!r}")
            matches.append(ClientMatch(group, **entry))
    return tuple(matches)
