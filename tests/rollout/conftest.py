"""The throwaway PostgreSQL cluster's fixtures, for the rollout tests on a database."""

from postgres_server import fresh_database, postgres

__all__ = ["fresh_database", "postgres"]
