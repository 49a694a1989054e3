"""Which backend a configuration selects (config.py, storage/backend.py): a postgresql:// URL
from the file, RECALLED_DB or --db selects PostgreSQL, a path keeps SQLite, and a URL's
password never reaches a log line. No database is opened here."""

from __future__ import annotations

from pathlib import Path

import pytest

from recalled_lite.config import load_config
from recalled_lite.errors import ConfigError
from recalled_lite.storage.backend import describe_location, is_database_url, redact_database_url

URL = "postgresql://recalled:s3cret-pw@db.internal:5432/audit"


def test_a_url_in_the_environment_or_a_flag_selects_postgresql(tmp_path):
    for config in (load_config(environ={"RECALLED_DB": URL}), load_config(environ={}, db=URL)):
        assert config.database.url == URL and config.db_location == URL
        # The secret and signing key stay files in the working directory, never in the database.
        assert config.secret_path == Path("recalled.secret")
        assert config.signing_key_path == Path("recalled.signing-key")


def test_a_path_keeps_sqlite_and_overrides_a_url_from_the_file(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text(f'[database]\nurl = "{URL}"\n')
    assert load_config(str(file), environ={}).db_location == URL
    config = load_config(str(file), environ={}, db=str(tmp_path / "r.db"))
    assert config.database.url == "" and config.db_location == tmp_path / "r.db"
    assert config.secret_path == Path(str(tmp_path / "r.db") + ".secret")
    env = load_config(str(file), environ={"RECALLED_DB": str(tmp_path / "e.db")})
    assert env.db_location == tmp_path / "e.db"
    # The flag beats the environment, whichever kind each is.
    assert load_config(str(file), environ={"RECALLED_DB": str(tmp_path / "e.db")}, db=URL).db_location == URL


def test_database_url_must_be_a_postgresql_url(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('[database]\nurl = "mysql://x/y"\n')
    with pytest.raises(ConfigError, match="database.url"):
        load_config(str(file), environ={})


def test_the_password_is_redacted_everywhere_it_is_shown():
    config = load_config(environ={"RECALLED_DB": URL})
    assert "s3cret-pw" not in repr(config.redacted()) and "[redacted]" in config.redacted()["database"]["url"]
    assert "s3cret-pw" not in config.db_description
    assert redact_database_url("postgres://u:p@h/d?sslmode=require&password=x") == \
        "postgres://u:[redacted]@h/d?sslmode=require&password=[redacted]"
    assert redact_database_url("postgresql://h/d") == "postgresql://h/d"
    assert describe_location(Path("/var/lib/r.db")) == "/var/lib/r.db"
    assert is_database_url(URL) and is_database_url("postgres://h/d")
    assert not is_database_url("./recalled.db") and not is_database_url(Path("postgresql:/x"))


def test_serve_on_an_unreachable_database_exits_2_and_makes_no_secret(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
    env["RECALLED_DB"] = "postgresql://recalled:s3cret-pw@127.0.0.1:1/none"
    done = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "serve", "--port", "0"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "cannot connect to PostgreSQL" in done.stderr and "s3cret-pw" not in done.stderr + done.stdout
    assert not (tmp_path / "recalled.secret").exists()
