"""Application settings from environment variables (prefix HEATPROMPT_, plus DATABASE_URL)
and an optional TOML file named by HEATPROMPT_CONFIG."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from model.geometry import parse_scale

if TYPE_CHECKING:
    from model.train import TrainConfig

# Old flat keys of the training knobs → their key in the [training] table; still read.
RENAMED = {"retrain_epochs": "epochs", "retrain_max_minutes": "max_minutes"}


STARTER_KNOBS = ("first_model_start", "starter_epochs", "starter_minutes", "starter_images")


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainingSettings:
    """The knobs of a retraining run's training: `[training]` in the TOML file,
    `HEATPROMPT_TRAINING__<KNOB>` in the environment. None keeps the training default."""

    epochs: int = Field(default=30, ge=1)
    max_minutes: float = Field(default=10.0, gt=0)
    seed: int = 0
    val_fraction: float | None = Field(default=None, ge=0, lt=1)  # None: a fifth
    batch_size: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    patience: int | None = Field(default=None, ge=1)
    # A fresh model's pixel scale ("auto": fit when every labelled image is about one tile,
    # else native pixels; "fit"; or a factor such as "1.0", "0.5") and tile side (None:
    # the encoder's own). A fine-tune keeps the scale and tile of the model it starts from.
    scale: str | float = "auto"
    input_size: int | None = Field(default=None, ge=32)
    tiles_per_image: int | None = Field(default=None, ge=1)
    # The defect-type head's kind: "pixel" (a class map; the default) or "region".
    type_head: Literal["pixel", "region"] | None = None
    # What a line's first model starts from: "starter" heads trained once on the built-in
    # synthetic surfaces (`model.starter`; `starter_images` of them for `starter_epochs`,
    # or `starter_minutes` if that ends first; kept beside the models), or fresh "scratch"
    # heads.
    first_model_start: Literal["starter", "scratch"] = "starter"
    # model.starter's STARTER_EPOCHS and STARTER_MINUTES (not imported: that loads torch).
    starter_epochs: int = Field(default=12, ge=1)
    starter_minutes: float = Field(default=15.0, gt=0)
    starter_images: int = Field(default=400, ge=10)

    def __post_init__(self) -> None:
        parse_scale(self.scale)  # a bad value fails when the settings are read

    def train_config(self) -> TrainConfig:
        """The one conversion into the training loop's own config."""
        from model.train import TrainConfig  # imports torch: only training processes need it

        not_loop = {"val_fraction", "scale", "input_size", *STARTER_KNOBS}
        own = (f.name for f in dataclasses.fields(TrainingSettings) if f.name not in not_loop)
        return TrainConfig(**{k: v for k in own if (v := getattr(self, k)) is not None})


class Settings(BaseSettings):
    """Every knob of the application, with its embedded default."""

    model_config = SettingsConfigDict(
        env_prefix="HEATPROMPT_", extra="forbid", env_nested_delimiter="__"
    )

    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "HEATPROMPT_DATABASE_URL")
    )
    host: str = "127.0.0.1"
    port: int = 7860
    holdout_percent: int = Field(default=10, ge=0, le=50)
    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    # Any request body (API upload, UI upload of files or zip archives); refused with 413.
    max_request_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    lease_seconds: float = 600.0
    prediction_queue_size: int = Field(default=256, ge=1)  # image ids, not pixels
    # Background predictions are made this many queued images at a time (one model call).
    prediction_batch_size: int = Field(default=8, ge=1)
    # Threads predicting background batches at once (None: one per CPU core, up to 4, each
    # computing on its share of the cores; one on a GPU). See `model.cpu_threads`.
    prediction_workers: int | None = Field(default=None, ge=1)
    # Test-time views served: None all the model's calibrated ones, N the first N (faster).
    prediction_views: int | None = Field(default=None, ge=1)
    # Predict in bfloat16 on CPUs with native bfloat16 (float16 on CUDA): about 2x faster
    # encoder passes, the same masks within rounding; False keeps float32.
    prediction_mixed_precision: bool = True
    retrain_check_minutes: float = Field(default=10.0, gt=0)
    retrain_min_corrections: int = Field(default=20, ge=1)
    retrain_from_scratch: bool = False
    promotion_margin: float = Field(default=0.01, ge=0)
    # Refuse a candidate whose holdout IoU on any one defect type drops more than this
    # below the active model's (None: types are not gated one by one).
    type_regression_margin: float | None = Field(default=None, ge=0)
    # Cold start: the first model trains itself once this many labels (with at least this
    # many defective) exist; until a model is served, a share of queue picks is random.
    first_model_labels: int = Field(default=20, ge=1)
    first_model_min_defective: int = Field(default=3, ge=0)
    cold_start_random_share: float = Field(default=0.2, ge=0, le=1)
    hot_swap_seconds: float = Field(default=5.0, gt=0)
    # Zero-label anomaly maps: the normality model is refitted from the known-good images
    # at most this often, one member per encoder input size (`model.normality_ensemble`;
    # one number keeps one size).
    anomaly_refit_seconds: float = Field(default=10.0, ge=0)
    anomaly_input_sizes: tuple[int, ...] = (256, 512)
    checkpoint: Path | None = None  # served when the database has no active version yet
    sam_checkpoint: Path | None = None  # Meta's SAM weights, for sam_vit_* models
    training: TrainingSettings = TrainingSettings()
    token_days: int = Field(default=90, ge=0)  # API token lifetime; 0: tokens never expire

    @field_validator("anomaly_input_sizes", mode="before")
    @classmethod
    def _sizes(cls, value: object) -> object:
        return (value,) if isinstance(value, int | str) else value

    @field_validator("anomaly_input_sizes")
    @classmethod
    def _distinct_sizes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or min(value) < 32 or len(set(value)) != len(value):
            raise ValueError(f"need one or more distinct input sizes of at least 32, got {value}")
        return tuple(sorted(value))

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

    @property
    def models_dir(self) -> Path:
        """Trained checkpoints and the starter heads."""
        return self.data_dir / "models"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Old keys are renamed within each source, so the precedence of sources holds.
        sources: list[PydanticBaseSettingsSource] = [
            _Renamed(init_settings),
            env_settings,
            _RenamedEnv(settings_cls),
        ]
        config_file = os.environ.get("HEATPROMPT_CONFIG")
        if config_file:
            toml = TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file))
            sources.append(_Renamed(toml))
        return tuple(sources)


def _renamed(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with the old flat keys (`RENAMED`) moved into the training table."""
    values = dict(values)
    old = sorted(RENAMED.keys() & values.keys())
    if not old:
        return values
    training = values.get("training", {})
    if dataclasses.is_dataclass(training) and not isinstance(training, type):
        training = dataclasses.asdict(training)
    training = dict(training)
    for key in old:
        new = RENAMED[key]
        if new in training:
            raise ValueError(f"{key} is the old name of training.{new}: set only training.{new}")
        training[new] = values.pop(key)
    values["training"] = training
    return values


class _Renamed(PydanticBaseSettingsSource):
    """Another source's values, old keys renamed (`_renamed`)."""

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self.inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the inner source whole

    def __call__(self) -> dict[str, Any]:
        return _renamed(self.inner())


class _RenamedEnv(PydanticBaseSettingsSource):
    """The old environment variables (HEATPROMPT_RETRAIN_EPOCHS, …), below the new ones."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        names = {key: f"HEATPROMPT_{key.upper()}" for key in RENAMED}
        return _renamed({k: os.environ[n] for k, n in names.items() if n in os.environ})


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment / TOML file, with explicit overrides on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
