"""dqrxfer: move Data Quality Reports to the central store over tus.

The top-level package is the client (the base install).  The server lives in
``dqrxfer.server`` and needs the ``server`` extra.
"""

__version__ = "0.1.0"
