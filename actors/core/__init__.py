"""The actor kernel: actors, refs (tell/ask), timers, supervision, the system.

It knows nothing about CI; everything else in shunter stands on it.
"""

from ._actor import Actor, ActorFactory
from ._cell import DEFAULT_ASK_TIMEOUT, MailboxStatistics, Ref, Reply
from ._errors import ActorCrashed, ActorError, ActorStopped, AskTimeout
from ._system import ActorSystem, Supervision, SystemStatistics, open_system
from ._timers import TimerHandle, TimerService

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorError",
    "ActorFactory",
    "ActorStopped",
    "ActorSystem",
    "AskTimeout",
    "DEFAULT_ASK_TIMEOUT",
    "MailboxStatistics",
    "Ref",
    "Reply",
    "Supervision",
    "SystemStatistics",
    "TimerHandle",
    "TimerService",
    "open_system",
]
