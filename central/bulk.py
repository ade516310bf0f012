"""Bulk writes of many rows in one round trip, for the ledger's hot path (store uploads).

SQLAlchemy's ``executemany`` compiles nothing twice, but it still builds and processes a parameter
set per row, and with asyncpg every row is one Bind/Execute inside PostgreSQL. Here a statement
per table and per call is built once per process and executed through the driver:

- **PostgreSQL**: one ``INSERT … SELECT … FROM json_populate_recordset(NULL::table, $1)`` (or
  ``UPDATE … FROM json_populate_recordset(…)``) whose one parameter is every row as a JSON
  array, made by ``pydantic_core.to_json`` (Rust; dates and aware times as ISO 8601, the
  offset kept; callers pass aware times): one statement, one executor start, one parameter whatever
  the number of rows (asyncpg's array parameters cost several Python ``isinstance`` checks per
  element, which made ``unnest`` arrays slower than this). PostgreSQL types each field as the
  table's column (ISO dates and times; nested JSON for ``json`` columns, stored as it is).
- **SQLite**: the driver's ``executemany`` of one ``INSERT`` / ``UPDATE`` (sqlite3 runs it in C);
  values go through each column's SQLAlchemy bind processor (JSON to text, dates and times to
  SQLite's text format), so they are stored exactly as ``conn.execute(table.insert(), rows)``
  stores them.

``tests/central/test_batch_apply.py`` holds both paths to what SQLAlchemy's own statements
write, and ``one_of``, the set membership with one parameter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic_core import to_json
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Statement:
    sql: str
    processors: tuple[Processor, ...]  # one per parameter column, in order


_CACHE: dict[tuple[Any, ...], _Statement] = {}


def _processor(column: sa.Column[Any], dialect: Dialect) -> Processor:
    processor: Processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor


def _statement(
    conn: AsyncConnection,
    kind: str,
    table: sa.Table,
    keys: tuple[str, ...],
    columns: tuple[str, ...],
    constants: tuple[str, ...],
) -> _Statement:
    dialect = conn.dialect
    cache_key = (dialect.name, kind, table.name, keys, columns, constants)
    found = _CACHE.get(cache_key)
    if found is not None:
        return found
    quote = dialect.identifier_preparer.quote
    params = (*keys, *columns)
    processors = tuple(_processor(table.c[name], dialect) for name in params)
    constant_processors = tuple(_processor(table.c[name], dialect) for name in constants)
    if dialect.name == "postgresql":
        # One JSON array of row objects; json_populate_recordset types each field as the
        # table's column (text input: ISO dates and times, nested JSON for json columns).
        source = f"json_populate_recordset(NULL::{quote(table.name)}, $1::text::json) AS v"
        if kind == "insert":
            names = ", ".join(quote(n) for n in params)
            sql = (
                f"INSERT INTO {quote(table.name)} ({names}) "
                f"SELECT {', '.join(f'v.{quote(n)}' for n in params)} FROM {source}"
            )
        else:
            sets = [f"{quote(n)} = v.{quote(n)}" for n in columns]
            sets += [
                f"{quote(n)} = ${i}::{table.c[n].type.compile(dialect=dialect)}"
                for i, n in enumerate(constants, start=2)
            ]
            where = " AND ".join(f"t.{quote(n)} = v.{quote(n)}" for n in keys)
            sql = (
                f"UPDATE {quote(table.name)} AS t SET {', '.join(sets)} FROM {source} WHERE {where}"
            )
        processors = ()
        constant_processors = ()
    elif kind == "insert":
        sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in params)}) "
            f"VALUES ({', '.join('?' for _ in params)})"
        )
    else:
        # Parameters in the order of the statement: the set columns, the constants, the keys.
        sets = [f"{quote(n)} = ?" for n in (*columns, *constants)]
        where = " AND ".join(f"{quote(n)} = ?" for n in keys)
        sql = f"UPDATE {quote(table.name)} SET {', '.join(sets)} WHERE {where}"
    statement = _Statement(sql, processors + constant_processors)
    _CACHE[cache_key] = statement
    return statement


def _column_values(processor: Processor, values: list[Any]) -> list[Any]:
    if processor is None:
        return values
    return [None if value is None else processor(value) for value in values]


async def insert_rows(
    conn: AsyncConnection, table: sa.Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert rows (dicts with the same keys) in one statement."""
    if not rows:
        return
    columns = tuple(rows[0])
    await _run(conn, "insert", table, (), columns, rows, {})


async def update_rows(
    conn: AsyncConnection,
    table: sa.Table,
    keys: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    constants: Mapping[str, Any] | None = None,
) -> None:
    """``UPDATE table SET <the rows' other columns> [, <constants>] WHERE <keys> = …`` per row,
    in one statement. Every row has the same keys; ``constants`` are the same for all rows."""
    if not rows:
        return
    key_names = tuple(keys)
    columns = tuple(name for name in rows[0] if name not in key_names)
    await _run(conn, "update", table, key_names, columns, rows, dict(constants or {}))


async def _run(
    conn: AsyncConnection,
    kind: str,
    table: sa.Table,
    keys: tuple[str, ...],
    columns: tuple[str, ...],
    rows: Sequence[Mapping[str, Any]],
    constants: dict[str, Any],
) -> None:
    statement = _statement(conn, kind, table, keys, columns, tuple(constants))
    if conn.dialect.name == "postgresql":
        body = to_json(rows).decode()
        await conn.exec_driver_sql(statement.sql, (body, *constants.values()))
        return
    params = (*keys, *columns)
    value_processors = statement.processors[: len(params)]
    constant_values = [
        value if value is None or processor is None else processor(value)
        for processor, value in zip(
            statement.processors[len(params) :], constants.values(), strict=True
        )
    ]
    by_column = [
        _column_values(processor, [row[name] for row in rows])
        for name, processor in zip(params, value_processors, strict=True)
    ]
    if kind == "insert":
        await conn.exec_driver_sql(statement.sql, list(zip(*by_column, strict=True)))
        return
    key_values = by_column[: len(keys)]
    set_values = by_column[len(keys) :]
    await conn.exec_driver_sql(
        statement.sql,
        [
            (*sets, *constant_values, *key_row)
            for sets, key_row in zip(
                zip(*set_values, strict=True) if set_values else [()] * len(rows),
                zip(*key_values, strict=True),
                strict=True,
            )
        ],
    )


def one_of(column: sa.ColumnElement[Any], values: Sequence[str | int], dialect: Dialect) -> Any:
    """``column`` is one of ``values`` (strings or integers), with one parameter however many
    values there are: on PostgreSQL ``column = ANY($1)`` with an array, on SQLite ``column IN
    (SELECT value FROM json_each(?))`` with a JSON array.

    One parameter per value (``IN (?, ?, …)``) would make every length its own statement, and
    each connection caches its last 128: on SQLite a cached statement of a thousand values holds
    about 200 KiB, so a long-running central server's connections filled with them (24 MiB each,
    growing for an hour in the soak) and every length was compiled again.
    """
    if dialect.name == "postgresql":
        return column == sa.any_(
            sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        )
    each = sa.func.json_each(sa.bindparam(None, json.dumps(list(values)), type_=sa.String))
    return column.in_(sa.select(each.table_valued("value").c.value))
