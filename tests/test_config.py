"""The daemon's configuration: defaults, the example file, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from edufilter.config import Config, ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "packaging" / "edufilter.toml"


def test_the_example_file_states_the_defaults() -> None:
    assert load_config(EXAMPLE) == Config()


def test_a_missing_default_file_means_defaults_but_a_named_one_must_exist(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edufilter.config.DEFAULT_CONFIG", tmp_path / "absent.toml")
    assert load_config() == Config()
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml")


def test_state_dir_option_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('state_dir = "/srv/edufilter"\n[queue]\nworkers = 3\nfail = "closed"\n')
    config = load_config(path, state_dir=tmp_path / "state")
    assert config.state_dir == tmp_path / "state"
    assert (config.queue.workers, config.queue.fail_open, config.worker_count) == (3, False, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[queue]\nworkerz = 2\n", "unknown setting queue.workerz"),
        ("colour = 1\n", "unknown setting colour"),
        ("[queue]\nworkers = \"two\"\n", "queue.workers must be a whole number"),
        ("[queue]\nworkers = true\n", "queue.workers must be a whole number"),
        ("[network]\nlan_interfaces = \"eth1\"\n", "network.lan_interfaces must be a list of str"),
        ("[network]\nipv6 = 1\n", "network.ipv6 must be true or false"),
        ("[queue]\nfail = \"maybe\"\n", "queue.fail must be"),
        ("[queue]\nbatch = 1000\n", "queue.batch must be 1 to 256"),
        ("[marks]\nmask = 1\n", "marks.mask"),
        ("[api]\nlisten = \"localhost\"\n", "api.listen"),
        ("[api]\ntls_certificate = \"/x.pem\"\n", "go together"),
        ("[events]\nretention_days = 9999\n", "events.retention_days must be 1 to 366"),
        ("[blockpage]\ndefault_language = \"es\"\n", "blockpage.default_language"),
        ("[hub]\nservers = [\"tls://198.18.1.2:4222\"]\n", "hub.site is needed when hub.servers is set"),
        ("[hub]\noutbox_limit = 5\n", "hub.outbox_limit must be 1000 to 10000000"),
        ("[hub]\nservers = [\"nats://198.18.1.2:4222\"]\nsite = \"ghent\"\n",
         "hub.servers: 'nats://198.18.1.2:4222' is not tls://host:port"),
        ("[hub]\nuser = \"ghent\"\n", "hub.user and hub.password_file go together"),
        ("[hub]\nsite = \"Ghent/1\"\n", "hub.site name 'Ghent/1': use 1-31 lowercase letters"),
        ("queue = 3\n", "[queue] must be a table"),
        ("[queue\n", "not valid TOML"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)
