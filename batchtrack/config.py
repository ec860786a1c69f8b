"""Job configuration: one pydantic model per thing configured, validated at the edge.

A `JobConfig` is filled, in increasing precedence, from defaults, a YAML file, `BATCHTRACK_*`
environment variables (nested with `__`, e.g. `BATCHTRACK_CLIP__LENGTH_FRAMES=120`) and explicit
keyword arguments (the CLI flags). Unknown keys and bad values raise `ConfigError` naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from batchtrack.errors import ConfigError

ENV_PREFIX = "BATCHTRACK_"
_SECRET_HINTS = ("key", "secret", "token", "password", "credential", "session")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClipPlanConfig(_Section):
    """How a video is cut into clips: the spans of its clips/ rows, each tracked from where the previous ended."""

    length_s: float = Field(10.0, gt=0, description="Clip length in seconds (used when length_frames is unset).")
    length_frames: int | None = Field(None, gt=1, description="Clip length in frames; overrides length_s.")


class SampleConfig(_Section):
    """Which frames the tracker sees: every frame, or those nearest to a grid of `fps` per second."""

    fps: float | None = Field(
        None,
        gt=0,
        description="Track only the frames nearest to a grid of this many per second, chosen by each frame's "
        "timestamp (6 = SA-V's annotation rate); rows keep absolute frame indices and true timestamps. A prompt "
        "must sit on a sampled frame (the error names the nearest ones). None: every frame.",
    )


class UnitConfig(_Section):
    """How videos are grouped into work units: what one actor tracks in order and commits at once."""

    max_videos: int = Field(128, ge=1, description="Most videos in one unit (short videos share a unit).")
    max_bytes: int = Field(
        256 * 2**20, ge=1, description="A unit takes videos until their sizes sum past this; a larger video is alone."
    )
    max_attempts: int = Field(
        4, ge=1, description="Attempts of a unit whose actor died before it commits; then it is recorded as failed."
    )
    poison_strikes: int = Field(
        2, ge=1, description="Actor deaths while one video was being tracked that make it a failed row (poison input)."
    )


class ModelConfig(_Section):
    """Which tracker runs, with which weights, and the runtime settings that shape it."""

    name: str = Field("tiny-synthetic", description="Registered model name, e.g. sam2.1_hiera_tiny.")
    checkpoint: str | None = Field(
        None,
        description="A .pt or .safetensors checkpoint: local path, file://, s3://, gs:// or https:// "
        "(read with storage_options, downloaded once per node into cache_dir).",
    )
    random_weights: bool = Field(
        False,
        description="Run a model whose weights are not shipped with random weights (tests and benchmarks only); "
        "without it such a model needs a checkpoint.",
    )
    image_size: int | None = Field(None, gt=0, description="Override the model's input resolution (pixels, square).")
    encoder_batch_size: int | None = Field(
        None, ge=1, description="Frames encoded ahead per image-encoder batch; none = the model's default (4)."
    )
    max_cond_frames: int | None = Field(
        None,
        description="Conditioning frames memory attention reads per object (the closest to the current frame); "
        "older ones are dropped from memory. -1 keeps all (SAM 2.1's default, unbounded in automatic mode); "
        "none = the model's default (4, SAM 3's value).",
    )
    cache_dir: str | None = Field(
        None, description="Per-node checkpoint cache folder; none = $XDG_CACHE_HOME/batchtrack/checkpoints."
    )

    @field_validator("max_cond_frames")
    @classmethod
    def _all_or_at_least_two(cls, value: int | None) -> int | None:
        # 1 would leave no room for both the latest prompt and the one it corrects.
        if value is not None and value != -1 and value < 2:
            raise ValueError("must be -1 (keep all) or >= 2")
        return value

    @model_validator(mode="after")
    def _weights_from_one_place(self) -> ModelConfig:
        if self.random_weights and self.checkpoint is not None:
            raise ValueError("model.random_weights and model.checkpoint exclude each other")
        return self


class ActorConfig(_Section):
    """The pool of tracker actors."""

    num_actors: int | None = Field(
        None,
        ge=1,
        description="Tracker actors in the pool (the minimum when autoscaling). Unset with max_actors unset: a pool "
        "autoscaling from 1 up to what the Ray cluster offers when the job starts (CPUs / num_cpus, or its GPUs).",
    )
    max_actors: int | None = Field(None, ge=1, description="Upper bound of an autoscaling pool.")
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs per actor; 0 runs on CPU. Unset: 1 when the Ray cluster has GPUs, else 0."
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs per actor; torch and decoder threads are sized to this.")
    prefetch_frames: int = Field(8, ge=1, description="Decoded frames queued ahead of the tracker.")
    prefetch_mib: float = Field(
        256.0,
        gt=0,
        description="Bound on the bytes of decoded frames queued ahead of the tracker (MiB): 4K frames "
        "(24 MiB each) stop the decoder before prefetch_frames does; one frame always fits.",
    )
    max_restarts: int = Field(
        -1, ge=-1, description="Times a dead actor is recreated (-1: forever; unit.max_attempts bounds a poison unit)."
    )

    @model_validator(mode="after")
    def _pool_bounds(self) -> ActorConfig:
        if self.max_actors is not None and self.num_actors is not None and self.max_actors < self.num_actors:
            raise ValueError(f"actors.max_actors={self.max_actors} is below actors.num_actors={self.num_actors}")
        return self


class AutoConfig(_Section):
    """Automatic mode: propose objects on keyframes when a video has no prompts (SAM 3-style rules)."""

    enabled: bool = Field(True, description="Track everything in videos that have no prompts.")
    keyframe_every: int = Field(15, ge=1, description="Propose objects every N frames.")
    points_per_side: int = Field(8, ge=1, description="Grid of point prompts per keyframe.")
    min_pred_iou: float = Field(0.6, ge=0, le=1, description="Keep proposals whose predicted IoU is at least this.")
    min_stability: float = Field(0.8, ge=0, le=1, description="Keep proposals at least this stable.")
    nms_iou: float = Field(0.5, ge=0, le=1, description="Mask NMS threshold among proposals.")
    match_iou: float = Field(0.5, ge=0, le=1, description="Proposal↔track IoU that counts as a match.")
    new_object_max_iou: float = Field(0.1, ge=0, le=1, description="A proposal is new below this IoU with every track.")
    new_object_min_score: float = Field(0.7, ge=0, le=1, description="Minimum score of a new object proposal.")
    max_objects: int = Field(16, ge=1, description="Cap on live tracks per clip.")
    association: Literal["iou", "learned"] = Field("iou", description="Detection-to-track association rule.")
    association_head: str | None = Field(
        None,
        description="Association-head safetensors for association='learned' (local path or URI); "
        "none = the head shipped for the model (batchtrack/weights/MODEL.association.safetensors).",
    )


class ConceptConfig(_Section):
    """Concept mode (--text): the settings of SAM 3's video loop a job can change (the rest are SAM 3's)."""

    recondition_every: int = Field(
        16,
        ge=0,
        description="Every this many frames, a track whose mask a confident detection overlaps closely is "
        "re-conditioned on that detection's mask (SAM 3's recondition_every_nth_frame: 16). 0: never. Part of the "
        "clip ids only when not 16, so outputs of the default resume as before.",
    )


class OutputConfig(_Section):
    """What is written under the output URI."""

    pointer_dtype: Literal["float32", "float16"] = Field("float16", description="Object-pointer storage type.")
    compression: Literal["zstd", "snappy", "none"] = Field("zstd", description="Parquet compression codec.")


class JobConfig(BaseSettings):
    """Everything a batch tracking job needs. See README 'Configuration'."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    corpus: str = Field(
        ..., description="Video corpus: a folder, a glob, s3://bucket/prefix, or a JSONL/Parquet manifest."
    )
    output: str = Field(..., description="Output URI (local folder or s3://bucket/prefix).")
    prompts: str | None = Field(None, description="Prompt manifest (JSONL or Parquet); none = automatic mode.")
    text: tuple[str, ...] = Field(
        (),
        description="Concept prompts for every video: noun phrases ('person', 'red car') whose every instance "
        "becomes a track (--text, repeatable; a manifest's text lines add per-video ones). Needs a model with a "
        "concept detector (sam3).",
    )
    clip: ClipPlanConfig = Field(default_factory=ClipPlanConfig, description="Clip planning.")
    sample: SampleConfig = Field(default_factory=SampleConfig, description="Frame sampling (--sample-fps).")
    unit: UnitConfig = Field(default_factory=UnitConfig, description="Work units.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Tracker model.")
    actors: ActorConfig = Field(default_factory=ActorConfig, description="Tracker actor pool.")
    auto: AutoConfig = Field(default_factory=AutoConfig, description="Automatic mode.")
    concept: ConceptConfig = Field(default_factory=ConceptConfig, description="Concept mode (--text).")
    out: OutputConfig = Field(default_factory=OutputConfig, description="Output format.")
    max_failed_fraction: float = Field(
        0.0, ge=0, le=1, description="Exit non-zero when more than this fraction of clips failed."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec storage options (endpoint_url, key, secret, ...)."
    )
    seed: int = Field(
        0, description="Seed of every random choice (baselines' GrabCut/RANSAC, torch), derived per video from this."
    )
    retry_failed: bool = Field(
        False, description="Track again the units a previous run recorded as failed (default: keep their rows)."
    )
    progress_seconds: float = Field(
        10.0, gt=0, description="Seconds between the driver's progress lines when its output is not a terminal."
    )

    @field_validator("corpus", "output")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("text", mode="before")
    @classmethod
    def _phrases(cls, value: Any) -> Any:
        if isinstance(value, str):  # one phrase from YAML or BATCHTRACK_TEXT
            value = [value]
        if isinstance(value, (list, tuple)):
            from batchtrack.io.prompts import canonical_concepts

            return canonical_concepts(str(v) for v in value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # CLI (init kwargs) > env > YAML (passed as init defaults by load_config) > defaults.
        return (init_settings, env_settings)

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with credentials masked, safe for logs and _manifest.json."""
        data = self.model_dump(mode="json")
        data["storage_options"] = _redact(data["storage_options"])
        return data


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if any(h in str(k).lower() for h in _SECRET_HINTS) else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_env_keys() -> None:
    known = set(JobConfig.model_fields)
    for name in os.environ:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        top = name[len(ENV_PREFIX) :].lower().split("__", 1)[0]
        if top not in known:
            raise ConfigError(f"unknown environment variable {name}: '{top}' is not a config key")


def _env_values() -> dict[str, Any]:
    """BATCHTRACK_* variables as a nested dict (values stay strings; pydantic converts them)."""
    values: dict[str, Any] = {}
    for name, raw in os.environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = raw
    return values


def _yaml_key_lines(text: str) -> dict[str, int]:
    """Map each dotted key path of a YAML mapping to its 1-based line, for error messages."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = f"{prefix}{key_node.value}"
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, path + ".")

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, "")
    return lines


def format_validation_error(exc: ValidationError, source: str, key_lines: dict[str, int] | None = None) -> str:
    messages = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        where = source
        if key_lines and key in key_lines:
            where = f"{source}, line {key_lines[key]}"
        if err["type"] == "extra_forbidden":
            messages.append(f"{where}: unknown key '{key}'")
        else:
            messages.append(f"{where}: key '{key}': {err['msg']} (got {err.get('input')!r})")
    return "\n".join(messages)


def load_config(config_file: str | Path | None = None, **overrides: Any) -> JobConfig:
    """Build a JobConfig from an optional YAML file, BATCHTRACK_* env vars and explicit overrides.

    `overrides` use the config's nested shape (`clip={"length_frames": 60}`); None values are ignored
    so unset CLI flags do not mask the file or the environment.
    """
    _check_env_keys()
    file_data: dict[str, Any] = {}
    source = "config"
    if config_file is not None:
        file_data = _read_yaml(Path(config_file))
        source = str(config_file)
        key_lines = _yaml_key_lines(Path(config_file).read_text())
        try:
            # Validate the file alone first so its errors name the file, not the merged result.
            JobConfig.model_validate(_deep_merge({"corpus": "-", "output": "-"}, file_data))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source, key_lines)) from exc
    cleaned = {k: v for k, v in overrides.items() if v is not None}
    merged = _deep_merge(_deep_merge(file_data, _env_values()), cleaned)
    try:
        # model_validate skips the settings sources, so precedence is exactly the merge above.
        return JobConfig.model_validate(merged)
    except ValidationError as exc:
        origin = f"{source} + {ENV_PREFIX}* env + flags" if config_file else f"{ENV_PREFIX}* env + flags"
        raise ConfigError(format_validation_error(exc, origin)) from exc
