"""The CLI's client.toml and which endpoint and credential one command uses."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hyper import errors
from hyper.cli.credentials import (
    ClientConfig,
    Connection,
    authorization,
    config_path,
    load,
    resolve,
    save,
)

KEY = "hk_0123456789abcdef_" + "a" * 48
REMOTE = "https://hyperd.example:8443"


def test_the_file_lives_in_the_xdg_config_dir() -> None:
    assert config_path({"HOME": "/home/me"}) == Path("/home/me/.config/hyper/client.toml")
    assert config_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/hyper/client.toml")
    assert config_path({"HYPER_CLIENT_CONFIG": "/y.toml", "HOME": "/h"}) == Path("/y.toml")


def test_saved_privately_and_loaded_back(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "hyper" / "client.toml"
    config = ClientConfig(endpoint=REMOTE, key=KEY, ca="/etc/ca.pem")
    save(path, config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load(path) == config
    assert load(tmp_path / "missing.toml") == ClientConfig()
    assert [p.name for p in path.parent.iterdir()] == ["client.toml"]  # no temporary left


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "client.toml"
    save(path, ClientConfig(endpoint=REMOTE, key=KEY))
    os.chmod(path, 0o644)
    with pytest.raises(errors.InvalidArgument, match="chmod 600"):
        load(path)


@pytest.mark.parametrize(
    "text",
    [
        'endpoint = "x"\nsecret = "y"\n',
        "endpoint = 5\n",
        'key = "a\\nb"\n',
        'ca = "relative.pem"\n',
        "not toml at all [",
        'endpoint = "' + "x" * 70000 + '"\n',
    ],
)
def test_bad_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "client.toml"
    path.write_text(text)
    os.chmod(path, 0o600)
    with pytest.raises(errors.InvalidArgument):
        load(path)


def test_options_then_environment_then_file() -> None:
    stored = ClientConfig(endpoint=REMOTE, key=KEY, ca="/ca.pem")
    assert resolve(host=None, key=None, env={}, stored=stored) == Connection(REMOTE, KEY, "/ca.pem")
    other = "hk_1111111111111111_" + "b" * 48
    assert resolve(host=None, key=other, env={"HYPER_KEY": "env"}, stored=stored).key == other
    assert resolve(host=None, key=None, env={"HYPER_KEY": "env"}, stored=stored).key == "env"
    assert resolve(host=None, key=None, env={}, stored=ClientConfig()) == Connection("")


def test_the_stored_key_goes_only_to_the_stored_endpoint() -> None:
    stored = ClientConfig(endpoint=REMOTE, key=KEY, ca="/ca.pem")
    elsewhere = resolve(host="https://evil.example:8443", key=None, env={}, stored=stored)
    assert elsewhere == Connection("https://evil.example:8443", "", "")
    by_env = resolve(host=None, key=None, env={"HYPER_HOST": "unix:///run/h.sock"}, stored=stored)
    assert by_env.key == ""
    same = resolve(host=REMOTE, key=None, env={}, stored=stored)
    assert same.key == KEY


def test_a_path_in_hyper_key_is_the_legacy_tls_key_not_a_credential() -> None:
    assert resolve(host=None, key=None, env={"HYPER_KEY": "/etc/tls/key.pem"}).key == ""


def test_the_credential_travels_as_a_bearer_token() -> None:
    assert authorization(Connection(REMOTE, KEY)) == {"Authorization": f"Bearer {KEY}"}
    assert authorization(Connection(REMOTE)) == {}
    with pytest.raises(errors.InvalidArgument):
        resolve(host=None, key="a b", env={})
