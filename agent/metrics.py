"""The agent's metrics in Prometheus's text format, served at ``GET /metrics``.

Each application has a registry of its own (several agents run in one test process). Counters
are counted as things happen; what the store's state says (the sync's age, the queue, the
writer's queue) is read at scrape time by a collector, so it is never stale and needs no timer.
No label holds a card number, a phone or a token: requests are counted by route template,
errors by their stable code.  ``docs/agent-config.md`` lists every metric.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.http import CONFIG_KEY
from service.metrics_web import (
    LATENCY_BUCKETS,
    check_metrics_access,
    metrics_response,
    route_template,
)
from service.web import ERROR_CODE_KEY, Handler
from shared.errors import ErrorCode
from shared.protocol import Rejection

if TYPE_CHECKING:
    from agent.context import AgentContext
    from agent.providers import MessageProvider

METRICS_PATH = "/metrics"
#: Why a message provider failed (``agent.providers.ErrorReason``).
PROVIDER_REASONS = ("unavailable", "no_balance", "rejected")
#: A rejection reason the central server sent that is none of the protocol's codes.
REJECTION_OTHER = "other"


class AgentMetrics:
    """The agent's registry and the metrics counted as things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_duration = Histogram(
            "bonus_agent_http_request_duration_seconds",
            "Time to answer a till API request, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "bonus_agent_http_errors",
            "Requests answered with an error, by stable error code.",
            ["code"],
            registry=self.registry,
        )
        self.sync_rounds = Counter(
            "bonus_agent_sync_rounds",
            "Sync rounds with the central server, by result (complete or failed).",
            ["result"],
            registry=self.registry,
        )
        self.ops_rejected = Counter(
            "bonus_agent_ops_rejected",
            "Operations of this store the central server rejected, by reason code.",
            ["reason"],
            registry=self.registry,
        )
        self.provider_failures = Counter(
            "bonus_agent_provider_failures",
            "Confirmation codes the message provider failed to send, by provider and reason.",
            ["provider", "reason"],
            registry=self.registry,
        )
        # Every series that can appear starts at zero, so that increase() sees its first step.
        for code in ErrorCode:
            self.errors.labels(str(code))
        for result in ("complete", "failed"):
            self.sync_rounds.labels(result)
        for reason in [*Rejection, REJECTION_OTHER]:
            self.ops_rejected.labels(str(reason))
        self.state = StateCollector()
        self.registry.register(self.state)

    def watch(self, ctx: AgentContext, provider: Callable[[], MessageProvider]) -> None:
        """Read the store's state from ``ctx`` at each scrape; ``provider`` gives the provider
        in use (a configuration reload replaces it)."""
        self.state.ctx = ctx
        self.state.provider = provider

    def sync_round(self, complete: bool) -> None:
        self.sync_rounds.labels("complete" if complete else "failed").inc()

    def op_rejected(self, reason: str | None) -> None:
        known = {str(item) for item in Rejection}
        self.ops_rejected.labels(reason if reason in known else REJECTION_OTHER).inc()

    def provider_failed(self, provider: str, reason: str) -> None:
        self.provider_failures.labels(provider, reason).inc()


class StateCollector(Collector):
    """What the store's state says, read when Prometheus scrapes."""

    def __init__(self) -> None:
        self.ctx: AgentContext | None = None
        self.provider: Callable[[], MessageProvider] | None = None

    def collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        if ctx is None:
            return
        age = ctx.sync_age_s()
        yield GaugeMetricFamily(
            "bonus_agent_sync_age_seconds",
            "Seconds since the last complete sync; +Inf when unknown (never synced, or the "
            "clock cannot tell), which counts as stale.",
            value=math.inf if age is None else age,
        )
        last = ctx.last_sync_at()
        if last is not None:
            yield GaugeMetricFamily(
                "bonus_agent_last_sync_timestamp_seconds",
                "When the last complete sync happened (Unix time, central server's clock).",
                value=last.timestamp(),
            )
        yield GaugeMetricFamily(
            "bonus_agent_queue_operations",
            "Operations recorded here that the central server has not acknowledged yet.",
            value=ctx.pending_ops(),
        )
        yield GaugeMetricFamily(
            "bonus_agent_journal_writer_queue_depth",
            "Writes waiting for the journal's writer thread.",
            value=ctx.db.write_queue_depth,
        )
        yield GaugeMetricFamily(
            "bonus_agent_online",
            "1 when the last exchange with the central server succeeded, else 0.",
            value=1 if ctx.online else 0,
        )
        yield GaugeMetricFamily(
            "bonus_agent_redemption_allowed",
            "1 when points may be redeemed (the sync is fresh enough), else 0.",
            value=1 if ctx.redemption_refusal() is None else 0,
        )
        if self.provider is not None:
            provider = self.provider()
            no_balance = GaugeMetricFamily(
                "bonus_agent_provider_no_balance",
                "1 when the message provider's last send failed for lack of funds "
                "(provider_no_balance) and none succeeded since, else 0.",
                labels=["provider"],
            )
            no_balance.add_metric(
                [provider.name], 1 if provider.last_error_reason == "no_balance" else 0
            )
            yield no_balance


METRICS_KEY = web.AppKey("metrics", AgentMetrics)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time every request and count the errors it was answered with."""
    started = time.perf_counter()
    response = await handler(request)
    metrics = request.app[METRICS_KEY]
    metrics.request_duration.labels(request.method, route_template(request)).observe(
        time.perf_counter() - started
    )
    code = response.get(ERROR_CODE_KEY)
    if code is not None:
        metrics.errors.labels(code).inc()
    return response


async def metrics_endpoint(request: web.Request) -> web.Response:
    """``GET /metrics``: anybody who reaches the listener, unless ``metrics_token`` is set;
    then a client elsewhere than this machine must send it as a bearer token."""
    token = request.app[CONFIG_KEY].metrics_token.get_secret_value()
    if token:
        check_metrics_access(request, token=token, loopback=True)
    return metrics_response(generate_latest(request.app[METRICS_KEY].registry))
