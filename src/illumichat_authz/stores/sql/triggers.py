"""The SQL a host installs when it writes mapped tables itself (PostgreSQL): triggers that
do what every library write does, in the writing transaction: bump the revision, log the
changed keys, notify. ``illumichat-authz db trigger-sql --config FILE`` prints it."""

from __future__ import annotations

from sqlalchemy import ColumnElement, FromClause

from .schema import NOTIFY_CHANNEL, FactsTables

__all__ = ["trigger_sql"]

# A constant channel name is the only value formatted in.
_FUNCTION = f"""\
CREATE OR REPLACE FUNCTION authz_log_change(changed jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE rev bigint;
BEGIN
  UPDATE authz_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision INTO rev;
  INSERT INTO authz_change_log (revision, changed_at, keys)
    VALUES (rev, extract(epoch FROM clock_timestamp()), changed::text);
  IF octet_length(changed::text) < 7800 THEN
    PERFORM pg_notify('{NOTIFY_CHANNEL}', json_build_object('r', rev, 'k', changed)::text);
  ELSE
    PERFORM pg_notify('{NOTIFY_CHANNEL}', json_build_object('r', rev)::text);
  END IF;
  RETURN rev;
END $$;
"""  # noqa: S608


def _q(name: str) -> str:
    # Always quoted: the mapping's names keep their case ("userId"), and are plain
    # identifiers already (the settings refuse anything else).
    return '"' + name.replace('"', '""') + '"'


def _column(column: ColumnElement[str]) -> str:
    return _q(str(getattr(column, "name", "")))


def _table_name(table: FromClause) -> str:
    schema = getattr(table, "schema", None)
    name = _q(str(getattr(table, "name", "")))
    return f"{_q(schema)}.{name}" if schema else name


def _trigger(table: FromClause, label: str, key: list[str | ColumnElement[str]]) -> str:
    """A row trigger whose changed keys are ``key`` (literals and columns) of OLD and NEW."""

    def parts(row: str) -> str:
        return ", ".join(f"'{k}'" if isinstance(k, str) else f"{row}.{_column(k)}" for k in key)

    fn = _q(f"authz_{label}_changed")
    target = _table_name(table)
    return f"""\
CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM authz_log_change(jsonb_build_array(jsonb_build_array({parts("NEW")})));
  ELSIF TG_OP = 'DELETE' THEN
    PERFORM authz_log_change(jsonb_build_array(jsonb_build_array({parts("OLD")})));
  ELSE
    PERFORM authz_log_change(jsonb_build_array(
      jsonb_build_array({parts("OLD")}), jsonb_build_array({parts("NEW")})));
  END IF;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS authz_changed ON {target};
CREATE TRIGGER authz_changed AFTER INSERT OR UPDATE OR DELETE ON {target}
  FOR EACH ROW EXECUTE FUNCTION {fn}();
"""


def trigger_sql(tables: FactsTables) -> str:
    """The function and one trigger per mapped table (nothing to map: the function only)."""
    out = [_FUNCTION]
    m = tables.memberships
    if "memberships" in tables.mapped:
        out.append(_trigger(m.table, "memberships", ["membership", m.user, m.workspace]))
    for what in tables.mapped:
        fact, _, kind = what.partition(".")
        if fact == "resources":
            r = tables.resource(kind)
            out.append(_trigger(r.table, f"resources_{kind}", ["resource", kind, r.id]))
        elif fact == "grants":
            g = tables.grant(kind)
            out.append(_trigger(g.table, f"grants_{kind}", ["grant", g.user, kind, g.id]))
    return "\n".join(out)
