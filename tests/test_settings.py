"""Settings from environment variables and a TOML file."""

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from webapp.settings import Settings, load_settings


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


def _no_training_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("HEATPROMPT_TRAINING__", "HEATPROMPT_RETRAIN_")):
            monkeypatch.delenv(name)


def test_training_table_from_toml_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_training_env(monkeypatch)
    config = tmp_path / "heatprompt.toml"
    config.write_text("port = 8080\n[training]\nepochs = 5\nmax_minutes = 2.5\nlr = 0.001\n")
    monkeypatch.setenv("HEATPROMPT_CONFIG", str(config))
    monkeypatch.setenv("HEATPROMPT_TRAINING__EPOCHS", "7")  # the environment beats the file
    training = load_settings().training
    assert (training.epochs, training.max_minutes, training.lr) == (7, 2.5, 0.001)
    assert training.batch_size is None and training.seed == 0  # untouched knobs keep defaults
    assert Settings(training={"seed": 3}).training.seed == 3  # explicit beats both


def test_old_training_keys_work_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_training_env(monkeypatch)
    config = tmp_path / "heatprompt.toml"
    config.write_text("retrain_epochs = 4\nretrain_max_minutes = 3.0\n")
    monkeypatch.setenv("HEATPROMPT_CONFIG", str(config))
    assert (load_settings().training.epochs, load_settings().training.max_minutes) == (4, 3.0)
    monkeypatch.setenv("HEATPROMPT_RETRAIN_EPOCHS", "6")  # old variable beats the file
    assert load_settings().training.epochs == 6
    monkeypatch.setenv("HEATPROMPT_TRAINING__EPOCHS", "8")  # the new name beats the old
    assert load_settings().training.epochs == 8
    settings = Settings(retrain_epochs=12, retrain_max_minutes=0.5)  # explicit beats all
    assert (settings.training.epochs, settings.training.max_minutes) == (12, 0.5)
    assert "retrain_epochs" not in settings.model_dump()
    again = Settings(**settings.model_dump())  # as the training process rebuilds them
    assert again.training == settings.training


def test_training_table_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_training_env(monkeypatch)
    monkeypatch.delenv("HEATPROMPT_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"retrain_epochs is the old name of training\.epochs"):
        Settings(retrain_epochs=3, training={"epochs": 4})
    with pytest.raises(ValidationError, match=r"training\.epochs"):
        Settings(training={"epochs": 0})
    monkeypatch.setenv("HEATPROMPT_TRAINING__EPOCH", "3")  # a typo is refused, not ignored
    with pytest.raises(ValidationError, match=r"training\.epoch\b"):
        load_settings()


def test_the_per_type_promotion_margin_reaches_the_retraining_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webapp.app import retrain_config

    _no_training_env(monkeypatch)
    monkeypatch.delenv("HEATPROMPT_TYPE_REGRESSION_MARGIN", raising=False)
    monkeypatch.delenv("HEATPROMPT_CONFIG", raising=False)
    assert retrain_config(load_settings(data_dir=tmp_path)).type_regression_margin is None
    config = tmp_path / "heatprompt.toml"
    config.write_text("type_regression_margin = 0.05\n")
    monkeypatch.setenv("HEATPROMPT_CONFIG", str(config))
    assert retrain_config(load_settings()).type_regression_margin == 0.05
    monkeypatch.setenv("HEATPROMPT_TYPE_REGRESSION_MARGIN", "-1")
    with pytest.raises(ValidationError, match="type_regression_margin"):
        load_settings()


def test_the_type_head_kind_reaches_the_training_config(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_training_env(monkeypatch)
    monkeypatch.delenv("HEATPROMPT_CONFIG", raising=False)
    assert load_settings().training.train_config().type_head == "pixel"
    monkeypatch.setenv("HEATPROMPT_TRAINING__TYPE_HEAD", "region")
    assert load_settings().training.train_config().type_head == "region"
    monkeypatch.setenv("HEATPROMPT_TRAINING__TYPE_HEAD", "blob")
    with pytest.raises(ValidationError, match=r"training\.type_head"):
        load_settings()


def test_anomaly_input_sizes_from_a_list_or_one_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEATPROMPT_CONFIG", raising=False)
    monkeypatch.delenv("HEATPROMPT_ANOMALY_INPUT_SIZES", raising=False)
    assert load_settings().anomaly_input_sizes == (256, 512)
    assert load_settings(anomaly_input_sizes=[512, 384]).anomaly_input_sizes == (384, 512)
    monkeypatch.setenv("HEATPROMPT_ANOMALY_INPUT_SIZES", "320")
    assert load_settings().anomaly_input_sizes == (320,)
    monkeypatch.delenv("HEATPROMPT_ANOMALY_INPUT_SIZES")
    config = tmp_path / "heatprompt.toml"
    config.write_text("anomaly_input_sizes = [128, 256]\n")
    monkeypatch.setenv("HEATPROMPT_CONFIG", str(config))
    assert load_settings().anomaly_input_sizes == (128, 256)
    for bad in ([], [16], [256, 256]):
        with pytest.raises(ValidationError, match="anomaly_input_sizes"):
            load_settings(anomaly_input_sizes=bad)
