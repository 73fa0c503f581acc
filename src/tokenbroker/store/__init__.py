"""The store: SQLAlchemy (async) over SQLite or PostgreSQL, the only package that imports it.

``Store`` owns the engine; its aggregates (``policy``, ``audit``, ``keys``) hold the SQL.
"""

from tokenbroker.store.lifecycle import Store, UnitOfWork
from tokenbroker.store.policy import UNSET, Unset

__all__ = ["UNSET", "Store", "UnitOfWork", "Unset"]
