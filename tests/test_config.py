from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from tsconsensus import Config, ConfigError

from .helpers import readme_timing_profile

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def _keys(obj: object, prefix: str = "") -> set[str]:
    keys = set()
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys |= _keys(value, f"{prefix}{f.name}.")
        else:
            keys.add(f"{prefix}{f.name}")
    return keys


def _toml_keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in data.items():
        if isinstance(v, dict):
            keys |= _toml_keys(v, f"{prefix}{k}.")
        else:
            keys.add(f"{prefix}{k}")
    return keys


def test_example_documents_every_key_with_its_default() -> None:
    text = EXAMPLE.read_text()
    assert Config.from_toml(text) == Config.default()
    assert _toml_keys(tomllib.loads(text)) == _keys(Config.default())


def test_every_key_in_the_example_has_a_comment() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            assert i > 0 and lines[i - 1].lstrip().startswith("#"), f"undocumented: {line}"


def test_config_is_frozen() -> None:
    config = Config.default()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ports = None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("[ports]\nraft = 70000", "ports.raft", 70000),
        ("[ports]\ncommand = 'x'", "ports.command", "x"),
        ("[raft]\nelection_timeout_min_s = -1", "raft.election_timeout_min_s", -1.0),
        ("[raft]\nheartbeat_interval_s = 0.25", "raft.heartbeat_interval_s", 0.25),
        ("[raft]\nelection_timeout_max_s = 0.6", "raft.election_timeout_max_s", 0.6),
        ("[raft]\nbogus = 1", "raft.bogus", 1),
        ("[raft]\ncompaction_min_bytes = 4096", "raft.compaction_min_bytes", 4096),
        ("[nope]\nx = 1", "nope", {"x": 1}),
        ("[cluster]\ntag = 'db'", "cluster.tag", "db"),
        ("[tailnet]\nbackend = 'carrier-pigeon'", "tailnet.backend", "carrier-pigeon"),
        ("[command]\nmax_body_bytes = true", "command.max_body_bytes", True),
        ("[monitor]\nserve = 1", "monitor.serve", 1),
        (
            "[tailnet]\nbackend = 'static'\naddress = '127.0.0.9'\n"
            "[[tailnet.peers]]\naddress = '127.0.0.1'\n",
            "tailnet.address",
            "127.0.0.9",
        ),
        ("[[tailnet.peers]]\naddress = 'not-an-ip'\n", "tailnet.peers[0].address", "not-an-ip"),
    ],
)
def test_bad_values_name_the_key_and_the_value(text: str, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_toml(text)
    assert info.value.key == key
    assert info.value.value == value
    assert key in str(info.value) and repr(value) in str(info.value)


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.from_toml("[ports\nraft = 1")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        Config.load(tmp_path / "absent.toml")


def test_static_peers_load() -> None:
    config = Config.from_toml(
        "[tailnet]\nbackend = 'static'\naddress = '127.0.0.2'\n"
        "[[tailnet.peers]]\naddress = '127.0.0.2'\ntags = ['tag:a']\n"
        "[[tailnet.peers]]\naddress = '127.0.0.3'\ntags = ['tag:a', 'tag:b']\nonline = false\n"
    )
    assert [p.address for p in config.tailnet.peers] == ["127.0.0.2", "127.0.0.3"]
    assert config.tailnet.peers[1].tags == ("tag:a", "tag:b")
    assert config.tailnet.peers[1].online is False


def test_the_readme_timing_profile_for_tailnets_that_span_continents_loads() -> None:
    config = readme_timing_profile()
    raft = config.raft
    # ten 300 ms round trips before anyone campaigns; a heartbeat fits a round trip with room
    assert raft.election_timeout_min_s >= 10 * 0.3
    assert 1.5 * 0.3 <= raft.heartbeat_interval_s <= raft.election_timeout_min_s / 3
    assert config.command.timeout_s >= 2 * raft.election_timeout_max_s
