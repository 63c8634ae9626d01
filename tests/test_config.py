"""The config loader: resolution order, validation errors, atomic 0600 writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from psabill.config import edit, paths
from psabill.config import settings as config
from psabill.errors import ConfigError


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


class TestResolution:
    def test_the_option_wins_over_the_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PSABILL_CONFIG", str(tmp_path / "env.toml"))
        assert paths.resolve_config(str(tmp_path / "opt.toml")) == tmp_path / "opt.toml"

    def test_the_environment_wins_over_the_default(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PSABILL_CONFIG", str(tmp_path / "env.toml"))
        assert paths.resolve_config(None) == tmp_path / "env.toml"

    def test_the_default_is_the_user_config_dir(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PSABILL_CONFIG")
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
        assert paths.resolve_config(None) == tmp_path / "xdg" / "psabill" / "config.toml"


class TestValidation:
    @pytest.mark.parametrize(
        "text, message",
        [
            ('[schedule]\nhour = 24\n', "schedule.hour = 24: expected an integer 0-23"),
            ('[schedule]\nmode = "yearly"\n', "schedule.mode = 'yearly': expected one of 'monthly', 'weekly', 'daily'"),
            ('[schedule]\nday = 0\n', 'schedule.day = 0: expected 1-31 or "last"'),
            ('[schedule]\ncatch_up = "soon"\n', "schedule.catch_up = 'soon': expected a duration"),
            ('[account]\ntimezone = "Mars/Base"\n', "account.timezone = 'Mars/Base': unknown time zone"),
            ('[notify]\nemails = "a@b.example"\n', "notify.emails = 'a@b.example': expected a list of strings"),
            ('[schedule]\nenabled = "yes"\n', "schedule.enabled = 'yes': expected true or false"),
            ('[psa]\nconcurrency = 0\n', "psa.concurrency = 0: expected an integer 1-64"),
        ],
        ids=["hour", "mode", "day", "catch_up", "zone", "emails_type", "bool", "concurrency"],
    )
    def test_a_wrong_value_names_the_key_path_and_the_value(self, tmp_path: Path, text: str, message: str) -> None:
        path = write(tmp_path / "c.toml", text)
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert info.value.message.startswith(f"{path}: {message}")

    def test_an_unknown_key_names_the_key_and_the_file(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.toml", "[schedule]\nhuor = 9\n")
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert info.value.message == f"{path}: unknown key 'huor' in [schedule]"

    def test_an_unknown_section_is_refused(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.toml", "[scheduel]\nhour = 9\n")
        with pytest.raises(ConfigError, match=r"unknown section \[scheduel\]"):
            config.load(path)

    def test_malformed_toml_gives_the_line(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.toml", 'version = 1\n\n[account]\nname = "x\n')
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert "malformed TOML" in info.value.message and "line 4" in info.value.message

    def test_a_bad_address_in_the_file_is_a_config_error(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.toml", '[notify]\nemails = ["ok@msp.example", "nope"]\n')
        with pytest.raises(ConfigError, match=r"\[notify\] emails: address 'nope' is not valid"):
            config.load(path)

    def test_a_literal_secret_in_a_group_readable_file_is_refused_with_the_fix(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.toml", '[psa]\nprivate_key = "s3cr3t-value"\n', mode=0o640)
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert f"chmod 600 {path}" in info.value.message
        assert "s3cr3t-value" not in info.value.message
        os.chmod(path, 0o600)
        assert config.load(path).psa.private_key.literal == "s3cr3t-value"


class TestSave:
    def test_save_is_0600_has_a_version_and_round_trips(self, tmp_path: Path) -> None:
        path = tmp_path / "new" / "config.toml"
        edit.save(path, {"account": {"timezone": "UTC"}, "products": {"LastPass": "LP-STD"}})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        loaded = config.load(path)
        assert loaded.document == {"version": 1, "account": {"timezone": "UTC"}, "products": {"LastPass": "LP-STD"}}
        assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp file left behind


class TestLoadedOnce:
    """load() parses unchanged bytes once per process, but never serves an old file or skips a mode check."""

    def test_an_edited_file_is_parsed_again(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.toml", 'version = 1\n[account]\nname = "One"\n')
        assert config.load(path).account.name == "One"
        write(path, 'version = 1\n[account]\nname = "Two"\n')  # same size, same second
        assert config.load(path).account.name == "Two"

    def test_a_broken_edit_is_refused_every_time(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.toml", 'version = 1\n[account]\nname = "One"\n')
        config.load(path)
        write(path, "version = 1\n[account\n")
        for _ in range(2):
            with pytest.raises(ConfigError, match="malformed TOML"):
                config.load(path)

    def test_a_literal_secret_is_checked_against_the_mode_on_every_load(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.toml", 'version = 1\n[psa]\nkind = "connectwise"\nprivate_key = "s3cret"\n')
        config.load(path)
        os.chmod(path, 0o640)
        with pytest.raises(ConfigError, match="readable by group or others"):
            config.load(path)
