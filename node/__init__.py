"""cronring node: the peer that serves the API and fires HTTP jobs."""

__version__ = "0.1.0"
