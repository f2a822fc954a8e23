"""cachewarden: measures, alerts on and heals the caches that break PHP/Laravel in production."""

__version__ = "0.1.0"
