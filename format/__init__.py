"""The on-storage contract: layout, manifests, blob codec, store access, schema.

Pure functions on bytes and Arrow tables, plus the Store contract and the
Dataset accessor that applies the format's rules to store I/O. Imported by
both the producer and the consumer; imports neither.
"""

from .dataset import Announced, Dataset
from .errors import CombeError
from .manifest import BlobRef, Manifest, Pointer
from .schema import Schema
from .store import Store, open_store

__all__ = ["Announced", "BlobRef", "CombeError", "Dataset", "Manifest", "Pointer", "Schema", "Store", "open_store"]
