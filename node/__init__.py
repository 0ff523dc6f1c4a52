"""cronring: the peer node that serves the API and fires HTTP jobs.

Installed, this folder *is* the ``cronring`` package, with ``dashboard/`` and ``receiver/`` inside it
(``cronring.dashboard``, ``cronring.receiver``, ``cronring.client``): the distribution claims no
generic top-level name. From a checkout it is imported as ``node`` (``python -m node``), and the
folders beside it are found as its subpackages the same way, so every module imports its
neighbours relatively and runs unchanged in both layouts.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

if __name__ == "node":  # a checkout: dashboard/ and receiver/ sit beside node/, not inside it
    __path__.append(str(_Path(__file__).resolve().parent.parent))
