"""The policy objects in one SQLite file: numbered migrations, one transaction per change.

Every change runs in one write transaction, is validated first (PolicyError names the
field), and bumps `policy_version`, so a compile can record which version it compiled.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, time, timezone
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from edufilter.errors import PolicyError, StorageFullError, StoreBusyError
from edufilter.policy.model import (
    Action,
    AdminList,
    Category,
    ClientMatch,
    DatedException,
    EntryKind,
    Group,
    ListEntry,
    Override,
    Policy,
    QuicMode,
    Rule,
    Schedule,
    Settings,
    TargetKind,
    TimeSlot,
    UnnamedFlows,
    check_id,
    check_mac,
    parse_entry,
)
from edufilter.policy.schedule import check_schedule
from edufilter.policy.suffixes import Scope, refuse_public_suffix

# Index n holds the script that takes the schema from version n to n + 1; append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE policy_version (version INTEGER NOT NULL);
    INSERT INTO policy_version (version) VALUES (0);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE categories (
        name TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        titles TEXT NOT NULL,
        descriptions TEXT NOT NULL,
        alias_of TEXT REFERENCES categories (name) DEFERRABLE INITIALLY DEFERRED
    );
    CREATE TABLE lists (name TEXT PRIMARY KEY, description TEXT NOT NULL);
    CREATE TABLE list_entries (
        id INTEGER PRIMARY KEY,
        list TEXT NOT NULL REFERENCES lists (name) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        UNIQUE (list, kind, value)
    );
    CREATE TABLE groups (
        name TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        default_action TEXT NOT NULL,
        safe_search INTEGER NOT NULL,
        quic TEXT NOT NULL,
        bypass_shield INTEGER NOT NULL,
        log_client_address INTEGER NOT NULL
    );
    CREATE TABLE clients (
        id INTEGER PRIMARY KEY,
        group_name TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
        cidr TEXT UNIQUE,
        interface TEXT,
        vlan INTEGER,
        mac TEXT UNIQUE,
        CHECK ((cidr IS NOT NULL) + (interface IS NOT NULL) + (mac IS NOT NULL) = 1)
    );
    CREATE UNIQUE INDEX clients_interface ON clients (interface, ifnull(vlan, -1))
        WHERE interface IS NOT NULL;
    CREATE TABLE schedules (name TEXT PRIMARY KEY);
    CREATE TABLE schedule_slots (
        id INTEGER PRIMARY KEY,
        schedule TEXT NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
        weekday INTEGER NOT NULL CHECK (weekday BETWEEN 0 AND 6),
        starts TEXT NOT NULL,
        ends TEXT NOT NULL
    );
    CREATE TABLE schedule_exceptions (
        id INTEGER PRIMARY KEY,
        schedule TEXT NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
        day TEXT NOT NULL,
        UNIQUE (schedule, day)
    );
    CREATE TABLE exception_slots (
        id INTEGER PRIMARY KEY,
        exception INTEGER NOT NULL REFERENCES schedule_exceptions (id) ON DELETE CASCADE,
        starts TEXT NOT NULL,
        ends TEXT NOT NULL
    );
    CREATE TABLE rules (
        id INTEGER PRIMARY KEY,
        group_name TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        category TEXT REFERENCES categories (name),
        list TEXT REFERENCES lists (name),
        action TEXT NOT NULL,
        schedule TEXT REFERENCES schedules (name),
        CHECK ((category IS NULL) <> (list IS NULL))
    );
    CREATE INDEX rules_order ON rules (group_name, position);
    CREATE TABLE overrides (
        id INTEGER PRIMARY KEY,
        group_name TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        action TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX overrides_expiry ON overrides (expires_at);
    """,
    # Admin API tokens (only a SHA-256 digest of each secret) and the audit log, kept with
    # the policy so that a change and its audit row commit in one transaction.
    """
    CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        secret_sha256 TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        groups TEXT NOT NULL,
        max_minutes INTEGER,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        token TEXT NOT NULL,
        role TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        object_id TEXT NOT NULL,
        before TEXT,
        after TEXT,
        policy_version INTEGER NOT NULL
    );
    CREATE INDEX audit_object ON audit_log (kind, object_id);
    """,
    # Which admin-list contents the store holds, as a random value that changes with every
    # entry written or removed (cascades included): the lists image records the value it was
    # compiled from, so a change elsewhere recompiles the small policy image only.
    """
    CREATE TABLE lists_revision (value INTEGER NOT NULL);
    INSERT INTO lists_revision (value) VALUES (random());
    CREATE TRIGGER list_entries_inserted AFTER INSERT ON list_entries
    BEGIN UPDATE lists_revision SET value = random(); END;
    CREATE TRIGGER list_entries_updated AFTER UPDATE ON list_entries
    BEGIN UPDATE lists_revision SET value = random(); END;
    CREATE TRIGGER list_entries_deleted AFTER DELETE ON list_entries
    BEGIN UPDATE lists_revision SET value = random(); END;
    """,
    # What a group's flows without a readable name get (model.UnnamedFlows).
    """
    ALTER TABLE groups ADD COLUMN unnamed TEXT NOT NULL DEFAULT 'auto';
    """,
    # Review requests from the block page ("this should not be blocked"): no pupil identity.
    """
    CREATE TABLE review_requests (
        id INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        name TEXT NOT NULL,
        category TEXT NOT NULL,
        group_name TEXT NOT NULL,
        reference TEXT NOT NULL UNIQUE,
        reason TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'approved', 'declined')),
        decision TEXT,
        decision_target TEXT,
        decided_at TEXT,
        decided_by TEXT
    );
    CREATE INDEX review_requests_state ON review_requests (state, id);
    """,
    # A rule switched off keeps its place (the console's enable/disable).
    """
    ALTER TABLE rules ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
    """,
    # Multi-site mode: a token's scope (a site, or NULL for the school or the whole group) and
    # the site each audited change concerns (NULL: the school's own, or the group's policy).
    """
    ALTER TABLE api_tokens ADD COLUMN site TEXT;
    ALTER TABLE audit_log ADD COLUMN site TEXT;
    CREATE INDEX audit_site ON audit_log (site, id);
    """,
)

BUSY_TIMEOUT_MS = 5000
SQLITE_FULL = 13  # "database or disk is full"
MAX_PENDING_REVIEWS = 1000  # block-page requests waiting at once; more are refused, not stored

# Whether a name of some kind exists: kinds are "groups", "categories", "lists", "schedules",
# and "aliases" (categories that are an alias of another).
Known = Callable[[str, str], bool]

_KNOWN_QUERIES = {
    "groups": "SELECT 1 FROM groups WHERE name = ?",
    "categories": "SELECT 1 FROM categories WHERE name = ?",
    "aliases": "SELECT 1 FROM categories WHERE name = ? AND alias_of IS NOT NULL",
    "lists": "SELECT 1 FROM lists WHERE name = ?",
    "schedules": "SELECT 1 FROM schedules WHERE name = ?",
}
_INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # Linux IFNAMSIZ leaves 15 characters

E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, as the audit log records it: token name and role, request line,
    and the site the change concerns in multi-site mode."""

    token: str
    role: str
    method: str
    path: str
    site: str | None = None


@dataclass(slots=True)
class AuditedChange:
    """The object one audited transaction changes; the caller sets before/after (JSON-ready)."""

    db: sqlite3.Connection
    kind: str
    object_id: str
    before: object = None
    after: object = None


@dataclass(frozen=True, slots=True)
class CompileView:
    """The policy as a compile reads it: every object but the list entries, which it reads
    list by list (and only when the lists revision differs from the lists image's)."""

    db: sqlite3.Connection
    version: int
    lists_revision: int
    policy: Policy

    def values(self, list_name: str, kind: EntryKind) -> Iterator[str]:
        return list_values(self.db, list_name, kind)


class PolicyStore:
    """The policy objects of one school in one SQLite file (WAL, foreign keys on)."""

    def __init__(self, path: Path | str, reader: bool = False) -> None:
        """reader: a read-only connection to a database another connection has opened (and
        so checked and migrated); in WAL its reads proceed while a write transaction runs."""
        self.path = Path(path)
        with self._errors():
            self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            with self._errors():
                self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                if reader:
                    self._db.execute("PRAGMA query_only = ON")
                    if self._schema_version() != len(MIGRATIONS):
                        raise PolicyError(f"{self.path}: the policy database needs its migrations first")
                    return
                self._db.execute("PRAGMA foreign_keys = ON")
                self._db.execute("PRAGMA journal_mode = WAL")
                problems = [row[0] for row in self._db.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise PolicyError(f"{self.path}: policy database is damaged: {problems[0]}")
                self._migrate()
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def for_reading(cls, path: Path | str) -> PolicyStore:
        """A read-only connection when the database exists and is migrated (its pages are not
        checked: that reads the whole file), else a full open that makes or migrates it."""
        if Path(path).exists():
            try:
                return cls(path, reader=True)
            except PolicyError:
                pass
        return cls(path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PolicyStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _migrate(self) -> None:
        if self._schema_version() == len(MIGRATIONS):
            return
        with self._transaction():
            # Read again under the write lock: another process may have migrated meanwhile.
            known = self._schema_version()
            if known == 0 and self._db.execute("SELECT 1 FROM sqlite_master").fetchone():
                raise PolicyError(f"{self.path}: an SQLite file, but not an edufilter policy database")
            self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            for script in MIGRATIONS[known:]:
                for statement in _statements(script):
                    self._db.execute(statement)
            self._db.execute("DELETE FROM schema_version")
            self._db.execute("INSERT INTO schema_version (version) VALUES (?)", (len(MIGRATIONS),))

    def _schema_version(self) -> int:
        if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone():
            return 0
        row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] or 0
        if version > len(MIGRATIONS):
            raise PolicyError(
                f"{self.path}: policy database schema version {version} is newer than this "
                f"edufilter knows ({len(MIGRATIONS)}); upgrade edufilter"
            )
        return int(version)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            if (getattr(error, "sqlite_errorcode", 0) & 0xFF) == SQLITE_FULL:
                raise StorageFullError(f"{self.path}: the disk is full: the change was not stored") from error
            if getattr(error, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise StoreBusyError(
                    f"{self.path}: the policy database is busy with another change ({error}); try again"
                ) from error
            raise PolicyError(f"{self.path}: policy database error: {error}") from error

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self._db.in_transaction:
            # Inside audited(): the outer transaction commits or rolls back everything.
            with self._errors():
                yield self._db
            return
        with self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _change(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that bumps policy_version when it changed the policy."""
        with self._transaction() as db:
            before = db.total_changes
            # An update that writes the values a row already had changes rows, not the policy.
            # List entries are compared by their revision, not read: they can be millions.
            old_policy, old_lists = _read_policy(db, with_entries=False), _lists_revision(db)
            yield db
            if db.total_changes != before and (
                _lists_revision(db) != old_lists or _read_policy(db, with_entries=False) != old_policy
            ):
                db.execute("UPDATE policy_version SET version = version + 1")

    @contextmanager
    def audited(self, actor: Actor, kind: str, object_id: str) -> Iterator[AuditedChange]:
        """One write transaction for the changes made inside it and their audit row.

        Store methods called inside join the transaction; when any row changed, one
        audit_log row (actor, object, the before/after the caller set) commits with them.
        """
        with self._transaction() as db:
            change = AuditedChange(db, kind, object_id)
            changes_before, version_before = db.total_changes, _policy_version(db)
            yield change
            # Rows rewritten with the values they had (a PATCH that changes nothing) are no change.
            changed = change.before != change.after or _policy_version(db) != version_before
            if db.total_changes != changes_before and changed:
                _insert_audit(db, actor, change)

    def record_external(self, actor: Actor, kind: str, object_id: str, before: object, after: object) -> None:
        """The audit row of a change made elsewhere (a hub part stored in NATS)."""
        with self._transaction() as db:
            _insert_audit(db, actor, AuditedChange(db, kind, object_id, before, after))

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one read transaction, for consistent multi-query reads."""
        with self._errors():
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def _known(self, kind: str, name: str) -> bool:
        return self._db.execute(_KNOWN_QUERIES[kind], (name,)).fetchone() is not None

    def _require(self, kind: str, name: str, what: str) -> None:
        if not self._known(kind, name):
            raise PolicyError(f"{what} {name!r} does not exist")

    # Reading

    @property
    def version(self) -> int:
        with self._errors():
            return _policy_version(self._db)

    def load(self) -> Policy:
        return self.load_with_version()[1]

    def load_with_version(self) -> tuple[int, Policy]:
        """The policy and its policy_version, read from one snapshot."""
        with self.snapshot() as db:
            return _policy_version(db), _read_policy(db)

    @contextmanager
    def compile_view(self) -> Iterator[CompileView]:
        """What a compile reads, from one snapshot held until the block ends."""
        with self.snapshot() as db:
            yield CompileView(db, _policy_version(db), _lists_revision(db), _read_policy(db, with_entries=False))

    # Whole policy

    def replace_all(self, policy: Policy) -> None:
        """Replace every object in the store by those of `policy`, all or nothing."""
        policy = check_policy(policy)
        with self._change() as db:
            old_entries, old_revision = _entries_by_list(db), _lists_revision(db)
            for table in (
                "overrides", "rules", "clients", "exception_slots", "schedule_exceptions",
                "schedule_slots", "schedules", "list_entries", "lists", "groups", "categories",
                "settings",
            ):
                db.execute(f"DELETE FROM {table}")
            for category in policy.categories:
                _insert_category(db, category)
            for admin_list in policy.lists:
                _insert_list(db, admin_list)
            for group in policy.groups:
                _insert_group(db, group)
            for schedule in policy.schedules:
                _insert_schedule(db, schedule)
            _write_settings(db, policy.settings)
            for match in policy.clients:
                _insert_client(db, match)
            positions: dict[str, int] = {}
            for rule in policy.rules:
                positions[rule.group] = positions.get(rule.group, -1) + 1
                _insert_rule(db, rule, positions[rule.group])
            for override in policy.overrides:
                _insert_override(db, override, keep_id=True)
            if _entries_by_list(db) == old_entries:
                # The same entries written again: the lists image compiled from them still holds.
                db.execute("UPDATE lists_revision SET value = ?", (old_revision,))

    # Settings

    def set_settings(self, settings: Settings) -> None:
        with self._change() as db:
            _write_settings(db, checked_settings(settings, self._known))

    # Categories

    def add_category(self, category: Category) -> None:
        with self._change() as db:
            if self._known("categories", category.name):
                raise PolicyError(f"category {category.name!r} already exists")
            _insert_category(db, checked_category(category, self._known))

    def update_category(self, category: Category) -> None:
        with self._change() as db:
            self._require("categories", category.name, "category")
            category = checked_category(category, self._known)
            if category.alias_of is not None:
                self._refuse_use(
                    "categories", category.name, "alias_of", "made an alias: categories {users} are aliases of it"
                )
            db.execute(
                "UPDATE categories SET source = ?, titles = ?, descriptions = ?, alias_of = ? WHERE name = ?",
                _category_row(category)[1:] + (category.name,),
            )

    def remove_category(self, name: str) -> None:
        with self._change() as db:
            self._require("categories", name, "category")
            self._refuse_use("rules", name, "category", "removed: rules of groups {users} use it")
            self._refuse_use("categories", name, "alias_of", "removed: categories {users} are aliases of it")
            db.execute("DELETE FROM categories WHERE name = ?", (name,))

    def _refuse_use(self, table: str, name: str, column: str, problem: str) -> None:
        user_column = "group_name" if table == "rules" else "name"
        users = sorted(
            {row[0] for row in self._db.execute(f"SELECT {user_column} FROM {table} WHERE {column} = ?", (name,))}
        )
        if users:
            raise PolicyError(f"{name!r} cannot be {problem.format(users=', '.join(users))}")

    # Admin lists

    def add_list(self, admin_list: AdminList) -> None:
        with self._change() as db:
            if self._known("lists", admin_list.name):
                raise PolicyError(f"list {admin_list.name!r} already exists")
            _insert_list(db, checked_list(admin_list))

    def set_list_description(self, name: str, description: str) -> None:
        """Change a list's description; its entries stay as they are."""
        with self._change() as db:
            self._require("lists", name, "list")
            db.execute("UPDATE lists SET description = ? WHERE name = ?", (_text(description, "list.description"), name))

    def update_list(self, admin_list: AdminList) -> None:
        """Replace the description and all entries of an existing list."""
        with self._change() as db:
            self._require("lists", admin_list.name, "list")
            admin_list = checked_list(admin_list)
            db.execute("UPDATE lists SET description = ? WHERE name = ?", (admin_list.description, admin_list.name))
            if tuple(_entries_by_list(db, admin_list.name).get(admin_list.name, ())) == admin_list.entries:
                return  # the same entries: rewriting them would only change the lists revision
            db.execute("DELETE FROM list_entries WHERE list = ?", (admin_list.name,))
            for entry in admin_list.entries:
                _insert_entry(db, admin_list.name, entry)

    def remove_list(self, name: str) -> None:
        with self._change() as db:
            self._require("lists", name, "list")
            self._refuse_use("rules", name, "list", "removed: rules of groups {users} use it")
            db.execute("DELETE FROM lists WHERE name = ?", (name,))

    def add_list_entry(self, list_name: str, entry: ListEntry) -> ListEntry:
        """Add one entry (normalised and returned); a list holds each entry once."""
        entry = _checked_entry(entry, "entry")
        with self._change() as db:
            self._require("lists", list_name, "list")
            if _has_entry(db, list_name, entry):
                raise PolicyError(f"list {list_name!r} already has {entry.kind} entry {entry.value!r}")
            _insert_entry(db, list_name, entry)
        return entry

    def add_list_entries(self, list_name: str, entries: Iterable[ListEntry], replace_all: bool = False) -> int:
        """Add many entries at once (an upload), skipping those the list has; returns how many
        were added. With replace_all the list holds exactly the given entries afterwards."""
        checked = [_checked_entry(entry, "entry") for entry in entries]
        with self._change() as db:
            self._require("lists", list_name, "list")
            if replace_all:
                db.execute("DELETE FROM list_entries WHERE list = ?", (list_name,))
            # rowcount, not total_changes: that counts the lists-revision trigger's updates too.
            return db.executemany(
                "INSERT OR IGNORE INTO list_entries (list, kind, value) VALUES (?, ?, ?)",
                [(list_name, entry.kind.value, entry.value) for entry in checked],
            ).rowcount

    # Uploads (api/uploads.py) -------------------------------------------------------------
    # A file's entries are staged in this connection's temporary table while the file is
    # read (no write lock held, memory bounded by SQLite's page cache), then added to the
    # list in one write transaction.

    def stage_list_entries(self, entries: Iterable[ListEntry]) -> int:
        """Stage entries that parse_entry made, each once in first-seen order, replacing what
        was staged before; returns how many are staged. An error from `entries` stages none."""
        with self._errors():
            self._db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS staged_entries"
                " (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL, UNIQUE (kind, value))"
            )
            self._db.execute("BEGIN")  # touches only the temporary database: no lock on the policy
            try:
                self._db.execute("DELETE FROM temp.staged_entries")
                self._db.executemany(
                    "INSERT OR IGNORE INTO temp.staged_entries (kind, value) VALUES (?, ?)",
                    ((entry.kind.value, entry.value) for entry in entries),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return int(self._db.execute("SELECT count(*) FROM temp.staged_entries").fetchone()[0])

    def add_staged_list_entries(self, list_name: str, replace_all: bool = False) -> int:
        """Add the staged entries to a list in their order, skipping those it has (with
        replace_all, the list holds exactly them afterwards); returns how many were added."""
        with self._transaction() as db:
            self._require("lists", list_name, "list")
            removed = db.execute("DELETE FROM list_entries WHERE list = ?", (list_name,)).rowcount if replace_all else 0
            added = db.execute(
                "INSERT OR IGNORE INTO list_entries (list, kind, value)"
                " SELECT ?, kind, value FROM temp.staged_entries ORDER BY seq",
                (list_name,),
            ).rowcount
            if removed or added:
                db.execute("UPDATE policy_version SET version = version + 1")
            return int(added)

    def stop_when(self, stop: Callable[[], bool]) -> None:
        """Make a statement of this connection stop once stop() is true (asked every few
        thousand SQLite instructions): it raises PolicyError and its transaction rolls back."""
        self._db.set_progress_handler(lambda: 1 if stop() else 0, 10_000)

    # ---------------------------------------------------------------------------------------

    def remove_list_entry(self, list_name: str, entry: ListEntry) -> None:
        entry = _checked_entry(entry, "entry")
        with self._change() as db:
            self._require("lists", list_name, "list")
            if not _has_entry(db, list_name, entry):
                raise PolicyError(f"list {list_name!r} has no {entry.kind} entry {entry.value!r}")
            db.execute(
                "DELETE FROM list_entries WHERE list = ? AND kind = ? AND value = ?",
                (list_name, entry.kind.value, entry.value),
            )

    # Groups

    def add_group(self, group: Group) -> None:
        with self._change() as db:
            if self._known("groups", group.name):
                raise PolicyError(f"group {group.name!r} already exists")
            _insert_group(db, checked_group(group))

    def update_group(self, group: Group) -> None:
        with self._change() as db:
            self._require("groups", group.name, "group")
            db.execute(
                "UPDATE groups SET title = ?, default_action = ?, safe_search = ?, quic = ?,"
                " bypass_shield = ?, log_client_address = ?, unnamed = ? WHERE name = ?",
                _group_row(checked_group(group))[1:] + (group.name,),
            )

    def remove_group(self, name: str) -> None:
        """Remove a group with its client matches, rules and overrides; never the default group."""
        with self._change() as db:
            self._require("groups", name, "group")
            if _read_settings(db).default_group == name:
                raise PolicyError(f"group {name!r} cannot be removed: it is settings.default_group")
            db.execute("DELETE FROM groups WHERE name = ?", (name,))

    # Client matches, identified by their CIDR, interface and VLAN, or MAC

    def add_client(self, match: ClientMatch) -> None:
        match = checked_client(match, self._known)
        with self._change() as db:
            if _client_id(db, match) is not None:
                raise PolicyError(f"a client match for {_client_key(match)} already exists")
            _insert_client(db, match)

    def update_client(self, match: ClientMatch) -> None:
        """Move the existing match with the same CIDR, interface/VLAN or MAC to match.group."""
        match = checked_client(match, self._known)
        with self._change() as db:
            client_id = _client_id(db, match)
            if client_id is None:
                raise PolicyError(f"there is no client match for {_client_key(match)}")
            db.execute("UPDATE clients SET group_name = ? WHERE id = ?", (match.group, client_id))

    def remove_client(self, match: ClientMatch) -> None:
        match = checked_client(match, self._known)
        with self._change() as db:
            client_id = _client_id(db, match)
            if client_id is None:
                raise PolicyError(f"there is no client match for {_client_key(match)}")
            db.execute("DELETE FROM clients WHERE id = ?", (client_id,))

    # Rules, ordered within their group by a 0-based position

    def add_rule(self, rule: Rule, position: int | None = None) -> int:
        """Insert the rule at `position` in its group (default: last); returns the position."""
        with self._change() as db:
            rule = checked_rule(rule, self._known)
            count = _rule_count(db, rule.group)
            if position is None:
                position = count
            if type(position) is not int or not 0 <= position <= count:
                raise PolicyError(f"rule position {position!r} is not in 0..{count} for group {rule.group!r}")
            db.execute(
                "UPDATE rules SET position = position + 1 WHERE group_name = ? AND position >= ?",
                (rule.group, position),
            )
            _insert_rule(db, rule, position)
        return position

    def update_rule(self, rule: Rule, position: int) -> None:
        """Replace the rule at `position` in rule.group."""
        with self._change() as db:
            rule = checked_rule(rule, self._known)
            _require_rule(db, rule.group, position)
            db.execute("DELETE FROM rules WHERE group_name = ? AND position = ?", (rule.group, position))
            _insert_rule(db, rule, position)

    def remove_rule(self, group: str, position: int) -> None:
        with self._change() as db:
            self._require("groups", group, "group")
            _require_rule(db, group, position)
            db.execute("DELETE FROM rules WHERE group_name = ? AND position = ?", (group, position))
            db.execute(
                "UPDATE rules SET position = position - 1 WHERE group_name = ? AND position > ?",
                (group, position),
            )

    # Schedules

    def add_schedule(self, schedule: Schedule) -> None:
        schedule = check_schedule(schedule)
        with self._change() as db:
            if self._known("schedules", schedule.name):
                raise PolicyError(f"schedule {schedule.name!r} already exists")
            _insert_schedule(db, schedule)

    def update_schedule(self, schedule: Schedule) -> None:
        """Replace the slots and exceptions of an existing schedule."""
        schedule = check_schedule(schedule)
        with self._change() as db:
            self._require("schedules", schedule.name, "schedule")
            db.execute("DELETE FROM schedule_slots WHERE schedule = ?", (schedule.name,))
            db.execute("DELETE FROM schedule_exceptions WHERE schedule = ?", (schedule.name,))
            _insert_schedule_times(db, schedule)

    def remove_schedule(self, name: str) -> None:
        with self._change() as db:
            self._require("schedules", name, "schedule")
            self._refuse_use("rules", name, "schedule", "removed: rules of groups {users} use it")
            db.execute("DELETE FROM schedules WHERE name = ?", (name,))

    # Overrides

    def add_override(
        self,
        group: str,
        name: str,
        action: Action,
        starts_at: datetime,
        expires_at: datetime,
        created_by: str = "",
        reason: str = "",
    ) -> Override:
        """Store a new override and return it with the id the store gave it."""
        with self._change() as db:
            override = checked_override(
                Override(0, group, name, action, starts_at, expires_at, created_by, reason), self._known
            )
            return replace(override, id=_insert_override(db, override, keep_id=False))

    def update_override(self, override: Override) -> None:
        with self._change() as db:
            override = checked_override(override, self._known)
            if not db.execute("SELECT 1 FROM overrides WHERE id = ?", (override.id,)).fetchone():
                raise PolicyError(f"override {override.id} does not exist")
            db.execute("DELETE FROM overrides WHERE id = ?", (override.id,))
            _insert_override(db, override, keep_id=True)

    def remove_override(self, override_id: int) -> None:
        with self._change() as db:
            if not db.execute("DELETE FROM overrides WHERE id = ?", (override_id,)).rowcount:
                raise PolicyError(f"override {override_id} does not exist")

    def expire_overrides(self, now: datetime) -> int:
        """Delete the overrides that have expired at `now`; returns how many."""
        with self._change() as db:
            return db.execute("DELETE FROM overrides WHERE expires_at <= ?", (_utc_text(now, "now"),)).rowcount


    # Review requests from the block page (not part of the policy: no version bump)

    def add_review_request(
        self, name: str, category: str, group: str, reference: str, reason: str, now: datetime
    ) -> int | None:
        """Queue a request; None when the queue already holds MAX_PENDING_REVIEWS pending ones.

        A second request with the same reference (a pupil pressing twice) returns the first's id.
        """
        with self._transaction() as db:
            known = db.execute("SELECT id FROM review_requests WHERE reference = ?", (reference,)).fetchone()
            if known:
                return int(known[0])
            pending = db.execute("SELECT count(*) FROM review_requests WHERE state = 'pending'").fetchone()[0]
            if pending >= MAX_PENDING_REVIEWS:
                return None
            cursor = db.execute(
                "INSERT INTO review_requests (created_at, name, category, group_name, reference, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (_utc_text(now, "now"), name, category, group, reference, reason),
            )
            return int(cursor.lastrowid or 0)

    def decide_review_request(self, request_id: int, state: str, decision: str | None, target: str | None,
                              decided_by: str, now: datetime) -> None:
        """Mark a pending request approved or declined (decision: how it was approved; target:
        the override's id or the list's name)."""
        if state not in ("approved", "declined"):
            raise PolicyError(f"review request state {state!r}: use approved or declined")
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE review_requests SET state = ?, decision = ?, decision_target = ?, decided_at = ?,"
                " decided_by = ? WHERE id = ? AND state = 'pending'",
                (state, decision, target, _utc_text(now, "now"), decided_by, request_id),
            ).rowcount
            if not changed:
                raise PolicyError(f"review request {request_id} does not exist or is already decided")


# Validation, shared by the store's changes and by check_policy.


@contextmanager
def _located(where: str) -> Iterator[None]:
    try:
        yield
    except PolicyError as error:
        raise PolicyError(f"{where}: {error}") from error


def _enum(kind: type[E], value: object, what: str) -> E:
    try:
        return kind(value)
    except (ValueError, TypeError):
        raise PolicyError(f"{what} {value!r} is not one of {', '.join(kind)}") from None


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(f"{what} {value!r} is not text")
    return value


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{what} {value!r} is not true or false")
    return value


def _texts(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PolicyError(f"{what} must map language codes to text")
    return dict(value)


def _require_known(known: Known, kind: str, name: object, what: str) -> str:
    if not isinstance(name, str) or not known(kind, name):
        raise PolicyError(f"{what} {name!r} does not exist")
    return name


def checked_settings(settings: Settings, known: Known) -> Settings:
    _text(settings.timezone, "settings.timezone")
    settings.zone  # the property raises PolicyError for an unknown time zone
    _require_known(known, "groups", settings.default_group, "settings.default_group: group")
    addresses = []
    for what, value, version in (
        ("settings.block_page_ipv4", settings.block_page_ipv4, 4),
        ("settings.block_page_ipv6", settings.block_page_ipv6, 6),
    ):
        try:
            address = ipaddress.ip_address(_text(value, what))
        except ValueError as error:
            raise PolicyError(f"{what}: {error}") from None
        if address.version != version:
            raise PolicyError(f"{what} {value!r} is not an IPv{version} address")
        addresses.append(str(address))
    return replace(settings, block_page_ipv4=addresses[0], block_page_ipv6=addresses[1])


def checked_category(category: Category, known: Known) -> Category:
    check_id("category", _text(category.name, "category.name"))
    if not _text(category.source, "category.source"):
        raise PolicyError(f"category {category.name!r}: category.source is empty")
    titles = _texts(category.titles, "category.titles")
    descriptions = _texts(category.descriptions, "category.descriptions")
    if category.alias_of is not None:
        if category.alias_of == category.name:
            raise PolicyError(f"category.alias_of: category {category.name!r} cannot be an alias of itself")
        _require_known(known, "categories", category.alias_of, "category.alias_of: category")
        if known("aliases", category.alias_of):
            raise PolicyError(f"category.alias_of: {category.alias_of!r} is itself an alias")
    return Category(category.name, category.source, titles, descriptions, category.alias_of)


def _checked_entry(entry: ListEntry, what: str) -> ListEntry:
    if not isinstance(entry, ListEntry):
        raise PolicyError(f"{what} {entry!r} is not a list entry")
    kind = _enum(EntryKind, entry.kind, f"{what}.kind")
    return parse_entry(kind, _text(entry.value, f"{what}.value"))


def checked_list(admin_list: AdminList) -> AdminList:
    check_id("list", _text(admin_list.name, "list.name"))
    entries: dict[ListEntry, None] = {}  # ordered, and a set for the duplicate test on long lists
    for index, entry in enumerate(admin_list.entries):
        entry = _checked_entry(entry, f"list.entries[{index}]")
        if entry in entries:
            raise PolicyError(f"list.entries[{index}]: {entry.kind} entry {entry.value!r} is given twice")
        entries[entry] = None
    return AdminList(admin_list.name, _text(admin_list.description, "list.description"), tuple(entries))


def checked_group(group: Group) -> Group:
    check_id("group", _text(group.name, "group.name"))
    return Group(
        group.name,
        _text(group.title, "group.title"),
        _enum(Action, group.default_action, "group.default_action"),
        _flag(group.safe_search, "group.safe_search"),
        _enum(QuicMode, group.quic, "group.quic"),
        _flag(group.bypass_shield, "group.bypass_shield"),
        _flag(group.log_client_address, "group.log_client_address"),
        _enum(UnnamedFlows, group.unnamed, "group.unnamed"),
    )


def checked_client(match: ClientMatch, known: Known) -> ClientMatch:
    _require_known(known, "groups", match.group, "client.group: group")
    given = [field for field in ("cidr", "interface", "mac") if getattr(match, field) is not None]
    if len(given) != 1:
        raise PolicyError(f"client match needs exactly one of cidr, interface, mac (got {', '.join(given) or 'none'})")
    if match.vlan is not None and match.interface is None:
        raise PolicyError("client.vlan is only used with client.interface")
    if match.cidr is not None:
        try:
            return ClientMatch(match.group, cidr=str(ipaddress.ip_network(_text(match.cidr, "client.cidr"), strict=False)))
        except ValueError as error:
            raise PolicyError(f"client.cidr: {error}") from None
    if match.mac is not None:
        return ClientMatch(match.group, mac=check_mac(_text(match.mac, "client.mac")))
    if not _INTERFACE.fullmatch(_text(match.interface, "client.interface")):
        raise PolicyError(f"client.interface {match.interface!r} is not a network interface name")
    if match.vlan is not None and (type(match.vlan) is not int or not 1 <= match.vlan <= 4094):
        raise PolicyError(f"client.vlan {match.vlan!r} is not a VLAN id (1-4094)")
    return ClientMatch(match.group, interface=match.interface, vlan=match.vlan)


def _client_key(match: ClientMatch) -> str:
    if match.cidr is not None:
        return f"cidr {match.cidr}"
    if match.mac is not None:
        return f"MAC {match.mac}"
    return f"interface {match.interface}" + ("" if match.vlan is None else f" VLAN {match.vlan}")


def checked_rule(rule: Rule, known: Known) -> Rule:
    _require_known(known, "groups", rule.group, "rule.group: group")
    target_kind = _enum(TargetKind, rule.target_kind, "rule.target_kind")
    kind = "categories" if target_kind is TargetKind.CATEGORY else "lists"
    _require_known(known, kind, rule.target, f"rule.target: {target_kind}")
    if rule.schedule is not None:
        _require_known(known, "schedules", rule.schedule, "rule.schedule: schedule")
    if type(rule.enabled) is not bool:
        raise PolicyError(f"rule.enabled {rule.enabled!r} is not true or false")
    return Rule(rule.group, target_kind, rule.target, _enum(Action, rule.action, "rule.action"), rule.schedule,
                rule.enabled)


def checked_override(override: Override, known: Known) -> Override:
    from edufilter._fastpath import normalise_name

    if type(override.id) is not int or override.id < 0:
        raise PolicyError(f"override.id {override.id!r} is not a whole number")
    _require_known(known, "groups", override.group, "override.group: group")
    name = normalise_name(_text(override.name, "override.name").strip().encode("ascii", "replace"))
    if name is None:
        raise PolicyError(f"override.name {override.name!r} is not a valid host name")
    refuse_public_suffix(name, "override.name", Scope.ANY)  # a teacher's scope: one site and its subdomains
    starts_at = _aware(override.starts_at, "override.starts_at")
    expires_at = _aware(override.expires_at, "override.expires_at")
    if expires_at <= starts_at:
        raise PolicyError("override.expires_at is not after override.starts_at")
    return Override(
        override.id,
        override.group,
        name,
        _enum(Action, override.action, "override.action"),
        starts_at,
        expires_at,
        _text(override.created_by, "override.created_by"),
        _text(override.reason, "override.reason"),
    )


def _aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise PolicyError(f"{what} {value!r} is not a date and time with a time zone")
    return value.astimezone(timezone.utc)


def _position(kind: str, index: int) -> str:
    return f"{kind}[{index}]"


def check_policy(policy: Policy, where: Callable[[str, int], str] = _position) -> Policy:
    """The policy with every object validated and normalised, references included.

    `where(kind, index)` names an object in error messages, kind being a Policy field
    ("rules", ...) and index its position there.
    """
    names: dict[str, set[str]] = {kind: set() for kind in ("categories", "lists", "groups", "schedules")}
    for kind in names:
        for index, item in enumerate(getattr(policy, kind)):
            with _located(where(kind, index)):
                name = _text(item.name, "name")
                if name in names[kind]:
                    raise PolicyError(f"{name!r} is defined twice")
            names[kind].add(name)
    names["aliases"] = {category.name for category in policy.categories if category.alias_of is not None}

    def known(kind: str, name: str) -> bool:
        return name in names[kind]

    def each(kind: str, check: Callable[[T], T]) -> tuple[T, ...]:
        checked = []
        for index, item in enumerate(getattr(policy, kind)):
            with _located(where(kind, index)):
                checked.append(check(item))
        return tuple(checked)

    with _located(where("settings", 0)):
        settings = checked_settings(policy.settings, known)
    clients = each("clients", lambda match: checked_client(match, known))
    keys: set[str] = set()
    for index, match in enumerate(clients):
        if _client_key(match) in keys:
            raise PolicyError(f"{where('clients', index)}: a client match for {_client_key(match)} is given twice")
        keys.add(_client_key(match))
    overrides = each("overrides", lambda override: checked_override(override, known))
    ids: set[int] = set()
    for index, override in enumerate(overrides):
        if override.id in ids:
            raise PolicyError(f"{where('overrides', index)}: override id {override.id} is given twice")
        ids.add(override.id)
    return Policy(
        settings=settings,
        categories=each("categories", lambda category: checked_category(category, known)),
        lists=each("lists", checked_list),
        groups=each("groups", checked_group),
        clients=clients,
        rules=each("rules", lambda rule: checked_rule(rule, known)),
        schedules=each("schedules", check_schedule),
        overrides=overrides,
    )


# Rows


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, split where SQLite says a statement is complete."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""
    if statement.strip():
        raise PolicyError(f"migration statement is incomplete: {statement.strip()[:60]!r}")


def _insert_audit(db: sqlite3.Connection, actor: Actor, change: AuditedChange) -> None:
    db.execute(
        "INSERT INTO audit_log (at, token, role, method, path, site, kind, object_id, before, after,"
        " policy_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT version FROM policy_version))",
        (
            _utc_text(datetime.now(timezone.utc), "now"),
            actor.token,
            actor.role,
            actor.method,
            actor.path,
            actor.site,
            change.kind,
            change.object_id,
            _json_or_null(change.before),
            _json_or_null(change.after),
        ),
    )


def _json_or_null(value: object) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _utc_text(moment: datetime, what: str) -> str:
    # Fixed width and one offset, so that SQL compares these as text in time order.
    return _aware(moment, what).isoformat(timespec="microseconds")


def _minutes_text(moment: time) -> str:
    return moment.strftime("%H:%M")


def _write_settings(db: sqlite3.Connection, settings: Settings) -> None:
    db.execute("DELETE FROM settings")
    db.executemany(
        "INSERT INTO settings (key, value) VALUES (?, ?)",
        [(field.name, json.dumps(getattr(settings, field.name))) for field in fields(Settings)],
    )


def _read_settings(db: sqlite3.Connection) -> Settings:
    stored = {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM settings")}
    return Settings(**{field.name: stored[field.name] for field in fields(Settings) if field.name in stored})


def _category_row(category: Category) -> tuple[object, ...]:
    return (
        category.name,
        category.source,
        json.dumps(category.titles, ensure_ascii=False),
        json.dumps(category.descriptions, ensure_ascii=False),
        category.alias_of,
    )


def _insert_category(db: sqlite3.Connection, category: Category) -> None:
    db.execute(
        "INSERT INTO categories (name, source, titles, descriptions, alias_of) VALUES (?, ?, ?, ?, ?)",
        _category_row(category),
    )


def _insert_list(db: sqlite3.Connection, admin_list: AdminList) -> None:
    db.execute("INSERT INTO lists (name, description) VALUES (?, ?)", (admin_list.name, admin_list.description))
    for entry in admin_list.entries:
        _insert_entry(db, admin_list.name, entry)


def _insert_entry(db: sqlite3.Connection, list_name: str, entry: ListEntry) -> None:
    db.execute("INSERT INTO list_entries (list, kind, value) VALUES (?, ?, ?)", (list_name, entry.kind.value, entry.value))


def _has_entry(db: sqlite3.Connection, list_name: str, entry: ListEntry) -> bool:
    query = "SELECT 1 FROM list_entries WHERE list = ? AND kind = ? AND value = ?"
    return db.execute(query, (list_name, entry.kind.value, entry.value)).fetchone() is not None


def _group_row(group: Group) -> tuple[object, ...]:
    return (
        group.name,
        group.title,
        group.default_action.value,
        group.safe_search,
        group.quic.value,
        group.bypass_shield,
        group.log_client_address,
        group.unnamed.value,
    )


def _insert_group(db: sqlite3.Connection, group: Group) -> None:
    db.execute(
        "INSERT INTO groups (name, title, default_action, safe_search, quic, bypass_shield, log_client_address,"
        " unnamed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        _group_row(group),
    )


def _insert_client(db: sqlite3.Connection, match: ClientMatch) -> None:
    db.execute(
        "INSERT INTO clients (group_name, cidr, interface, vlan, mac) VALUES (?, ?, ?, ?, ?)",
        (match.group, match.cidr, match.interface, match.vlan, match.mac),
    )


def _client_id(db: sqlite3.Connection, match: ClientMatch) -> int | None:
    row = db.execute(
        "SELECT id FROM clients WHERE cidr IS ? AND interface IS ? AND vlan IS ? AND mac IS ?",
        (match.cidr, match.interface, match.vlan, match.mac),
    ).fetchone()
    return None if row is None else int(row[0])


def _insert_rule(db: sqlite3.Connection, rule: Rule, position: int) -> None:
    category = rule.target if rule.target_kind is TargetKind.CATEGORY else None
    admin_list = rule.target if rule.target_kind is TargetKind.LIST else None
    db.execute(
        "INSERT INTO rules (group_name, position, category, list, action, schedule, enabled)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (rule.group, position, category, admin_list, rule.action.value, rule.schedule, int(rule.enabled)),
    )


def _rule_count(db: sqlite3.Connection, group: str) -> int:
    return int(db.execute("SELECT count(*) FROM rules WHERE group_name = ?", (group,)).fetchone()[0])


def _require_rule(db: sqlite3.Connection, group: str, position: int) -> None:
    if not db.execute("SELECT 1 FROM rules WHERE group_name = ? AND position = ?", (group, position)).fetchone():
        raise PolicyError(f"group {group!r} has no rule at position {position!r}")


def _insert_schedule(db: sqlite3.Connection, schedule: Schedule) -> None:
    db.execute("INSERT INTO schedules (name) VALUES (?)", (schedule.name,))
    _insert_schedule_times(db, schedule)


def _insert_schedule_times(db: sqlite3.Connection, schedule: Schedule) -> None:
    db.executemany(
        "INSERT INTO schedule_slots (schedule, weekday, starts, ends) VALUES (?, ?, ?, ?)",
        [(schedule.name, slot.weekday, _minutes_text(slot.start), _minutes_text(slot.end)) for slot in schedule.slots],
    )
    for exception in schedule.exceptions:
        exception_id = db.execute(
            "INSERT INTO schedule_exceptions (schedule, day) VALUES (?, ?)",
            (schedule.name, exception.day.isoformat()),
        ).lastrowid
        db.executemany(
            "INSERT INTO exception_slots (exception, starts, ends) VALUES (?, ?, ?)",
            [(exception_id, _minutes_text(start), _minutes_text(end)) for start, end in exception.slots],
        )


def _insert_override(db: sqlite3.Connection, override: Override, keep_id: bool) -> int:
    row = (
        override.group,
        override.name,
        override.action.value,
        _utc_text(override.starts_at, "override.starts_at"),
        _utc_text(override.expires_at, "override.expires_at"),
        override.created_by,
        override.reason,
    )
    if keep_id:
        db.execute(
            "INSERT INTO overrides (id, group_name, name, action, starts_at, expires_at, created_by, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (override.id, *row),
        )
        return override.id
    cursor = db.execute(
        "INSERT INTO overrides (group_name, name, action, starts_at, expires_at, created_by, reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        row,
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _policy_version(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT version FROM policy_version").fetchone()[0])


def _lists_revision(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT value FROM lists_revision").fetchone()[0])


def list_values(db: sqlite3.Connection, list_name: str, kind: EntryKind) -> Iterator[str]:
    """The values of one kind in one list, in no particular order (read from the unique index
    alone: sorting millions by id would cost more than the image needs)."""
    for (value,) in db.execute("SELECT value FROM list_entries WHERE list = ? AND kind = ?", (list_name, kind.value)):
        yield value


def _entries_by_list(db: sqlite3.Connection, list_name: str | None = None) -> dict[str, list[ListEntry]]:
    """Every entry of every list (or of one), in order."""
    entries: dict[str, list[ListEntry]] = {}
    query = "SELECT list, kind, value FROM list_entries" + (" WHERE list = ?" if list_name else "") + " ORDER BY id"
    for name, kind, value in db.execute(query, (list_name,) if list_name else ()):
        entries.setdefault(name, []).append(ListEntry(EntryKind(kind), value))
    return entries


def _read_policy(db: sqlite3.Connection, with_entries: bool = True) -> Policy:
    """The whole policy; without entries, every admin list comes with none (for comparing and
    compiling: the entries are compared by the lists revision, compiled into the lists image)."""
    entries = _entries_by_list(db) if with_entries else {}
    slots: dict[str, list[TimeSlot]] = {}
    for schedule, weekday, starts, ends in db.execute(
        "SELECT schedule, weekday, starts, ends FROM schedule_slots ORDER BY id"
    ):
        slots.setdefault(schedule, []).append(TimeSlot(weekday, time.fromisoformat(starts), time.fromisoformat(ends)))
    exception_slots: dict[int, list[tuple[time, time]]] = {}
    for exception_id, starts, ends in db.execute("SELECT exception, starts, ends FROM exception_slots ORDER BY id"):
        exception_slots.setdefault(exception_id, []).append((time.fromisoformat(starts), time.fromisoformat(ends)))
    exceptions: dict[str, list[DatedException]] = {}
    for exception_id, schedule, day in db.execute("SELECT id, schedule, day FROM schedule_exceptions ORDER BY id"):
        exceptions.setdefault(schedule, []).append(
            DatedException(date.fromisoformat(day), tuple(exception_slots.get(exception_id, ())))
        )
    return Policy(
        settings=_read_settings(db),
        categories=tuple(
            Category(name, source, json.loads(titles), json.loads(descriptions), alias_of)
            for name, source, titles, descriptions, alias_of in db.execute(
                "SELECT name, source, titles, descriptions, alias_of FROM categories ORDER BY rowid"
            )
        ),
        lists=tuple(
            AdminList(name, description, tuple(entries.get(name, ())))
            for name, description in db.execute("SELECT name, description FROM lists ORDER BY rowid")
        ),
        groups=tuple(
            Group(name, title, Action(action), bool(safe_search), QuicMode(quic), bool(shield), bool(log_address),
                  UnnamedFlows(unnamed))
            for name, title, action, safe_search, quic, shield, log_address, unnamed in db.execute(
                "SELECT name, title, default_action, safe_search, quic, bypass_shield, log_client_address, unnamed"
                " FROM groups ORDER BY rowid"
            )
        ),
        clients=tuple(
            ClientMatch(group, cidr, interface, vlan, mac)
            for group, cidr, interface, vlan, mac in db.execute(
                "SELECT group_name, cidr, interface, vlan, mac FROM clients ORDER BY id"
            )
        ),
        rules=tuple(
            Rule(
                group,
                TargetKind.CATEGORY if category is not None else TargetKind.LIST,
                category if category is not None else admin_list,
                Action(action),
                schedule,
                bool(enabled),
            )
            for group, category, admin_list, action, schedule, enabled in db.execute(
                "SELECT r.group_name, r.category, r.list, r.action, r.schedule, r.enabled FROM rules r"
                " JOIN groups g ON g.name = r.group_name ORDER BY g.rowid, r.position"
            )
        ),
        schedules=tuple(
            Schedule(name, tuple(slots.get(name, ())), tuple(exceptions.get(name, ())))
            for (name,) in db.execute("SELECT name FROM schedules ORDER BY rowid")
        ),
        overrides=tuple(
            Override(
                override_id,
                group,
                name,
                Action(action),
                datetime.fromisoformat(starts_at),
                datetime.fromisoformat(expires_at),
                created_by,
                reason,
            )
            for override_id, group, name, action, starts_at, expires_at, created_by, reason in db.execute(
                "SELECT id, group_name, name, action, starts_at, expires_at, created_by, reason"
                " FROM overrides ORDER BY id"
            )
        ),
    )
