"""Alembic migration scripts of the dqrxfer database (``dqrxfer.migrations``)."""
