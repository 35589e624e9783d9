"""One statement compiled once for the engine's driver and run on a pooled DBAPI connection.

A cold decision is one round trip; what it costs beyond that is Python. SQLAlchemy's
``Connection.execute`` spends some 200 µs per call on a cached statement (the execution
context, result processing); the round trip itself on loopback is some 100 µs. The facts
reader therefore compiles each statement once (the dialect's own SQL and parameter style)
and hands it to the pooled driver connection, which prepares it server-side after a few
runs (psycopg's ``prepare_threshold``). The pool still owns connecting, reconnecting and
returning; a driver error invalidates the connection and is the dependency's 503.

Only for reads whose columns need no conversion (text, integers, booleans).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

if TYPE_CHECKING:  # the async extension needs greenlet: imported by async hosts only
    from sqlalchemy.ext.asyncio import AsyncEngine

from ...errors import DependencyUnavailableError
from ...reasons import Reason

__all__ = ["Prepared", "driver_error"]


def driver_error(exc: BaseException) -> DependencyUnavailableError:
    """The driver's first line of reason, never its parameters or the URL."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return DependencyUnavailableError(
        f"the database is unavailable: {type(exc).__name__}: {reason}"[:500],
        reason=Reason.FACTS_UNAVAILABLE,
    )


class Prepared:
    """``stmt`` for one dialect: ``rows(engine, params)`` runs it on an engine of it."""

    __slots__ = ("_errors", "_fixed", "_names", "_numbered", "_positional", "sql")

    def __init__(self, dialect: Dialect, stmt: ClauseElement) -> None:
        compiled: Any = stmt.compile(dialect=dialect)  # a SQLCompiler: binds, positiontup
        self.sql = str(compiled)
        # Literal values the statement carries (``literal("active")``), by parameter name.
        self._fixed = {name: bind.value for name, bind in compiled.binds.items()}
        positions = compiled.positiontup
        self._positional = positions is not None
        self._numbered = dialect.paramstyle == "numeric_dollar"  # asyncpg: $1, $2
        self._names: tuple[str, ...] = tuple(positions or compiled.binds)
        self._errors: tuple[type[BaseException], ...] = (dialect.loaded_dbapi.Error,)

    def _params(self, params: Mapping[str, Any]) -> Any:
        fixed = self._fixed
        if self._positional:
            return tuple(params[n] if n in params else fixed[n] for n in self._names)
        return {n: params[n] if n in params else fixed[n] for n in self._names}

    def rows(self, engine: Engine, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        values = self._params(params)
        for _ in range(_ATTEMPTS):
            try:
                conn = engine.raw_connection()
            except Exception as exc:  # the pool could not connect: the database is away
                raise driver_error(getattr(exc, "orig", None) or exc) from None
            driver: Any = conn.driver_connection
            try:
                cursor = driver.cursor()
                cursor.execute(self.sql, values)
                rows = cursor.fetchall()
                cursor.close()
                return rows  # type: ignore[no-any-return]
            except self._errors as exc:
                conn.invalidate(exc)  # a broken connection never goes back to the pool
                if not _broken(driver):
                    raise driver_error(exc) from None
                failure: BaseException = exc  # a stale pooled connection: the next one
            finally:
                conn.close()  # back to the pool (a no-op after invalidate)
        raise driver_error(failure)

    async def arows(self, engine: AsyncEngine, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        values = self._params(params)
        for _ in range(_ATTEMPTS):
            try:
                aconn = await engine.connect()
                raw = await aconn.get_raw_connection()
            except Exception as exc:
                raise driver_error(getattr(exc, "orig", None) or exc) from None
            driver: Any = raw.driver_connection
            try:
                if self._numbered:  # asyncpg speaks $n with positional arguments
                    return [tuple(r) for r in await driver.fetch(self.sql, *values)]
                cursor = driver.cursor()  # psycopg's AsyncConnection
                await cursor.execute(self.sql, values)
                rows = await cursor.fetchall()
                await cursor.close()
                return rows  # type: ignore[no-any-return]
            except Exception as exc:
                await aconn.invalidate(exc)
                if not _broken(driver):
                    raise driver_error(getattr(exc, "orig", None) or exc) from None
                failure: BaseException = exc
            finally:
                await aconn.close()
        raise driver_error(failure)


#: Checkouts a read may try: a database restart leaves every pooled connection stale (the
#: pool's 8 plus its overflow), and each fails at once; a read is safe to repeat.
_ATTEMPTS = 17


def _broken(driver: Any) -> bool:
    """Whether the driver's connection is dead (psycopg: ``broken``; asyncpg:
    ``is_closed()``), as after a server restart, rather than the statement failing."""
    if getattr(driver, "broken", False) is True or getattr(driver, "closed", False) is True:
        return True
    is_closed = getattr(driver, "is_closed", None)
    return bool(is_closed()) if callable(is_closed) else False
