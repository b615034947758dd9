"""The daemon's one typed configuration, read once from TOML; everything has a default.

Default path /etc/edufilter/edufilter.toml; a missing default file means all defaults. Unknown
keys and wrong types are errors naming the key, so a typo never silently turns a setting off.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from edufilter.errors import EdufilterError

DEFAULT_CONFIG = Path("/etc/edufilter/edufilter.toml")


class ConfigError(EdufilterError):
    """The configuration file is unreadable or a setting is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    lan_interfaces: tuple[str, ...] = ()  # interfaces facing the pupils; empty: all forwarded traffic
    filter_local: bool = False  # also the gateway's own traffic
    ipv6: bool = True


@dataclass(frozen=True, slots=True)
class QueueConfig:
    workers: int = 0  # one NFQUEUE queue and worker process each; 0: one per CPU core
    first_queue: int = 0
    max_length: int = 8192  # packets the kernel holds per queue before fail-open/drop
    batch: int = 64  # packets received and answered per system call
    inspect_packets: int = 5  # a flow's first packets that may carry its name (connbytes bound)
    fail: str = "open"  # "open": traffic passes when a worker is gone or its queue is full

    @property
    def fail_open(self) -> bool:
        return self.fail == "open"


@dataclass(frozen=True, slots=True)
class MarkConfig:
    mask: int = 0x0F000000  # the packet/conntrack mark bits edufilter owns: 4 contiguous at least (codes 0-8)


@dataclass(frozen=True, slots=True)
class DnsConfig:
    youtube: str = "strict"  # "strict" or "moderate" restricted mode under safe search


@dataclass(frozen=True, slots=True)
class BlockPageConfig:
    port: int = 80  # served on the policy's block-page addresses (settings.block_page_ipv4/6)
    default_language: str = "nl"  # when the browser's Accept-Language names none of nl, fr, en, de


@dataclass(frozen=True, slots=True)
class ApiConfig:
    listen: str = "127.0.0.1:8470"  # loopback unless the school decides otherwise
    tls_certificate: str = ""
    tls_key: str = ""


@dataclass(frozen=True, slots=True)
class EventConfig:
    retention_days: int = 14
    jsonl: bool = True  # also one JSON-lines file per day under <state>/events/


@dataclass(frozen=True, slots=True)
class ListConfig:
    ut1_url: str = "https://dsi.ut-capitole.fr/blacklists/download/"


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Multi-site mode (edufilter.hub): absent servers mean a single-site gateway."""

    servers: tuple[str, ...] = ()  # the group's NATS servers, e.g. "tls://198.18.1.2:4222"
    site: str = ""  # this gateway's site name
    user: str = ""
    password_file: str = ""
    ca_file: str = ""  # the CA that signed the servers' certificates (TLS)
    outbox_limit: int = 200_000  # block events kept on disk while the hub is unreachable

    @property
    def enabled(self) -> bool:
        return bool(self.servers)


@dataclass(frozen=True, slots=True)
class Config:
    state_dir: Path = Path("/var/lib/edufilter")
    network: NetworkConfig = field(default_factory=NetworkConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    marks: MarkConfig = field(default_factory=MarkConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    blockpage: BlockPageConfig = field(default_factory=BlockPageConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    events: EventConfig = field(default_factory=EventConfig)
    lists: ListConfig = field(default_factory=ListConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    @property
    def worker_count(self) -> int:
        return self.queue.workers or len(os.sched_getaffinity(0))


def load_config(path: Path | None = None, state_dir: Path | None = None) -> Config:
    """The configuration at path (default /etc/edufilter/edufilter.toml, optional); state_dir,
    when given, overrides the file's."""
    explicit = path is not None
    path = path or DEFAULT_CONFIG
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such configuration file") from None
        data = {}
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    config = _build(Config, data, str(path), "")
    if state_dir is not None:
        config = replace(config, state_dir=Path(state_dir))
    _check(config, str(path))
    return config


def _build(kind: type, data: dict[str, Any], where: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: [{prefix.rstrip('.')}] must be a table")
    hints = get_type_hints(kind)
    known = {item.name for item in fields(kind)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {prefix}{key}")
    values = {}
    for item in fields(kind):
        if item.name not in data:
            continue
        values[item.name] = _value(hints[item.name], data[item.name], where, f"{prefix}{item.name}")
    return kind(**values)


def _value(hint: Any, value: Any, where: str, key: str) -> Any:
    if is_dataclass(hint):
        return _build(hint, value, where, f"{key}.")
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {key} must be a path")
        return Path(value)
    if get_origin(hint) is tuple:
        (item,) = get_args(hint)[:1]
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            raise ConfigError(f"{where}: {key} must be a list of {item.__name__}")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key} must be a whole number")
        return value
    if not isinstance(value, hint):
        raise ConfigError(f"{where}: {key} must be a {hint.__name__}")
    return value


def _check(config: Config, where: str) -> None:
    queue = config.queue
    problems = []
    if queue.fail not in ("open", "closed"):
        problems.append(f"queue.fail must be \"open\" or \"closed\", not {queue.fail!r}")
    if not 0 <= queue.workers <= 64:
        problems.append("queue.workers must be 0 (one per core) to 64")
    if not 0 <= queue.first_queue <= 65535 - 64:
        problems.append("queue.first_queue must be 0 to 65471")
    if not 16 <= queue.max_length <= 1 << 20:
        problems.append("queue.max_length must be 16 to 1048576")
    if not 1 <= queue.batch <= 256:
        problems.append("queue.batch must be 1 to 256")
    if not 2 <= queue.inspect_packets <= 64:
        problems.append("queue.inspect_packets must be 2 to 64")
    if config.dns.youtube not in ("strict", "moderate"):
        problems.append("dns.youtube must be \"strict\" or \"moderate\"")
    if config.blockpage.default_language not in ("nl", "fr", "en", "de"):
        problems.append("blockpage.default_language must be one of nl, fr, en, de")
    if not 1 <= config.blockpage.port <= 65535:
        problems.append("blockpage.port must be 1 to 65535")
    if not 1 <= config.events.retention_days <= 366:
        problems.append("events.retention_days must be 1 to 366")
    try:
        split_listen(config.api.listen)
    except ValueError as error:
        problems.append(f"api.listen: {error}")
    if bool(config.api.tls_certificate) != bool(config.api.tls_key):
        problems.append("api.tls_certificate and api.tls_key go together")
    from edufilter.rules.marks import MarkLayout
    from edufilter.errors import NetfilterError

    try:
        MarkLayout(config.marks.mask)
    except NetfilterError as error:
        problems.append(f"marks.mask: {error}")
    if config.hub.enabled and not config.hub.site:
        problems.append("hub.site is needed when hub.servers is set")
    if config.hub.site:
        from edufilter.hub.model import HubError, check_site_name

        try:
            check_site_name(config.hub.site)
        except HubError as error:
            problems.append(f"hub.{error}")
    if not 1000 <= config.hub.outbox_limit <= 10_000_000:
        problems.append("hub.outbox_limit must be 1000 to 10000000")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


def split_listen(text: str) -> tuple[str, int]:
    """("127.0.0.1", 8080) from "127.0.0.1:8080" or "[::1]:8080"."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    ipaddress.ip_address(host)
    return host, int(port)
