"""The producer: sources, the fold, and the publish cycle that announces versions."""

from .cycle import CycleResult, PublishOptions, Publisher
from .records import RecordFormat
from .sources import open_source

__all__ = ["CycleResult", "PublishOptions", "Publisher", "RecordFormat", "open_source"]
