"""Settings from environment variables and a TOML file."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from webapp.settings import load_settings


def test_toml_file_environment_and_overrides(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "heatprompt.toml"
    config.write_text('data_dir = "/srv/hp"\nport = 8080\nretrain_min_corrections = 50\n')
    monkeypatch.setenv("HEATPROMPT_CONFIG", str(config))
    monkeypatch.setenv("HEATPROMPT_PORT", "9000")  # the environment beats the file
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = load_settings()
    assert settings.data_dir == Path("/srv/hp") and settings.port == 9000
    assert settings.retrain_min_corrections == 50
    assert settings.resolved_database_url == "sqlite:////srv/hp/heatprompt.db"
    assert load_settings(data_dir=tmp_path).data_dir == tmp_path  # explicit beats both
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/hp")
    assert load_settings().resolved_database_url == "postgresql://db/hp"


def test_bad_values_are_refused_with_the_field_name(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("HEATPROMPT_CONFIG", raising=False)
    monkeypatch.setenv("HEATPROMPT_HOLDOUT_PERCENT", "90")
    with pytest.raises(ValidationError, match="holdout_percent"):
        load_settings()
