"""Alembic revision scripts for the Vigil state store, applied in order by down_revision."""
