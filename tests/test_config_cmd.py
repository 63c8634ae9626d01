"""``psabill config``: init writes a loadable 0600 starter, path names it, show masks secrets."""

from __future__ import annotations

import json
import os
import stat

import pytest

from psabill.config import settings
from psabill.cli.config import MASK
from support.env import Env, last_line


@pytest.mark.parametrize("psa", ["connectwise", "autotask"])
@pytest.mark.parametrize("source", ["csv", "json", "command"])
def test_init_writes_a_commented_private_starter_that_loads(env: Env, psa: str, source: str) -> None:
    result = env.run("config", "init", "--psa", psa, "--source", source)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(env.config.stat().st_mode) == 0o600
    text = env.config.read_text()
    assert text.count("\n# ") >= 8  # every key is explained
    loaded = settings.load(env.config, must_exist=True)
    assert loaded.psa is not None and loaded.psa.kind == psa
    assert loaded.source.kind == source
    credential = loaded.psa.private_key if psa == "connectwise" else loaded.psa.secret
    assert credential.file is not None and credential.literal is None  # secrets via *_file
    assert "_file" in text and "_env" in text


def test_init_refuses_to_overwrite_without_force(env: Env) -> None:
    # Intended change: on an existing config, init adds the missing sections (every byte kept) instead of
    # refusing; it refuses only once nothing is missing, and --force still replaces the config whole.
    assert env.run("config", "init").exit_code == 0
    env.config.write_text("# mine\n")
    result = env.run("config", "init")
    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith("Added [")
    assert env.config.read_text().startswith("# mine\n")
    settings.load(env.config, must_exist=True)  # what it added loads
    before = env.config.read_text()
    again = env.run("config", "init")
    assert again.exit_code == 2
    assert again.output.strip().splitlines() == [
        f"Error: config {env.config} already has every section a starter writes; --force would replace it "
        f"whole, discarding [account], [notify], [source], [products], [mapping], [psa]"]
    assert env.config.read_text() == before  # refused: nothing overwritten
    assert env.run("config", "init", "--force", "--psa", "autotask").exit_code == 0
    assert 'kind = "autotask"' in env.config.read_text()
    assert "# mine" not in env.config.read_text()


def test_init_json(env: Env) -> None:
    data = json.loads(env.run("config", "init", "--json").output)
    # Intended changes: every --json object carries "schema": 1; --source defaults to lastpass;
    # init says whether it created, added to or replaced the config.
    assert data == {"schema": 1, "config": str(env.config), "created": True, "added": [], "replaced": [],
                    "psa": "connectwise", "source": "lastpass"}


def test_path_prints_the_config_in_use(env: Env, tmp_path) -> None:
    assert env.run("config", "path").output.splitlines()[0] == str(env.config)
    other = tmp_path / "other.toml"
    assert env.run("--config", str(other), "config", "path").output.splitlines()[0] == str(other)
    assert json.loads(env.run("config", "path", "--json").output) == {"schema": 1, "config": str(env.config),
                                                                      "exists": False}


def _secret_config(env: Env) -> None:
    env.config.parent.mkdir(parents=True, exist_ok=True)
    env.config.write_text(
        '[psa]\nkind = "connectwise"\nurl = "https://cw.example"\nprivate_key = "s3cr3t-literal"\n'
        '[notify]\nemails = []\n[notify.smtp]\nhost = "smtp.example"\npassword_env = "SMTP_PW"\n'
    )
    os.chmod(env.config, 0o600)


def test_show_masks_literal_secrets_and_shows_env_and_file_names(env: Env) -> None:
    _secret_config(env)
    result = env.run("config", "show")
    assert result.exit_code == 0, result.output
    assert "s3cr3t" not in result.output
    assert f'private_key = "{MASK}"' in result.output
    assert 'password_env = "SMTP_PW"' in result.output
    data = json.loads(env.run("config", "show", "--json").output)
    assert data["schema"] == 1  # every --json object carries it
    assert data["psa"]["private_key"] == MASK
    assert data["notify"]["smtp"]["password_env"] == "SMTP_PW"
    assert data["psa"]["url"] == "https://cw.example"
    assert "s3cr3t-literal" in env.config.read_text()  # showing never rewrites the file


def test_show_without_a_config_is_one_line(env: Env) -> None:
    result = env.run("config", "show")
    assert result.exit_code == 3
    assert last_line(result.output).startswith("Error: no config at ")
    assert last_line(result.output).endswith("run 'psabill config init' to write one")  # intended: the fix
