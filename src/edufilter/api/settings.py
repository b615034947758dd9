"""Where and how the admin API listens, and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ApiSettings:
    host: str = "127.0.0.1"  # loopback unless configured: the API changes a school's filtering
    port: int = 8470
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_json_bytes: int = 1 << 20
    max_upload_bytes: int = 64 << 20  # the file as sent (gzip or not)
    max_upload_inflated_bytes: int = 256 << 20  # its lines, gzip undone
    max_upload_ratio: float = 32.0  # lines per byte sent, past the first MiB: list files gzip 3-10 times
    max_concurrent_uploads: int = 2  # received or being read, stored and applied
    # A teacher token may make teacher_overrides_per_hour overrides an hour, and hold
    # teacher_active_overrides that have not expired yet.
    teacher_overrides_per_hour: int = 30
    teacher_active_overrides: int = 10
    auth_failures: int = 10  # failed authentications an address may make within auth_window
    auth_window: float = 60.0  # seconds
    # Connections: an address may hold max_connections_per_address open, all together
    # max_connections (and never more than half the process's descriptors); one idle, or
    # still sending its request's headers, for idle_timeout seconds is closed; a request
    # body that sends nothing for body_timeout seconds is refused (408).
    max_connections: int = 256
    max_connections_per_address: int = 32
    idle_timeout: float = 30.0
    body_timeout: float = 60.0
    shutdown_timeout: float = 5.0  # seconds a stop waits for requests under way
    resource_log_interval: float = 60.0  # "out of descriptors" is logged at most this often
