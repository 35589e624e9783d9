"""The throwaway PostgreSQL cluster's fixtures, for the SQL store tests."""

from postgres_server import fresh_database, postgres

__all__ = ["fresh_database", "postgres"]
