"""Alembic migrations for the Vigil state store (run by vigil.store.Store.open)."""
