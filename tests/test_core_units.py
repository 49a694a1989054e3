"""Unit tests of the core's pure parts: canonical form, ids, time, config, JSON depth."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recalled_lite import ids
from recalled_lite.api.common import json_depth_exceeds
from recalled_lite.config import load_config
from recalled_lite.errors import ConfigError
from recalled_lite.integrity.canonical import canonical
from recalled_lite.timefmt import format_ms, parse_bound_ms, parse_rfc3339_ms

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=2000, deadline=None)
@given(json_values)
def test_canonical_is_exactly_python_json_dumps(value):
    try:
        expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates: never reach us, the JSON decoder refuses them
    assert canonical(value) == expected


@pytest.mark.parametrize("value", [1e16, 1e-7, 1e-05, 0.0001, 123456789.123e-12, {"v": "1.5", "n": 1e-05}, 1.5e300, 5e-324, {"a": [1e21, "1e5"]}, -0.0, 2**70])
def test_canonical_exponent_floats(value):
    assert canonical(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_ulids_are_monotonic_even_when_the_clock_goes_back():
    gen = ids.UlidGenerator()
    t = [1_800_000_000_000_000_000]

    def fake_time_ns():
        return t[0]

    with mock.patch.object(ids.time, "time_ns", fake_time_ns):
        produced = [gen.new() for _ in range(5)]
        t[0] -= 10_000_000_000  # ten seconds back
        produced += [gen.new() for _ in range(5)]
        t[0] += 60_000_000_000
        produced += [gen.new() for _ in range(5)]
    assert produced == sorted(produced)
    assert len(set(produced)) == len(produced)
    assert all(len(p) == 26 for p in produced)


def test_time_formats():
    assert format_ms(0) == "1970-01-01T00:00:00.000Z"
    assert parse_rfc3339_ms("2026-04-14T09:12:45.1234Z") == parse_rfc3339_ms("2026-04-14T11:12:45.123+02:00")
    assert format_ms(parse_rfc3339_ms("2026-04-14T09:12:45z")) == "2026-04-14T09:12:45.000Z"
    assert format_ms(parse_bound_ms("2026-01-31", upper=True)) == "2026-01-31T23:59:59.999Z"
    assert format_ms(parse_bound_ms("2026-01-31", upper=False)) == "2026-01-31T00:00:00.000Z"
    for bad in ("2026-04-14T09:12:45", "2026-04-14", "14/04/2026", "2026-02-30T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_rfc3339_ms(bad)


def test_json_depth_scanner():
    assert not json_depth_exceeds(b'{"a": [1, 2, {"b": 3}]}', 3)
    assert json_depth_exceeds(b'{"a": [1, 2, {"b": 3}]}', 2)
    assert not json_depth_exceeds(b'{"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 2)
    assert not json_depth_exceeds(b'{"s": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 2)
    assert json_depth_exceeds(b"[" * 100_000 + b"]" * 100_000, 32)
    wide = b"[" + b",".join([b"[1]"] * 10_000) + b"]"
    assert not json_depth_exceeds(wide, 2)


def test_config_precedence(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[database]\npath = "file.db"\n')
    config = load_config(str(cfg), environ={})
    assert (config.server.port, config.server.host, config.database.path) == (9000, "0.0.0.0", "file.db")
    config = load_config(str(cfg), environ={"RECALLED_PORT": "9100", "RECALLED_DB": "env.db"})
    assert (config.server.port, config.database.path) == (9100, "env.db")
    config = load_config(str(cfg), environ={"RECALLED_PORT": "9100"}, port=9200, db="flag.db")
    assert (config.server.port, config.database.path) == (9200, "flag.db")
    config = load_config(None, environ={"RECALLED_CONFIG": str(cfg)})
    assert config.server.port == 9000
    defaults = load_config(None, environ={})
    assert (defaults.server.host, defaults.server.port, defaults.database.path) == ("127.0.0.1", 8080, "./recalled.db")
    assert defaults.database.synchronous == "FULL"
    assert load_config(None, environ={"RECALLED_DEV": "true"}).server.dev is True


@pytest.mark.parametrize("text,needle", [
    ("[server]\nport = \"eighty\"\n", "server.port"),
    ("[server]\nport = 70000\n", "server.port"),
    ("[database]\nsynchronous = \"SOMETIMES\"\n", "database.synchronous"),
    ("[server]\nprot = 1\n", "server.prot"),
    ("[nonsense]\n", "nonsense"),
    ("not toml at all [", "not valid TOML"),
])
def test_bad_config_names_the_key(tmp_path, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_config(str(cfg), environ={})
    assert needle in str(info.value)


def test_bad_environment_names_the_variable():
    with pytest.raises(ConfigError, match="RECALLED_PORT"):
        load_config(None, environ={"RECALLED_PORT": "http"})
    with pytest.raises(ConfigError, match="RECALLED_DEV"):
        load_config(None, environ={"RECALLED_DEV": "maybe"})


def test_example_config_lists_every_key_with_its_default():
    import msgspec

    from conftest import ROOT
    from recalled_lite.config import Config

    path = ROOT / "config.example.toml"
    written = msgspec.toml.decode(path.read_bytes())
    defaults = msgspec.to_builtins(Config())
    for section, values in defaults.items():
        if not isinstance(values, dict):
            continue  # secrets come from the environment, not the file
        assert section in written, f"[{section}] missing from config.example.toml"
        text = path.read_text()
        assert set(written[section]) <= set(values), f"[{section}] has keys the Config struct lacks"
        for key, value in values.items():
            if key not in written[section] and value == {}:
                # An empty table by default, shown as a commented example.
                assert f"[{section}.{key}" in text, f"{section}.{key} is not documented"
                continue
            assert key in written[section], f"{section}.{key} missing from config.example.toml"
            assert written[section][key] == value, f"{section}.{key}: example says {written[section][key]!r}, default is {value!r}"
    assert load_config(str(path), environ={}) == load_config(None, environ={})
