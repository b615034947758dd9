"""The schemas of every body the admin API reads or writes (OpenAPI components)."""

from __future__ import annotations

from edufilter.api.tokens import MAX_OVERRIDE_MINUTES, Role
from edufilter.api.validation import (
    Field,
    array,
    boolean,
    choice,
    component,
    date_time,
    host_name,
    integer,
    nullable,
    obj,
    page,
    resource,
    slug,
    text,
)
from edufilter.output.events import EventKind
from edufilter.output.stats import DIMENSIONS, WINDOWS
from edufilter.policy.model import (
    Action,
    AdminList,
    ClientMatch,
    EntryKind,
    Group,
    QuicMode,
    Schedule,
    Settings,
    TargetKind,
    UnnamedFlows,
)
from edufilter.policy.sources import ListFormat

GROUP = resource(
    "Group",
    {
        "name": Field(slug("group name"), required=True, identity=True),
        "title": Field(text(200)),
        "default_action": Field(choice(Action, description="what the group does when no rule matches")),
        "safe_search": Field(boolean(description="answer search engines' names with their SafeSearch addresses")),
        "quic": Field(choice(QuicMode)),
        "bypass_shield": Field(
            boolean(description="block DNS-over-HTTPS/TLS/QUIC, VPN and proxy categories, and ECH")
        ),
        "log_client_address": Field(boolean(description="keep raw client addresses in this group's events")),
        "unnamed": Field(choice(UnnamedFlows, description=(
            "flows without a readable name: allow (the address and the default action decide), block-web (TCP 80"
            " and 443 reset as evasion), block-all (also every other port but DNS and NTP), auto (block-web with"
            " the bypass shield, else allow)"))),
    },
    defaults_from=Group,
)

CLIENT = resource(
    "Client",
    {
        "id": Field(integer(1), read_only=True),
        "group": Field(slug("group name"), required=True),
        "cidr": Field(nullable(text(49)), identity=True),
        "interface": Field(nullable(text(15)), identity=True),
        "vlan": Field(nullable(integer(1, 4094)), identity=True),
        "mac": Field(nullable(text(17)), identity=True),
    },
    defaults_from=ClientMatch,
)

_LANGUAGE_TEXTS = {"type": "object", "additionalProperties": text(2000), "description": "language code -> text"}
CATEGORY = component(
    "Category",
    obj(
        {
            "name": slug("category name"),
            "source": text(200),
            "titles": _LANGUAGE_TEXTS,
            "descriptions": _LANGUAGE_TEXTS,
            "alias_of": nullable(slug("category name")),
        },
        required=["name", "source", "titles", "descriptions", "alias_of"],
    ),
)

LIST = resource(
    "List",
    {
        "name": Field(slug("list name"), required=True, identity=True),
        "description": Field(text(1000)),
        "entry_count": Field(integer(), read_only=True),
    },
    defaults_from=AdminList,
)

ENTRY = resource(
    "Entry",
    {
        "id": Field(integer(1), read_only=True),
        "kind": Field(choice(EntryKind), required=True, identity=True),
        "value": Field(text(2048, 1, description="stored normalised: lowercase name, network, host/path"),
                       required=True, identity=True),
    },
    updatable=False,
)

RULE = resource(
    "Rule",
    {
        "group": Field(slug("group name"), read_only=True),
        "position": Field(integer(0, 100_000, description="0-based order in the group; omitted: last on create, "
                                                          "unchanged on replace")),
        "target_kind": Field(choice(TargetKind), required=True),
        "target": Field(slug("category or list name"), required=True),
        "action": Field(choice(Action), required=True),
        "schedule": Field(nullable(slug("schedule name")), ),
        "enabled": Field(boolean(default=True, description="a disabled rule keeps its position but decides nothing")),
    },
)

_START = text(5, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="local time HH:MM")
_END = text(5, pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", description="local time HH:MM; 24:00 is midnight")
SLOT = component(
    "Slot",
    obj({"weekday": integer(0, 6, description="0 = Monday"), "start": _START, "end": _END},
        required=["weekday", "start", "end"]),
)
DAY_SLOT = component("DaySlot", obj({"start": _START, "end": _END}, required=["start", "end"]))
SCHEDULE_EXCEPTION = component(
    "ScheduleException",
    obj(
        {
            "day": {"type": "string", "format": "date", "maxLength": 10},
            "slots": array(DAY_SLOT, 48, description="the day's slots instead of the weekday's; none: closed"),
        },
        required=["day", "slots"],
    ),
)
SCHEDULE = resource(
    "Schedule",
    {
        "name": Field(slug("schedule name"), required=True, identity=True),
        "slots": Field(array(SLOT, 7 * 48), required=True),
        "exceptions": Field(array(SCHEDULE_EXCEPTION, 400)),
    },
    defaults_from=Schedule,
)

OVERRIDE = component(
    "Override",
    obj(
        {
            "id": integer(1),
            "group": slug("group name"),
            "name": text(253),
            "action": choice(Action),
            "starts_at": date_time(),
            "expires_at": date_time(),
            "created_by": text(200),
            "reason": text(500),
            "active": boolean(description="whether now is in [starts_at, expires_at)"),
        },
        required=["id", "group", "name", "action", "starts_at", "expires_at", "created_by", "reason", "active"],
    ),
)
OVERRIDE_CREATE = component(
    "OverrideCreate",
    obj(
        {
            "group": slug("group name"),
            "name": host_name("the site; its subdomains are included, a public suffix (com, co.uk) never"),
            "minutes": integer(1, MAX_OVERRIDE_MINUTES, description="from now; at most the token's max_minutes"),
            "action": choice(Action, default=Action.ALLOW.value),
            "reason": text(500, default=""),
        },
        required=["group", "name", "minutes"],
    ),
)

SETTINGS = resource(
    "Settings",
    {
        "timezone": Field(text(64, 1, description="the school's IANA time zone, e.g. Europe/Brussels")),
        "default_group": Field(slug("group name")),
        "block_page_ipv4": Field(text(15, 1)),
        "block_page_ipv6": Field(text(45, 1)),
    },
    defaults_from=Settings,
    creatable=False,
)

TOKEN = resource(
    "Token",
    {
        "name": Field(slug("token name"), required=True, identity=True),
        "role": Field(choice(Role), required=True),
        "groups": Field(array(slug("group name"), 100, description="teacher tokens: the groups they may override")),
        "max_minutes": Field(nullable(integer(1, MAX_OVERRIDE_MINUTES, description="longest override allowed"))),
        "site": Field(nullable(text(31, description="multi-site mode: the site the token is limited to; null: "
                                                    "the school, or the whole group")), read_only=True),
        "created_at": Field(date_time(), read_only=True),
        "revoked_at": Field(nullable(date_time()), read_only=True),
    },
    updatable=False,
)
TOKEN_CREATED = component(
    "TokenCreated",
    obj(
        {
            "name": slug("token name"),
            "role": choice(Role),
            "groups": array(slug("group name"), 100),
            "max_minutes": nullable(integer(1, MAX_OVERRIDE_MINUTES)),
            "site": nullable(text(31)),
            "created_at": date_time(),
            "revoked_at": nullable(date_time()),
            "token": text(100, description="the bearer secret: shown this once, stored only as a digest"),
        },
        required=["name", "role", "groups", "max_minutes", "site", "created_at", "revoked_at", "token"],
    ),
)

UPLOAD_STATES = ("queued", "reading", "storing", "applying", "done", "failed", "cancelled")
UPLOAD_MODES = ("append", "replace")
BAD_LINE = component(
    "BadLine",
    obj({"line_number": integer(1), "text": {"type": "string", "maxLength": 1000,
                                              "description": "the line as read, any character included"},
         "reason": text(200)},
        required=["line_number", "text", "reason"]),
)
UPLOAD = component(
    "Upload",
    obj(
        {
            "id": text(32),
            "list": slug("list name"),
            "format": choice(ListFormat),
            "mode": {"type": "string", "enum": list(UPLOAD_MODES)},
            "state": {"type": "string", "enum": list(UPLOAD_STATES)},
            "bytes": integer(description="size of the uploaded file"),
            "bytes_read": integer(description="how much of the file has been read: the reading's progress"),
            "entries_read": integer(),
            "bad_line_count": integer(),
            "bad_lines": array(BAD_LINE, 100, description="the first bad lines"),
            "refused_count": integer(description="entries the list may not hold: public suffixes such as co.uk"),
            "refused": array(text(1000), 100, description="why the first refused entries were refused"),
            "added": nullable(integer(description="entries the list did not have yet")),
            "policy_version": nullable(integer(description="the version that holds the upload")),
            "error": nullable(text(2000)),
            "created_at": date_time(),
            "finished_at": nullable(date_time()),
        },
        required=[
            "id", "list", "format", "mode", "state", "bytes", "bytes_read", "entries_read", "bad_line_count",
            "bad_lines", "refused_count", "refused", "added", "policy_version", "error", "created_at", "finished_at",
        ],
    ),
)

CHECK_CLIENT = obj(
    {
        "address": text(45, 1, description="IPv4 or IPv6 source address"),
        "mac": nullable(text(17)),
        "interface": nullable(text(15)),
        "vlan": nullable(integer(1, 4094)),
    },
    required=["address"],
)
CHECK_AT = date_time(description="the moment to decide for; default now")
CHECK_REQUEST = component(
    "CheckRequest",
    obj({"target": text(2048, 1, description="a host name or a URL"), "client": CHECK_CLIENT, "at": CHECK_AT},
        required=["target", "client"]),
)
_EXPLAINED_RULE = obj(
    {"group": slug("group name"), "position": integer(), "target_kind": choice(TargetKind),
     "target": slug("category or list name"), "action": choice(Action), "schedule": nullable(slug("schedule name")),
     "bypass_shield": boolean(description="a rule the group's bypass shield adds, after the group's own")},
    required=["group", "position", "target_kind", "target", "action", "schedule", "bypass_shield"],
)
_EXPLAINED_OVERRIDE = obj(
    {"id": integer(1), "group": slug("group name"), "name": text(253), "action": choice(Action),
     "starts_at": date_time(), "expires_at": date_time(), "created_by": text(200), "reason": text(500)},
    required=["id", "group", "name", "action", "starts_at", "expires_at", "created_by", "reason"],
)
EXPLANATION = component(
    "Explanation",
    obj(
        {
            "target": text(2048),
            "group": slug("group name"),
            "group_match": {"type": "string", "enum": ["mac", "interface", "cidr", "default"]},
            "action": choice(Action),
            "decided_by": {"type": "string", "enum": ["override", "admin list", "category", "group default"]},
            "list": nullable(text(100, description="category or admin list; override:<id>")),
            "list_title": nullable(text(2000, description="a category's title (English, else any)")),
            "match": nullable({"type": "string", "enum": ["url", "name", "address"]}),
            "matched": nullable(text(2048, description="the matched suffix, network or URL prefix")),
            "rule": nullable(_EXPLAINED_RULE),
            "override": nullable(_EXPLAINED_OVERRIDE),
            "schedule_slot": nullable(text(100, description="the slot that made a scheduled rule active")),
            "at": date_time(description="the moment decided for, on the school's clock"),
            "policy_version": integer(description="the policy version of the image that decided"),
        },
        required=[
            "target", "group", "group_match", "action", "decided_by", "list", "list_title", "match", "matched",
            "rule", "override", "schedule_slot", "at", "policy_version",
        ],
        description="the decision and why, as `edufilter check` explains it",
    ),
)

STATUS = component(
    "Status",
    obj(
        {
            "policy_version": integer(description="the version stored in the policy database"),
            "live_version": nullable(integer(description="the version the last successful apply made live")),
            "applies": integer(),
            "apply_failures": integer(),
            "last_apply_error": nullable(text(2000)),
            "uploads_running": integer(),
            "daemon": nullable({"type": "object", "description": "the daemon's status (run/status.json)"}),
        },
        required=[
            "policy_version", "live_version", "applies", "apply_failures", "last_apply_error", "uploads_running",
            "daemon",
        ],
    ),
)
STATS_ROW = component(
    "StatsRow",
    obj(
        {
            "start": date_time(description="start of the time bucket (UTC)"),
            "key": nullable(text(200, description="the group, category (null: a group's default) or verdict")),
            "flows": integer(),
            "packets": integer(),
        },
        required=["start", "key", "flows", "packets"],
    ),
)
STATS = component(
    "Stats",
    obj(
        {
            "window": {"type": "string", "enum": list(WINDOWS)},
            "by": {"type": "string", "enum": list(DIMENSIONS)},
            "rows": array(STATS_ROW, 100_000, description="totals per bucket and key; empty buckets left out"),
        },
        required=["window", "by", "rows"],
    ),
)
EVENT = component(
    "Event",
    obj(
        {
            "time": date_time(),
            "group": slug("group name"),
            "category": nullable(slug("category or list name")),
            "name": nullable(text(300)),
            "destination": nullable(text(300, description="address:port, when there is no name")),
            "kind": choice(EventKind),
            "action": slug("action"),
            "client": text(300, description="pseudonym of the client address, stable for one school day"),
            "client_address": nullable(text(300, description="only when the group's policy logs addresses")),
            "reference": text(8, description="the code shown on the block page"),
            "worker": integer(),
        },
        required=[
            "time", "group", "category", "name", "destination", "kind", "action", "client", "client_address",
            "reference", "worker",
        ],
    ),
)

AUDIT_ENTRY = component(
    "AuditEntry",
    obj(
        {
            "id": integer(1),
            "at": date_time(),
            "token": text(200),
            "role": text(20),
            "method": text(20),
            "path": text(4096),
            "site": nullable(text(31, description="multi-site mode: the site the change concerns; null: the "
                                                  "school's own or the group's")),
            "kind": text(40),
            "object_id": text(4096),
            "before": {"type": ["object", "null"], "description": "the object before the change"},
            "after": {"type": ["object", "null"], "description": "the object after the change"},
            "policy_version": integer(),
        },
        required=[
            "id", "at", "token", "role", "method", "path", "site", "kind", "object_id", "before", "after",
            "policy_version",
        ],
    ),
)

APPLIED = component("Applied", obj({"live_version": integer()}, required=["live_version"]))
HEALTH = component("Health", obj({"status": {"type": "string", "enum": ["ok"]}}, required=["status"]))
PROBLEM = component(
    "Problem",
    {
        "type": "object",
        "description": "RFC 9457 problem details",
        "properties": {
            "type": text(200),
            "title": text(200),
            "status": integer(100, 599),
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "invalid_params": array(
                obj({"name": {"type": "string"}, "reason": {"type": "string"}}, required=["name", "reason"])
            ),
        },
        "required": ["type", "title", "status", "detail"],
    },
)

GROUP_PAGE = page(GROUP.representation, "GroupPage")
CLIENT_PAGE = page(CLIENT.representation, "ClientPage")
CATEGORY_PAGE = page(CATEGORY, "CategoryPage")
LIST_PAGE = page(LIST.representation, "ListPage")
ENTRY_PAGE = page(ENTRY.representation, "EntryPage")
RULE_PAGE = page(RULE.representation, "RulePage")
SCHEDULE_PAGE = page(SCHEDULE.representation, "SchedulePage")
OVERRIDE_PAGE = page(OVERRIDE, "OverridePage")
TOKEN_PAGE = page(TOKEN.representation, "TokenPage")
UPLOAD_PAGE = page(UPLOAD, "UploadPage")
AUDIT_PAGE = page(AUDIT_ENTRY, "AuditPage")
EVENT_PAGE = page(EVENT, "EventPage")
