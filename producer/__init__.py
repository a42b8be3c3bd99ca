"""The producer: sources, the fold, and the publish cycle that announces versions."""

from .cycle import CycleResult, PublishOptions, Publisher
from .publish import IncrementalPublisher, publish_state
from .records import RecordFormat
from .sources import Source, open_source

__all__ = ["CycleResult", "IncrementalPublisher", "PublishOptions", "Publisher", "RecordFormat", "Source",
           "open_source", "publish_state"]
