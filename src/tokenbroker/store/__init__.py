"""The store: SQLAlchemy (async) over SQLite or PostgreSQL. The only package that writes SQL."""

from tokenbroker.store.facade import Store
from tokenbroker.store.repository import UNSET, Repository

__all__ = ["UNSET", "Repository", "Store"]
