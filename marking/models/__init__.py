"""The data model. Domain rules are constraints wherever a constraint can hold them."""
from .base import Base, UTCDateTime, utcnow
from .exam import CardTemplate, ExamSession, Item, MarkingScheme, ResolutionPolicy, Subject
from .people import (ROLES, Exclusion, ItemDuty, LoginSession, Qualification, User, UserRole)
from .scanning import (AnswerKey, AnswerKeySignoff, Candidate, Card, ObjectiveAnswer, OmrRead, OmrTrialRun,
                       PageImage, Registration, ScanBatch, Script, SpotCheck)
from .work import (LIVE_SLOTS, SLOTS, Mark, MarkTask, ProcessScore, RegisterEntry, Resolution,
                   Response, ReviewRequest, ReviewSample, ScoreChange)
from .audit import LedgerEntry, LedgerEvent, LedgerHead, OutboxEvent
from .calibration import CalibrationResult, CalibrationSetting, MarkerSuspension, StandardisationResponse

__all__ = [name for name in dir() if not name.startswith("_")]
