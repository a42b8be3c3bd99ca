"""What one app holds: its datasets, metrics and settings (``app.extensions["combe"]``)."""

from __future__ import annotations

from dataclasses import dataclass

from .auth import Tokens
from .catalog import Catalog
from .metrics import Metrics
from .settings import Settings


@dataclass
class Server:
    catalog: Catalog
    metrics: Metrics
    settings: Settings
    tokens: Tokens | None = None  # None: no token needed

    def close(self) -> None:
        """Stop background loading and the refreshers of the datasets this server opened."""
        self.catalog.close()
