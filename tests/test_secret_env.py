"""A secret pasted into a ``*_env`` key by mistake is never shown (issue 23, point 1, beyond validation).

``private_key_env`` names a variable; an admin who pastes the key itself there gets
"names a variable ... which is not set" from every command and the cron warning, and
neither may print what was pasted. A conventional name (capitals, digits, _) is shown,
so the usual message still says which variable is missing.
"""

from __future__ import annotations

import os

import tomli_w

from support.env import Env, tomllib

PASTED = "k9Ty2mQpZr8Lw3Xv"  # a ConnectWise private key, pasted where a variable name goes


def _use_env(env: Env, name: str) -> None:
    data = tomllib.loads(env.config.read_text())
    data["psa"].pop("private_key_file", None)
    data["psa"]["private_key_env"] = name
    env.config.write_text(tomli_w.dumps(data))
    os.chmod(env.config, 0o600)


def test_a_secret_pasted_into_an_env_key_is_never_printed(env: Env) -> None:
    env.make_ready()
    _use_env(env, PASTED)
    outputs = [env.run("check").output, env.run("run", "--dry-run").output, env.run("status").output,
               env.run("schedule", "set", "--daily", "--hour", "9", "--timezone", "UTC").output,
               env.run("config", "show", "--json").output]
    for output in outputs:
        assert PASTED not in output, output
        assert PASTED[:12] not in output and PASTED[-12:] not in output
    assert "private_key_file" in outputs[0]  # the fix: put it in a file


def test_a_conventional_variable_name_is_still_named(env: Env) -> None:
    env.make_ready()
    _use_env(env, "CW_PRIVATE_KEY")
    env.monkeypatch.delenv("CW_PRIVATE_KEY", raising=False)
    result = env.run("check")
    assert result.exit_code == 3 and "$CW_PRIVATE_KEY, which is not set" in result.output
