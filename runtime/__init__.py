"""shunter's user-facing side: ``open_runtime()``, configuration, errors, result types."""

from actors.model.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    NotRetryable,
    Overloaded,
    QueueFull,
    ShunterError,
    SpecError,
)
from actors.model.info import (
    BuildInfo,
    Event,
    GroupInfo,
    JobAttemptInfo,
    JobInfo,
    PipelineInfo,
    QueueEntry,
    StageInfo,
    Stats,
    StepAttemptInfo,
    StepInfo,
)

from ._runtime import Runtime, open_runtime
from .config import RuntimeConfig, load_config

__all__ = [
    "BuildInfo",
    "Conflict",
    "Event",
    "GroupInfo",
    "InvalidRequest",
    "JobAttemptInfo",
    "JobInfo",
    "NotFound",
    "NotRetryable",
    "Overloaded",
    "PipelineInfo",
    "QueueEntry",
    "QueueFull",
    "Runtime",
    "RuntimeConfig",
    "ShunterError",
    "SpecError",
    "StageInfo",
    "Stats",
    "StepAttemptInfo",
    "StepInfo",
    "load_config",
    "open_runtime",
]
