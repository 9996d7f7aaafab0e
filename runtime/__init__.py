"""shunter's user-facing side: ``open_runtime()``, configuration, errors, result types, the vocabulary."""

from actors.events import Subscription
from actors.model.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    NotRetryable,
    Overloaded,
    QueueFull,
    ShunterError,
    SpecError,
    UndeclaredVariable,
)
from actors.model.info import (
    BuildInfo,
    Event,
    GroupInfo,
    JobAttemptInfo,
    JobInfo,
    PipelineDeleted,
    PipelineInfo,
    QueueEntry,
    StageInfo,
    Stats,
    StepAttemptInfo,
    StepInfo,
)
from actors.model.vocab import (
    Blocker,
    BuildStatus,
    EventKind,
    FaultKind,
    GroupChange,
    JobStatus,
    NodeChange,
    StageStatus,
    StepStatus,
)

from ._open import open_runtime
from ._runtime import Runtime
from .config import RuntimeConfig, load_config

__all__ = [
    "Blocker",
    "BuildInfo",
    "BuildStatus",
    "Conflict",
    "Event",
    "EventKind",
    "FaultKind",
    "GroupChange",
    "GroupInfo",
    "InvalidRequest",
    "JobAttemptInfo",
    "JobInfo",
    "JobStatus",
    "NodeChange",
    "NotFound",
    "NotRetryable",
    "Overloaded",
    "PipelineDeleted",
    "PipelineInfo",
    "QueueEntry",
    "QueueFull",
    "Runtime",
    "RuntimeConfig",
    "ShunterError",
    "SpecError",
    "StageInfo",
    "StageStatus",
    "Stats",
    "StepAttemptInfo",
    "StepInfo",
    "StepStatus",
    "Subscription",
    "UndeclaredVariable",
    "load_config",
    "open_runtime",
]
