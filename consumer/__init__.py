"""The consumer: an in-memory, read-only copy of a dataset that refreshes atomically."""

from .consumer import Consumer
from .view import View

__all__ = ["Consumer", "View"]
