"""What the supervisor hands a worker it starts: its first message on the control socket
carries the configuration and the images folder, so a worker never reads the configuration
file (it filters with the settings its supervisor runs with, even if the file changed since)
and never works out where the images are."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from edufilter.config import Config, ConfigError, config_from_dict, config_to_dict

START_TIMEOUT = 30.0  # the supervisor sends the start message right after the fork


def start_message(config: Config, images: Path) -> bytes:
    """The supervisor's first message to a worker: what it filters with."""
    return json.dumps({"type": "start", "config": config_to_dict(config), "images": str(images)}).encode()


def receive_start(control: socket.socket) -> tuple[Config, Path]:
    """The configuration and images folder the supervisor hands over; ConfigError when the
    first message is not that."""
    control.settimeout(START_TIMEOUT)
    try:
        message = json.loads(control.recv(1 << 20) or b"null")
    except (OSError, ValueError) as error:
        raise ConfigError(f"no start message from the supervisor: {error}") from error
    finally:
        control.setblocking(False)
    if not isinstance(message, dict) or message.get("type") != "start" or not isinstance(message.get("images"), str):
        raise ConfigError("the supervisor's first message is not a start message")
    return config_from_dict(message["config"], "the supervisor's start message"), Path(message["images"])
