"""Config: the example documents every setting with its default; env overrides; bad values name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from server.config import ConfigError, Settings, iter_settings, load_settings

REPO = Path(__file__).resolve().parents[1]


def test_example_documents_every_setting_with_its_default() -> None:
    example = tomllib.loads((REPO / "config.example.toml").read_text())
    text = (REPO / "config.example.toml").read_text()
    missing, wrong = [], []
    for name, default, help_text in iter_settings():
        section, key = name.split(".", 1)
        if key not in example.get(section, {}):
            missing.append(name)
            continue
        value = example[section][key]
        expected = "" if default is None else default
        if isinstance(expected, Path):
            expected = str(expected)
        if value != expected:
            wrong.append(f"{name}: example {value!r} != default {expected!r}")
        assert help_text, f"{name} has no help text"
        assert help_text in text, f"{name}'s help is not in the example"
    assert not missing, f"settings missing from config.example.toml: {missing}"
    assert not wrong, wrong
    # and nothing in the example that the server does not know
    assert Settings.model_validate(example)


def test_example_file_loads_to_the_defaults(tmp_path: Path) -> None:
    loaded = load_settings(REPO / "config.example.toml", environ={})
    assert loaded.model_dump() == Settings().model_dump()


def test_env_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nport = 9000\n[logging]\nlevel = "DEBUG"\n')
    s = load_settings(cfg, environ={"FORECOURT_SERVER__PORT": "9100", "FORECOURT_RATE_LIMIT__ENABLED": "false"})
    assert s.server.port == 9100
    assert s.logging.level == "DEBUG"
    assert s.rate_limit.enabled is False


def test_config_env_var_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[server]\nworkers = 3\n")
    assert load_settings(environ={"FORECOURT_CONFIG": str(cfg)}).server.workers == 3


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"FORECOURT_SERVER__PORT": "eighty"}, "server.port"),
        ({"FORECOURT_SERVER__TIMEOUT": "30"}, "server.timeout"),
        ({"FORECOURT_MODELS__DEVICE": "tpu"}, "models.device"),
        ({"FORECOURT_SERVER__NOPE": "1"}, "server.nope"),
    ],
)
def test_bad_value_names_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(environ=environ)


def test_bad_toml_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[server\nport=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, environ={})


def test_config_check_cli_stops_on_bad_value(cli_runner) -> None:
    from server.cli import cli

    runner, env = cli_runner
    result = runner.invoke(cli, ["config", "check"], env={**env, "FORECOURT_SERVER__WORKERS": "0"})
    assert result.exit_code == 2
    assert "server.workers" in result.output
    ok = runner.invoke(cli, ["config", "check"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "config OK" in ok.output
