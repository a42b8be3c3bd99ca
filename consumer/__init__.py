"""The consumer: an in-memory, read-only copy of a dataset that refreshes atomically."""

from .consumer import Consumer, LiveIndex
from .diff import Change, Diff
from .indexes import Index
from .listeners import Update
from .metrics import ConsumerMetrics, register_metrics
from .timeline import KeyChange, KeyHistory, Timeline
from .view import View

__all__ = ["Change", "Consumer", "ConsumerMetrics", "Diff", "Index", "KeyChange", "KeyHistory", "LiveIndex", "Timeline",
           "Update", "View", "register_metrics"]
