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
    max_upload_bytes: int = 64 << 20
    auth_failures: int = 10  # failed authentications an address may make within auth_window
    auth_window: float = 60.0  # seconds
