from pathlib import Path

import pytest

from hyper.config.settings import Settings, from_dict, load
from hyper.errors import InvalidArgument


def test_defaults_and_overrides(tmp_path: Path):
    file = tmp_path / "config.toml"
    file.write_text(
        '[paths]\nstate_dir = "/srv/hyper"\n[vm]\naccelerator = "tcg"\ncpus = 2\n'
        "boot_timeout = 30\n"
    )
    settings = load(file)
    assert settings.paths.state_dir == Path("/srv/hyper")
    assert settings.paths.images == Path("/srv/hyper/images")
    assert (settings.vm.accelerator, settings.vm.cpus, settings.vm.boot_timeout) == ("tcg", 2, 30.0)
    assert settings.container == Settings().container


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nope": {}}, "unknown configuration section"),
        ({"vm": {"cpu": 2}}, "unknown configuration key vm.cpu"),
        ({"vm": {"cpus": "2"}}, "must be of type int"),
        ({"vm": {"cpus": True}}, "must be of type int"),
        ({"vm": {"accelerator": "xen"}}, "auto, kvm or tcg"),
        ({"paths": {"run_dir": "relative"}}, "absolute path"),
        ({"guest": {"kernel": "/k"}}, "together"),
    ],
)
def test_bad_settings_name_the_key(data, message):
    with pytest.raises(InvalidArgument, match=message):
        from_dict(data)


def test_missing_named_file_is_an_error(tmp_path: Path):
    with pytest.raises(InvalidArgument, match="does not exist"):
        load(tmp_path / "absent.toml")


def test_registry_section(tmp_path: Path):
    file = tmp_path / "config.toml"
    file.write_text(
        '[paths]\nstate_dir = "/srv/hyper"\n'
        '[registry]\ninsecure = ["localhost:5000", "10.0.0.1:80"]\nca_dir = "/etc/certs.d"\n'
        "max_concurrent_downloads = 5\n"
    )
    settings = load(file)
    assert settings.registry.insecure == ("localhost:5000", "10.0.0.1:80")
    assert settings.registry.ca_dir == Path("/etc/certs.d")
    assert settings.registry.max_concurrent_downloads == 5
    assert settings.auth_file == Path("/srv/hyper/auth.json")
    assert from_dict({"registry": {"auth_file": "/root/.docker/config.json"}}).auth_file == Path(
        "/root/.docker/config.json"
    )
    for bad, message in [
        ({"insecure": "localhost:5000"}, "list of strings"),
        ({"insecure": [1]}, "list of strings"),
        ({"max_concurrent_downloads": 0}, "between 1 and 32"),
        ({"auth_file": "relative.json"}, "absolute"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            from_dict({"registry": bad})
