"""Compile the policy into the three immutable images the data path maps.

- `categories.img`: every imported category's names, networks and URL prefixes. Large (UT1
  holds millions of names) and rebuilt only when lists are imported or updated.
- `lists.img`: the admin lists' entries (names, networks, URL prefixes). As large as the
  admin makes the lists, and rebuilt only when their entries change: it records the store's
  lists revision, which every entry written or removed changes.
- `policy.img`: the rest of what the admin edits — overrides, groups, client matches, rules
  and schedule bitmaps — rebuilt in milliseconds after every change without reading a list
  entry. Its list ids are the categories of the categories image, then the lists of the
  lists image, then lists made since (without entries) and overrides; it records both
  images' digests.

Each is written beside the live image and renamed into place (classify/image.py): readers
keep the old image until the new one is complete.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edufilter.classify._classify import (
    ALWAYS_SCHEDULE,
    DomainTableBuilder,
    HashCollision,
    RuleAction,
    Tier,
)
from edufilter.classify.image import (
    SPOOL_SUFFIX,
    SectionSpec,
    hold_lock,
    raise_if_disk_full,
    read_meta,
    write_image,
)
from edufilter.errors import PolicyError
from edufilter.policy.liststore import (
    NAME_CHUNK_BYTES,
    ListStore,
    StoredCategory,
    line_blocks,
)
from edufilter.policy.model import (
    Action,
    EntryKind,
    Group,
    Policy,
    Schedule,
    TargetKind,
    effective_rules,
    effective_unnamed,
)
from edufilter.policy.schedule import active_minutes
from edufilter.policy.store import CompileView, PolicyStore, check_policy
from edufilter.state import StateDir

MAX_LIST_IDS = 0x8000  # a set member's list id has 15 bits
SPOOL_BATCH = 65_536  # list entries written to the spool files at a time
MAX_TLD_CODES = 255
TLD_SAMPLE_BYTES = 1 << 20  # the first MiB of each category's names decides the TLD codes
SEED_ATTEMPTS = 8  # a 64-bit hash collision between two names is rare; another seed ends it
# Schedules are compiled as one bit per minute from an hour ago for this long; the daemon
# recompiles every day, so the window never runs out under a running gateway.
SCHEDULE_WINDOW = timedelta(days=8)
SCHEDULE_LOOKBACK = timedelta(hours=1)
NO_VALUE = 0xFFFFFFFF
FOREVER = (-(1 << 63), (1 << 63) - 1)
RULE_ENTRY = struct.Struct("<BBHIqq")  # action, reserved, schedule, order, valid_from, valid_until

ACTION_CODES = {
    Action.ALLOW: RuleAction.ACTION_ALLOW,
    Action.BLOCK: RuleAction.ACTION_BLOCK,
    Action.DROP: RuleAction.ACTION_DROP,
    Action.SINKHOLE: RuleAction.ACTION_SINKHOLE,
    Action.MONITOR: RuleAction.ACTION_MONITOR,
}

# A network as the interval tables need it: IP version, first address, one past the last
# address, prefix length. Plain ints: tens of thousands of ipaddress objects would be most of
# a compile's memory besides the name table.
NetworkSpan = tuple[int, int, int, int]



@dataclass(frozen=True, slots=True)
class CompileReport:
    path: Path
    names: int
    networks: int
    url_prefixes: int
    image_bytes: int
    warnings: tuple[str, ...] = ()
    version: int | None = None  # the policy version a policy image was compiled from
    lists_path: Path | None = None  # the lists image a policy image goes with


# ---------------------------------------------------------------- the categories image


def compile_categories(state_dir: Path, out: Path | None = None) -> CompileReport:
    """Build categories.img from the list store, then the policy image that depends on it."""
    state_dir = Path(state_dir)
    categories = [category for category in ListStore.in_state_dir(state_dir).categories()]
    path = out or StateDir(state_dir).categories_image
    report = write_categories_image(categories, path)
    if out is None:
        compile_policy(state_dir)
    return report


def write_categories_image(categories: Sequence[StoredCategory], path: Path) -> CompileReport:
    data = sorted((category for category in categories if category.alias_of is None), key=lambda c: c.name)
    aliases = {category.name: category.alias_of for category in categories if category.alias_of is not None}
    ids = {category.name: index for index, category in enumerate(data)}
    tlds = _common_tlds(data)

    def add_sources(builder: DomainTableBuilder) -> None:
        builder.reserve(sum(category.counts.names for category in data))
        for category in data:
            builder.add_source(ids[category.name], False, category.name_chunks)

    names = _build_names(tlds, add_sources)
    networks = [(span, ids[category.name]) for category in data for span in _networks(category.cidrs())]
    urls = [(ids[category.name], url) for category in data for url in category.urls()]
    digest = hashlib.sha256(
        json.dumps([[category.name, category.digest] for category in data] + [sorted(aliases.items())]).encode()
    ).hexdigest()
    meta = {
        "kind": "categories",
        "digest": digest,
        "categories": [category.name for category in data],
        "aliases": aliases,
        "counts": {category.name: category.counts.entries for category in data},
        "compiled_at": _now().isoformat(),
    }
    sections = [names, *_list_address_sections(networks), _urls_section(urls)]
    write_image(path, sections, meta)
    return CompileReport(path, sum(c.counts.names for c in data), len(networks), len(urls), path.stat().st_size)


def _common_tlds(categories: Sequence[StoredCategory]) -> list[bytes]:
    """The most frequent top-level domains, each stored once in the table instead of per name."""
    return _most_common_tlds(next(iter(category.name_chunks(TLD_SAMPLE_BYTES)), b"") for category in categories)


def _most_common_tlds(samples: Iterable[bytes]) -> list[bytes]:
    counts: Counter[bytes] = Counter()
    for sample in samples:
        counts.update(line.rpartition(b".")[2] for line in sample.split(b"\n") if b"." in line)
    return [tld for tld, _ in counts.most_common(MAX_TLD_CODES)]


# ---------------------------------------------------------------- the lists image

# An admin list's values of one kind, in order: ListValues(list name, kind); asked once per kind.
ListValues = Callable[[str, EntryKind], Iterable[str]]


def write_lists_image(names: Sequence[str], values: ListValues, revision: int, path: Path) -> CompileReport:
    """Build lists.img from the admin lists `names` (list ids from 0 in that order).

    The names are spooled to files beside the image first: the table reads them once to
    hash them and again per hash range to place them, which the store should not answer.
    """
    if len(names) > MAX_LIST_IDS:
        raise PolicyError(f"too many admin lists ({len(names)}); at most {MAX_LIST_IDS}")
    try:
        return _write_lists_image(names, values, revision, path)
    except OSError as error:  # the spool beside the image: a full disk is the server's trouble
        raise_if_disk_full(path, error)
        raise PolicyError(f"image {path}: {error.strerror or error}; the live image stays") from error


def _write_lists_image(names: Sequence[str], values: ListValues, revision: int, path: Path) -> CompileReport:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=SPOOL_SUFFIX, dir=path.parent) as spool, \
            hold_lock(Path(spool)):
        sources: list[tuple[int, bool, Path]] = []
        counts: dict[str, int] = {}
        for list_id, name in enumerate(names):
            for kind in (EntryKind.DOMAIN, EntryKind.EXACT):
                file = Path(spool) / f"{list_id}.{kind.value}"
                written = _spool(values(name, kind), file)
                counts[name] = counts.get(name, 0) + written
                if written:
                    sources.append((list_id, kind is EntryKind.EXACT, file))
        total = sum(counts.values())
        tlds = _most_common_tlds(next(_file_chunks(file, TLD_SAMPLE_BYTES), b"") for _, _, file in sources)

        def add_sources(builder: DomainTableBuilder) -> None:
            builder.reserve(total)
            for list_id, exact, file in sources:
                builder.add_source(list_id, exact, lambda file=file: _file_chunks(file))

        names_section = _build_names(tlds, add_sources)
        networks = [(span, list_id) for list_id, name in enumerate(names)
                    for span in _networks(values(name, EntryKind.CIDR))]
        urls = [(list_id, url) for list_id, name in enumerate(names) for url in values(name, EntryKind.URL_PREFIX)]
        meta = {
            "kind": "lists",
            "revision": revision,
            "digest": hashlib.sha256(json.dumps([revision, list(names)]).encode()).hexdigest(),
            "lists": list(names),
            "counts": counts,
            "compiled_at": _now().isoformat(),
        }
        write_image(path, [names_section, *_list_address_sections(networks), _urls_section(urls)], meta)
    return CompileReport(path, total, len(networks), len(urls), path.stat().st_size)


def _spool(values: Iterable[str], file: Path) -> int:
    """Writes the values as lines; returns how many (no file when none)."""
    count = 0
    batch: list[str] = []
    with open(file, "w", encoding="ascii") as out:
        for value in values:
            batch.append(value)
            if len(batch) == SPOOL_BATCH:
                out.write("\n".join(batch) + "\n")
                count += len(batch)
                batch.clear()
        if batch:
            out.write("\n".join(batch) + "\n")
            count += len(batch)
    if not count:
        file.unlink()
    return count


def _file_chunks(file: Path, block_bytes: int = NAME_CHUNK_BYTES) -> Iterator[bytes]:
    with open(file, "rb") as lines:
        yield from line_blocks(lines, block_bytes)


def compile_lists(view: CompileView, path: Path) -> CompileReport:
    """Build a lists image from the store's snapshot `view`."""
    return write_lists_image([admin_list.name for admin_list in view.policy.lists], view.values,
                             view.lists_revision, path)


def _build_names(tlds: list[bytes], add_sources: Callable[[DomainTableBuilder], None]) -> SectionSpec:
    """The domain-table section; a rare 64-bit hash collision is resolved with another seed."""
    for seed in range(SEED_ATTEMPTS):
        builder = DomainTableBuilder(tlds=tlds, seed=seed)
        add_sources(builder)
        try:
            size = builder.prepare()
        except HashCollision:
            continue
        return SectionSpec("names", size, _fill_names(builder))
    raise PolicyError(f"name table: hash collisions under {SEED_ATTEMPTS} seeds (damaged lists?)")


def _fill_names(builder: DomainTableBuilder) -> Callable[[memoryview, Callable[[], None]], None]:
    def fill(view: memoryview, release: Callable[[], None]) -> None:
        try:
            builder.write(view, release)
        except HashCollision as error:
            # Two names that collide only show up while placing them; rare enough to fail the
            # compile and let the caller retry (the old image stays live).
            raise PolicyError(f"name table: hash collision ({error}); compile again") from error
        except ValueError as error:
            raise PolicyError(f"name table: {error}") from error

    return fill


def network_span(text: str) -> NetworkSpan:
    network = ipaddress.ip_network(text, strict=False)
    first = int(network.network_address)
    return network.version, first, first + network.num_addresses, network.prefixlen


def _networks(lines: Iterable[str]) -> Iterator[NetworkSpan]:
    for line in lines:
        try:
            yield network_span(line)
        except ValueError:
            continue  # the list store only holds valid networks; a damaged line is skipped


def _urls_section(urls: Iterable[tuple[int, str]], name: str = "urls") -> SectionSpec:
    """URL prefixes (`host/path`) for plain HTTP, as lines of `<list id> <host/path>`."""
    return SectionSpec.of_bytes(name, b"".join(f"{list_id} {url}\n".encode() for list_id, url in urls))


# ---------------------------------------------------------------- address tables


def _list_address_sections(entries: list[tuple[NetworkSpan, int]]) -> list[SectionSpec]:
    """v4 and v6 interval tables whose values index address sets: the lists covering a range."""
    sets: dict[tuple[int, ...], int] = {}

    def intern(members: tuple[tuple[int, int], ...]) -> int:
        return sets.setdefault(_list_members(members), len(sets))

    tables = [SectionSpec.of_bytes(f"v{v}", _interval_table(entries, v, intern)) for v in (4, 6)]
    offsets, members = [0], []
    for key in sets:
        members.extend(key)
        offsets.append(len(members))
    packed = struct.pack(f"<I{len(offsets)}I{len(members)}I", len(sets), *offsets, *members)
    return [*tables, SectionSpec.of_bytes("address_sets", packed)]


def _client_address_sections(entries: list[tuple[NetworkSpan, int]]) -> list[SectionSpec]:
    """v4 and v6 interval tables whose values are the group of the longest covering prefix."""

    def innermost(members: tuple[tuple[int, int], ...]) -> int:
        return max(members, key=lambda member: member[1])[0]

    return [SectionSpec.of_bytes(f"clients_v{v}", _interval_table(entries, v, innermost)) for v in (4, 6)]


def _list_members(members: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """Per list the longest covering prefix, packed as list id << 8 | prefix length."""
    longest: dict[int, int] = {}
    for list_id, prefix_length in members:
        longest[list_id] = max(prefix_length, longest.get(list_id, 0))
    return tuple(sorted(list_id << 8 | length for list_id, length in longest.items()))


def _interval_table(
    entries: list[tuple[NetworkSpan, int]], version: int, value_of: Callable[[tuple[tuple[int, int], ...]], int]
) -> bytes:
    """Flat intervals over one address family: u32 count, u32 pad, starts, u32 values.

    CIDRs are nested or disjoint, so one sweep with a stack of the networks covering the
    current address gives, between consecutive boundaries, exactly the networks that cover it.
    """
    width = 4 if version == 4 else 16
    spans = sorted(
        ((start, end, (value, prefix_length)) for (family, start, end, prefix_length), value in entries
         if family == version),
        key=lambda span: (span[0], span[0] - span[1]),  # at one start, the larger first
    )
    boundaries: dict[int, int] = {}
    stack: list[tuple[int, tuple[int, int]]] = []

    def mark(at: int) -> None:
        boundaries[at] = value_of(tuple(member for _, member in stack)) if stack else NO_VALUE

    for start, end, member in spans:
        while stack and stack[-1][0] <= start:
            ended = stack.pop()[0]
            mark(ended)
        stack.append((end, member))
        mark(start)
    while stack:
        mark(stack.pop()[0])
    starts: list[int] = []
    values: list[int] = []
    limit = 1 << (8 * width)
    for at in sorted(boundaries):
        if at >= limit or (values and values[-1] == boundaries[at]):
            continue
        if not values and boundaries[at] == NO_VALUE:
            continue
        starts.append(at)
        values.append(boundaries[at])
    return b"".join(
        [
            struct.pack("<II", len(starts), 0),
            b"".join(start.to_bytes(width, "big") for start in starts),
            struct.pack(f"<{len(values)}I", *values),
        ]
    )


# ---------------------------------------------------------------- the policy image


@dataclass(slots=True)
class _Lists:
    """Every list id of one compile: categories first, then admin lists, then overrides."""

    names: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # "category" | "list" | "override"
    tiers: list[int] = field(default_factory=list)
    ids: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, kind: str, name: str, tier: int) -> int:
        self.ids[(kind, name)] = len(self.names)
        self.names.append(name)
        self.kinds.append(kind)
        self.tiers.append(tier)
        return self.ids[(kind, name)]


def compile_policy(state_dir: Path, now: datetime | None = None, out: Path | None = None,
                   assume: Callable[[Policy], Policy] | None = None) -> CompileReport:
    """Build policy.img from the policy store against the live categories and lists images.

    The lists image is rebuilt first when the store's list entries changed since it was
    compiled; otherwise no list entry is read. `now` places the schedule window (default:
    the current time); `out` writes the policy image elsewhere than the live one (e.g. to
    explain a decision at another time), and then a lists image that needs rebuilding
    beside it (report.lists_path says which lists image goes with it). `assume` changes the
    stored policy before the compile (a preview of a change not saved; it cannot touch list
    entries, which come from the store), and the result is validated as a whole policy.
    """
    state_dir = Path(state_dir)
    state = StateDir(state_dir)
    categories_path = state.categories_image
    if not categories_path.exists():
        write_categories_image([], categories_path)
    # The metadata only: checking a large image's every byte is the engine's work when it maps it.
    categories_meta = read_meta(categories_path)
    path = out or state.policy_image
    lists_path = state.lists_image
    with PolicyStore.for_reading(state.policy_db) as store, store.compile_view() as view:
        lists_meta = _lists_meta(lists_path)
        if lists_meta is None or lists_meta.get("revision") != view.lists_revision:
            if out is not None:
                lists_path = out.with_name(out.name + ".lists")
            compile_lists(view, lists_path)
            lists_meta = read_meta(lists_path)
        policy = view.policy if assume is None else check_policy(assume(view.policy))
        sections, meta, counts = policy_sections(policy, categories_meta, lists_meta, now or _now(), view.version)
    write_image(path, sections, meta)
    return CompileReport(path, counts[0], counts[1], counts[2], path.stat().st_size, tuple(meta["warnings"]),
                         view.version, lists_path)


def _lists_meta(path: Path) -> dict | None:
    """The meta of the lists image at path, or None (missing, damaged, not a lists image)."""
    if not path.exists():
        return None
    try:
        meta = read_meta(path)
    except PolicyError:
        return None
    return meta if meta.get("kind") == "lists" else None


def policy_sections(
    policy: Policy, categories_meta: dict, lists_meta: dict, now: datetime, version: int
) -> tuple[list[SectionSpec], dict, tuple[int, int, int]]:
    if now.utcoffset() is None:
        raise ValueError("compile_policy needs a timezone-aware time")
    warnings: list[str] = []
    lists = _Lists()
    for name in categories_meta["categories"]:
        lists.add("category", name, Tier.TIER_CATEGORY)
    list_base = len(lists.names)
    # The lists image's lists keep its ids (one removed since matches no rule); a list made
    # since has no entries yet, or the image would have been rebuilt.
    for name in lists_meta["lists"]:
        lists.add("list", name, Tier.TIER_ADMIN)
    for admin_list in policy.lists:
        if ("list", admin_list.name) not in lists.ids:
            lists.add("list", admin_list.name, Tier.TIER_ADMIN)
    for override in policy.overrides:
        lists.add("override", str(override.id), Tier.TIER_OVERRIDE)
    if len(lists.names) > MAX_LIST_IDS:
        raise PolicyError(f"too many lists and overrides ({len(lists.names)}); at most {MAX_LIST_IDS}")

    if not policy.groups:
        # A fresh store (lists imported, no policy yet): one group that allows everything.
        policy = replace(policy, groups=(Group(policy.settings.default_group, "everyone"),))
    groups = {group.name: index for index, group in enumerate(policy.groups)}
    if policy.settings.default_group not in groups:
        raise PolicyError(f"settings.default_group {policy.settings.default_group!r} is not a group")
    schedules = {schedule.name: index for index, schedule in enumerate(policy.schedules)}
    aliases = {category.name: category.alias_of for category in policy.categories if category.alias_of}
    aliases.update(categories_meta.get("aliases", {}))

    # Names: overrides (admin list entries are in the lists image).
    domain_lines: dict[tuple[int, bool], list[str]] = {}
    for override in policy.overrides:
        domain_lines.setdefault((lists.ids[("override", str(override.id))], False), []).append(override.name)

    def add_sources(builder: DomainTableBuilder) -> None:
        for (list_id, exact), names in domain_lines.items():
            chunk = ("\n".join(names) + "\n").encode()
            builder.add_source(list_id, exact, lambda chunk=chunk: [chunk])

    names = _build_names([], add_sources)

    # Rules: per group and list, every rule entry (overrides carry their window).
    cells: dict[tuple[int, int], list[bytes]] = {}
    rule_meta = []
    positions: Counter[str] = Counter()
    for index, rule in enumerate(effective_rules(policy)):
        position = positions[rule.group]
        positions[rule.group] += 1
        if not rule.enabled:  # skipped, but counted: the later rules keep their stored positions
            continue
        rule_meta.append(
            {"group": rule.group, "position": position, "target_kind": rule.target_kind.value,
             "target": rule.target, "action": rule.action.value, "schedule": rule.schedule,
             "bypass_shield": index >= len(policy.rules)}
        )
        if rule.target_kind is TargetKind.CATEGORY:
            key = ("category", aliases.get(rule.target, rule.target))
            if key not in lists.ids:
                warnings.append(
                    f"group {rule.group!r} rule {position} ({rule.action} category {rule.target!r}) matches "
                    f"nothing: the category has no imported data"
                )
                continue
        else:
            key = ("list", rule.target)
        schedule = ALWAYS_SCHEDULE if rule.schedule is None else schedules[rule.schedule]
        cells.setdefault((groups[rule.group], lists.ids[key]), []).append(
            RULE_ENTRY.pack(ACTION_CODES[rule.action], 0, schedule, position, *FOREVER)
        )
    for override in policy.overrides:
        cells.setdefault((groups[override.group], lists.ids[("override", str(override.id))]), []).append(
            RULE_ENTRY.pack(
                ACTION_CODES[override.action], 0, ALWAYS_SCHEDULE, override.id,
                int(override.starts_at.timestamp()), int(override.expires_at.timestamp()),
            )
        )
    offsets, entries = [0], []
    for group in range(len(groups)):
        for list_id in range(len(lists.names)):
            entries.extend(cells.get((group, list_id), ()))
            offsets.append(len(entries))

    # Schedules: one bit per minute of the window.
    window_start = (now - SCHEDULE_LOOKBACK).replace(second=0, microsecond=0)
    window_minutes = int(SCHEDULE_WINDOW.total_seconds()) // 60
    zone = policy.settings.zone
    bitmaps = b"".join(active_minutes(schedule, zone, window_start, window_minutes) for schedule in policy.schedules)

    # Clients: source networks (longest prefix), MACs; interfaces are resolved by the worker.
    client_networks = [(network_span(m.cidr), groups[m.group]) for m in policy.clients if m.cidr]
    macs = sorted(int(m.mac.replace(":", ""), 16) << 16 | groups[m.group] for m in policy.clients if m.mac)

    sections = [
        names,
        *_client_address_sections(client_networks),
        SectionSpec.of_bytes("client_macs", struct.pack(f"<{len(macs)}Q", *macs)),
        SectionSpec.of_bytes("rule_cells", struct.pack(f"<{len(offsets)}I", *offsets)),
        SectionSpec.of_bytes("rule_entries", b"".join(entries)),
        SectionSpec.of_bytes("tiers", bytes(lists.tiers)),
        SectionSpec.of_bytes("schedules", bitmaps),
    ]
    meta = {
        "kind": "policy",
        "version": version,
        "categories_digest": categories_meta["digest"],
        "lists_digest": lists_meta["digest"],
        "list_base": list_base,
        "compiled_at": _now().isoformat(),
        "window_start_minute": int(window_start.timestamp()) // 60,
        "window_minutes": window_minutes,
        "settings": {
            "timezone": policy.settings.timezone,
            "default_group": policy.settings.default_group,
            "block_page_ipv4": policy.settings.block_page_ipv4,
            "block_page_ipv6": policy.settings.block_page_ipv6,
        },
        "default_group": groups[policy.settings.default_group],
        "groups": [
            {"name": g.name, "title": g.title, "default_action": g.default_action.value, "safe_search": g.safe_search,
             "quic": g.quic.value, "bypass_shield": g.bypass_shield, "log_client_address": g.log_client_address,
             "unnamed": effective_unnamed(g).value}
            for g in policy.groups
        ],
        "lists": [{"name": name, "kind": kind} for name, kind in zip(lists.names, lists.kinds)],
        "categories": {
            c.name: {"titles": c.titles, "alias_of": c.alias_of} for c in policy.categories
        },
        "rules": rule_meta,
        "overrides": [
            {"id": o.id, "group": o.group, "name": o.name, "action": o.action.value,
             "starts_at": o.starts_at.isoformat(), "expires_at": o.expires_at.isoformat(),
             "created_by": o.created_by, "reason": o.reason}
            for o in policy.overrides
        ],
        "interfaces": [
            {"interface": m.interface, "vlan": m.vlan, "group": groups[m.group]} for m in policy.clients if m.interface
        ],
        "schedules": [_schedule_meta(schedule) for schedule in policy.schedules],
        "warnings": warnings,
    }
    counts = (sum(len(names) for names in domain_lines.values()), 0, 0)
    return sections, meta, counts


def _schedule_meta(schedule: Schedule) -> dict:
    """A schedule as JSON, so an explanation can name the slot that made a rule active."""
    return {
        "name": schedule.name,
        "slots": [[slot.weekday, f"{slot.start:%H:%M}", f"{slot.end:%H:%M}"] for slot in schedule.slots],
        "exceptions": [
            [exception.day.isoformat(), [[f"{start:%H:%M}", f"{end:%H:%M}"] for start, end in exception.slots]]
            for exception in schedule.exceptions
        ],
    }



def _now() -> datetime:
    return datetime.now(timezone.utc)
