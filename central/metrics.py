"""The central server's metrics in Prometheus's text format (``GET /metrics``).

Counters are per process, as Prometheus expects (it sums them over the instances): operations
applied and rejected, the sync endpoints' and the office's requests, the authorisation's
latency.  What several instances sharing one PostgreSQL know alike — each store's last sync
and upload, the last expiry run — is read from the database at scrape time, in one bounded
query each, so every instance answers the same figures.  ``docs/central.md`` lists every metric.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

import sqlalchemy as sa
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.db import Database
from service.metrics_web import LATENCY_BUCKETS
from shared.journal import OpKind
from shared.protocol import STORE_STATES, OpResult, Rejection

#: Stores listed per scrape at most (the query stays bounded); ``bonus_central_stores`` counts
#: them all.
STORES_LISTED_MAX = 5000
#: Where the expiry job records its last run, for every instance to report it.
EXPIRY_META_KEY = "expiry_last_run"
#: A rejection reason that is none of the protocol's codes.
REJECTION_OTHER = "other"
#: The operation kinds of the journal, counted apart.
OP_KINDS: tuple[str, ...] = get_args(OpKind)


class CentralMetrics:
    """The central server's registry and the metrics it counts as things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ops_applied = Counter(
            "bonus_central_ops_applied",
            "Store operations applied to the ledger (first time only), by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.ops_rejected = Counter(
            "bonus_central_ops_rejected",
            "Store operations rejected as impossible, by reason code.",
            ["reason"],
            registry=self.registry,
        )
        self.sync_requests = Counter(
            "bonus_central_sync_requests",
            "Requests of stores to the sync endpoints, by route template and HTTP status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.authorize_duration = Histogram(
            "bonus_central_authorize_duration_seconds",
            "Time to answer an online redemption authorisation (/sync/v1/authorize).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.office_requests = Counter(
            "bonus_central_office_requests",
            "Office API requests, by method, route template and HTTP status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        for kind in OP_KINDS:
            self.ops_applied.labels(kind)
        for reason in [*Rejection, REJECTION_OTHER]:
            self.ops_rejected.labels(str(reason))

    def count_results(self, kinds: Iterable[str], results: Iterable[OpResult]) -> None:
        """Operations applied for the first time (committed), with their results."""
        known = {str(item) for item in Rejection}
        for kind, result in zip(kinds, results, strict=True):
            if result.status == "rejected":
                reason = result.reason if result.reason in known else REJECTION_OTHER
                self.ops_rejected.labels(reason).inc()
            else:
                self.ops_applied.labels(kind).inc()

    async def scrape(self, db: Database) -> bytes:
        """The whole text: this process's counters, then the database's figures."""
        figures = await database_figures(db)
        shared = CollectorRegistry()
        shared.register(figures)
        return generate_latest(self.registry) + generate_latest(shared)


METRICS_KEY = web.AppKey("metrics", CentralMetrics)


# --- the expiry job's last run ----------------------------------------------------------------


@dataclass(frozen=True)
class ExpiryRun:
    """What the last expiry run did."""

    finished_at: datetime
    duration_s: float
    lots: int
    cards: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "finished_at": self.finished_at.isoformat(),
                "duration_s": round(self.duration_s, 3),
                "lots": self.lots,
                "cards": self.cards,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ExpiryRun:
        data = json.loads(text)
        return cls(
            datetime.fromisoformat(data["finished_at"]),
            float(data["duration_s"]),
            int(data["lots"]),
            int(data["cards"]),
        )


async def record_expiry_run(conn: AsyncConnection, started_s: float, lots: int, cards: int) -> None:
    """Remember the expiry run that began at ``started_s`` (``time.monotonic``) and ends now."""
    run = ExpiryRun(datetime.now(UTC), time.monotonic() - started_s, lots, cards)
    dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(schema.meta).values(key=EXPIRY_META_KEY, value=run.to_json())
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["key"], set_={"value": statement.excluded.value}
        )
    )


# --- figures from the database ------------------------------------------------------------------


@dataclass(frozen=True)
class StoreRow:
    store_id: str
    last_applied_seq: int
    last_sync_at: datetime | None
    last_upload_at: datetime | None
    ops_differing: int
    state: str = "active"
    reported_head_seq: int | None = None


class DatabaseFigures(Collector):
    """Per-store sync state and the last expiry run, as read for one scrape."""

    def __init__(self, stores: list[StoreRow], store_count: int, expiry: ExpiryRun | None) -> None:
        self.stores = stores
        self.store_count = store_count
        self.expiry = expiry

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "bonus_central_stores", "Stores registered at the central server.", self.store_count
        )
        last_sync = GaugeMetricFamily(
            "bonus_central_store_last_sync_timestamp_seconds",
            "When the store last pulled the change feed to its end (Unix time).",
            labels=["store_id"],
        )
        last_upload = GaugeMetricFamily(
            "bonus_central_store_last_upload_timestamp_seconds",
            "When the store's last applied operation arrived (Unix time).",
            labels=["store_id"],
        )
        applied_seq = GaugeMetricFamily(
            "bonus_central_store_last_applied_seq",
            "The store's last operation applied here (its journal sequence number).",
            labels=["store_id"],
        )
        backlog = GaugeMetricFamily(
            "bonus_central_store_backlog_operations",
            "Operations the store reported at its last greeting that are not applied here yet "
            "(absent for an agent that does not report its journal).",
            labels=["store_id"],
        )
        state = GaugeMetricFamily(
            "bonus_central_store_state",
            "1 for the store's state at the central server (active, disabled, closing, closed).",
            labels=["store_id", "state"],
        )
        differing = CounterMetricFamily(
            "bonus_central_store_ops_differing",
            "The store's operations booked with other figures than the store computed.",
            labels=["store_id"],
        )
        for row in self.stores:
            labels = [row.store_id]
            if row.last_sync_at is not None:
                last_sync.add_metric(labels, _aware(row.last_sync_at).timestamp())
            if row.last_upload_at is not None:
                last_upload.add_metric(labels, _aware(row.last_upload_at).timestamp())
            applied_seq.add_metric(labels, row.last_applied_seq)
            if row.reported_head_seq is not None:
                backlog.add_metric(labels, max(0, row.reported_head_seq - row.last_applied_seq))
            for name in STORE_STATES:
                state.add_metric([row.store_id, name], 1.0 if row.state == name else 0.0)
            differing.add_metric(labels, row.ops_differing)
        yield from (last_sync, last_upload, applied_seq, backlog, state, differing)
        if self.expiry is not None:
            run = self.expiry
            yield GaugeMetricFamily(
                "bonus_central_expiry_last_run_timestamp_seconds",
                "When the expiry job last finished (Unix time).",
                _aware(run.finished_at).timestamp(),
            )
            yield GaugeMetricFamily(
                "bonus_central_expiry_last_duration_seconds",
                "How long the expiry job's last run took.",
                run.duration_s,
            )
            yield GaugeMetricFamily(
                "bonus_central_expiry_last_lots_expired",
                "Lots the expiry job's last run burned.",
                run.lots,
            )
            yield GaugeMetricFamily(
                "bonus_central_expiry_last_cards",
                "Cards the expiry job's last run burned points of.",
                run.cards,
            )


def _aware(moment: datetime) -> datetime:
    """SQLite gives naive datetimes back; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def database_figures(db: Database) -> DatabaseFigures:
    """Read what the metrics take from the database: one bounded query per figure."""
    stores, last_op = schema.stores, schema.store_ops.alias("last_op")
    query = (
        sa.select(
            stores.c.store_id,
            stores.c.last_applied_seq,
            stores.c.last_sync_at,
            stores.c.ops_differing,
            stores.c.state,
            stores.c.reported_head_seq,
            last_op.c.received_at,
        )
        .select_from(
            stores.outerjoin(
                last_op,
                sa.and_(
                    last_op.c.store_id == stores.c.store_id,
                    last_op.c.seq == stores.c.last_applied_seq,
                ),
            )
        )
        .order_by(stores.c.store_id)
        .limit(STORES_LISTED_MAX)
    )
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
        count = int(await conn.scalar(sa.select(sa.func.count()).select_from(stores)) or 0)
        expiry = await conn.scalar(
            sa.select(schema.meta.c.value).where(schema.meta.c.key == EXPIRY_META_KEY)
        )
    return DatabaseFigures(
        [
            StoreRow(
                row.store_id,
                int(row.last_applied_seq),
                row.last_sync_at,
                row.received_at,
                int(row.ops_differing),
                str(row.state),
                None if row.reported_head_seq is None else int(row.reported_head_seq),
            )
            for row in rows
        ],
        count,
        ExpiryRun.from_json(expiry) if expiry else None,
    )
