"""Configuration: every setting range-checked, mistyped WISHBOT_* names warned."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.config import Config, unknown_variables
from bot.errors import ConfigError


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WISHBOT_TIMEOUT", "0"),
        ("WISHBOT_TIMEOUT", "inf"),
        ("WISHBOT_TIMEOUT", "nan"),
        ("WISHBOT_TIMEOUT", "3601"),
        ("WISHBOT_CONCURRENCY", "0"),
        ("WISHBOT_WORKERS", "-3"),
        ("WISHBOT_RETRIES", "21"),
        ("WISHBOT_BACKOFF", "-0.1"),
        ("WISHBOT_MAX_RETRY_AFTER", "-1"),
        ("WISHBOT_GRACE_DAYS", "-1"),
        ("WISHBOT_MAX_DELETIONS", "-1"),
        ("WISHBOT_MAX_LAYER_BYTES", "0"),
        ("WISHBOT_MAX_LAYER_ENTRIES", "0"),
        ("WISHBOT_GITHUB_WRITE_INTERVAL", "-1"),
        ("WISHBOT_POLL_INTERVAL", "0"),
        ("WISHBOT_REAPPLY_INTERVAL", "-60"),
        ("WISHBOT_FORGE", "gitlub"),
        ("WISHBOT_PUBLISHER", "/srv/tree"),
        ("WISHBOT_LISTEN", "8080"),
        ("WISHBOT_LISTEN", "127.0.0.1:99999"),
        ("WISHBOT_MIRRORS", "docker.io=mirror.example.org"),
        ("WISHBOT_TIMEOUT", "ten"),
        ("WISHBOT_WORKERS", "2.5"),
        ("WISHBOT_THIN", "maybe"),
        ("WISHBOT_PLATFORMS", "linux/amd64,amd64"),
    ],
)
def test_out_of_range_or_malformed_settings_are_refused(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        Config.load({variable: value})
    assert variable in str(error.value)
    assert error.value.exit_code == 2


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WISHBOT_TIMEOUT", "0.5"),
        ("WISHBOT_RETRIES", "0"),
        ("WISHBOT_BACKOFF", "0"),
        ("WISHBOT_GRACE_DAYS", "0"),
        ("WISHBOT_MAX_DELETIONS", "0"),
        ("WISHBOT_GITHUB_WRITE_INTERVAL", "0"),
        ("WISHBOT_REAPPLY_INTERVAL", "0"),
        ("WISHBOT_LISTEN", "0.0.0.0:0"),
        ("WISHBOT_PUBLISHER", "cvmfs:unpacked.cern.ch"),
        ("WISHBOT_FORGE", "local"),
        ("WISHBOT_PLATFORMS", "linux/amd64,linux/arm64/v8"),
    ],
)
def test_the_edges_of_each_range_are_allowed(variable: str, value: str) -> None:
    Config.load({variable: value})


def test_the_defaults_are_in_range() -> None:
    assert Config.load({}) == Config()


def test_toml_values_of_the_wrong_kind_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wishbot.toml"
    for text in ("grace_days = true\n", "grace_days = 1.5\n", "timeout = 0\n", "forge = 1\n"):
        path.write_text(text)
        with pytest.raises(ConfigError):
            Config.load({"WISHBOT_CONFIG": str(path)})
    path.write_text("timeout = 10\ngrace_days = 7\n")
    config = Config.load({"WISHBOT_CONFIG": str(path)})
    assert (config.timeout, config.grace_days) == (10.0, 7)


def test_unknown_variables_get_the_closest_name() -> None:
    messages = unknown_variables(
        {
            "WISHBOT_TIMEOUTS": "1",
            "WISHBOT_GRACEDAYS": "1",
            "WISHBOT_INSECURE_REGISTRY": "r:5000",
            "WISHBOT_REGISTRY_CERN_PASWORD": "x",
            "WISHBOT_ZZZ": "1",
            # known: settings, other variables, credential families, non-wishbot names
            "WISHBOT_TIMEOUT": "1",
            "WISHBOT_CONFIG": "/etc/wishbot.toml",
            "WISHBOT_LOCK_DIR": "/var/lib/wishbot",
            "WISHBOT_REGISTRY_CERN_HOST": "r.example.org",
            "WISHBOT_REGISTRY_CERN_USER": "u",
            "WISHBOT_REGISTRY_2_PASSWORD": "p",
            "WISHBOT_FORGE_TOKEN": "t",
            "WISHBOT_WEBHOOK_SECRET": "s",
            "GITLAB_TOKEN": "t",
        }
    )
    assert messages == [
        "WISHBOT_GRACEDAYS is not a wishbot setting and is ignored "
        "(did you mean WISHBOT_GRACE_DAYS?)",
        "WISHBOT_INSECURE_REGISTRY is not a wishbot setting and is ignored "
        "(did you mean WISHBOT_INSECURE_REGISTRIES?)",
        "WISHBOT_REGISTRY_CERN_PASWORD is not a wishbot setting and is ignored "
        "(did you mean WISHBOT_REGISTRY_CERN_PASSWORD?)",
        "WISHBOT_TIMEOUTS is not a wishbot setting and is ignored (did you mean WISHBOT_TIMEOUT?)",
        "WISHBOT_ZZZ is not a wishbot setting and is ignored (see docs/operating.md)",
    ]


def test_the_warning_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    env = {"WISHBOT_POLL_INTERVALL": "5"}
    with caplog.at_level(logging.WARNING, logger="bot.config"):
        Config.load(env)
        Config.load(env)
    assert [r.getMessage() for r in caplog.records].count(
        "WISHBOT_POLL_INTERVALL is not a wishbot setting and is ignored "
        "(did you mean WISHBOT_POLL_INTERVAL?)"
    ) == 1


def test_an_unknown_toml_key_names_the_closest_setting(tmp_path: Path) -> None:
    path = tmp_path / "wishbot.toml"
    path.write_text("grace_day = 7\n")
    with pytest.raises(ConfigError) as error:
        Config.load({"WISHBOT_CONFIG": str(path)})
    assert str(error.value) == f"{path}: unknown setting 'grace_day' (did you mean 'grace_days'?)"
