"""The consumer: an in-memory, read-only copy of a dataset that refreshes atomically."""

from .consumer import Consumer, LiveIndex
from .indexes import Index
from .listeners import Update
from .view import View

__all__ = ["Consumer", "Index", "LiveIndex", "Update", "View"]
