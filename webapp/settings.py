"""Application settings from environment variables (prefix HEATPROMPT_, plus DATABASE_URL)
and an optional TOML file named by HEATPROMPT_CONFIG."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    """Every knob of the application, with its embedded default."""

    model_config = SettingsConfigDict(env_prefix="HEATPROMPT_", extra="forbid")

    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "HEATPROMPT_DATABASE_URL")
    )
    host: str = "127.0.0.1"
    port: int = 7860
    holdout_percent: int = Field(default=10, ge=0, le=50)
    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    lease_seconds: float = 600.0
    retrain_check_minutes: float = Field(default=10.0, gt=0)
    retrain_min_corrections: int = Field(default=20, ge=1)
    retrain_max_minutes: float = Field(default=10.0, gt=0)
    retrain_epochs: int = Field(default=30, ge=1)
    retrain_from_scratch: bool = False
    promotion_margin: float = Field(default=0.01, ge=0)
    hot_swap_seconds: float = Field(default=5.0, gt=0)
    checkpoint: Path | None = None  # served when the database has no active version yet
    sam_checkpoint: Path | None = None  # Meta's SAM weights, for sam_vit_* models

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "heatprompt.db"

    @property
    def resolved_database_url(self) -> str:
        """DATABASE_URL when set, else the SQLite file under the data directory."""
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def inbox_dir(self) -> Path:
        """Watched folder: image files dropped here are ingested (see webapp.inbox)."""
        return self.data_dir / "inbox"

    @property
    def feature_cache_dir(self) -> Path:
        return self.data_dir / "cache" / "features"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("HEATPROMPT_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment / TOML file, with explicit overrides on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
