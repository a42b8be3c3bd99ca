"""The HTTP endpoint: a flask app over one Consumer per dataset (``combe serve`` runs it under gunicorn).

Needs the ``server`` extra: ``pip install 'combe[server]'``. ``create_app`` is
imported on first use, so that ``combe serve`` can read the settings (and
set up multi-process metrics) before flask and prometheus_client load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .auth import Tokens
from .settings import Settings

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["Settings", "Tokens", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
