"""The app's one typed, frozen configuration, loaded once in ``app.py`` from ``cdk.json`` context."""

from .errors import ConfigError

__all__ = ["ConfigError"]
