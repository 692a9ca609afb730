"""The webhook server's Prometheus metrics (``prometheus_client``), served on ``/metrics``.

Every series exists from the start, at zero, so dashboards and alerts see
the label sets before the first event. Each server has its own registry
(with the process and platform collectors), so several servers in one
process (the tests) do not mix their counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: what a webhook delivery can come to (the ``result`` label)
RESULTS = (
    "accepted",  # queued, or coalesced with the same job still waiting
    "duplicate",
    "ignored",
    "unauthorized",
    "forbidden",
    "bad_request",
    "length_required",
    "too_large",
    "busy",
    "error",
)
#: what a job can come to (the ``outcome`` label)
OUTCOMES = ("reviewed", "published", "maintained", "skipped", "failed", "error", "lost")
KINDS = ("review", "publish", "maintain", "refresh")
STATES = ("queued", "running", "done", "failed")
REFUSALS = ("busy", "evicted", "timeout")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _QueueCollector(Collector):
    """``wishbot_queue_jobs{state}``, read from the queue at each scrape."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]):
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "wishbot_queue_jobs", "Jobs in the durable queue, by state.", labels=["state"]
        )
        try:
            counts = dict(self._counts())
        except Exception:  # the queue cannot be read: say nothing rather than fail the scrape
            return
        for state in sorted(set(STATES) | set(counts)):
            family.add_metric([state], float(counts.get(state, 0)))
        yield family


class _GaugesCollector(Collector):
    """Gauges computed at each scrape: ``{name: {label value: value}}``, each family
    with one label (``state``); see ``WebhookServer._verify_gauges``."""

    def __init__(self, gauges: Callable[[], Mapping[str, Mapping[str, float]]]):
        self._gauges = gauges

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            gauges = dict(self._gauges())
        except Exception:  # cannot be read: say nothing rather than fail the scrape
            return
        for name, values in sorted(gauges.items()):
            family = GaugeMetricFamily(name, GAUGE_HELP.get(name, name), labels=["state"])
            for state, value in sorted(values.items()):
                family.add_metric([state], value)
            yield family


GAUGE_HELP = {
    "wishbot_verify_findings": "Findings of the last scheduled deep verify, by severity.",
    "wishbot_verify_checked_timestamp_seconds": "When the last scheduled deep verify ran.",
}


class Metrics:
    """The counters, histograms and gauges of one webhook server."""

    def __init__(
        self,
        queue_counts: Callable[[], Mapping[str, int]] = dict,
        open_connections: Callable[[], int] = lambda: 0,
        gauges: Callable[[], Mapping[str, Mapping[str, float]]] = dict,
    ):
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.webhooks = Counter(
            "wishbot_webhook_events", "Webhook deliveries by result.", ["result"], registry=registry
        )
        self.webhook_seconds = Histogram(
            "wishbot_webhook_duration_seconds",
            "Time from a delivery's first byte to its answer.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.refused = Counter(
            "wishbot_webhook_connections_refused",
            "Connections refused (busy), evicted by newer ones (evicted) or cut off (timeout).",
            ["reason"],
            registry=registry,
        )
        self.jobs = Counter(
            "wishbot_jobs", "Finished job attempts by kind and outcome.", ["kind", "outcome"],
            registry=registry,
        )  # fmt: skip
        self.job_failures = Counter(
            "wishbot_job_failures", "Job attempts that raised or failed, by kind.", ["kind"],
            registry=registry,
        )  # fmt: skip
        self.job_seconds = Histogram(
            "wishbot_job_duration_seconds",
            "Seconds a job attempt took, by kind.",
            ["kind"],
            buckets=(0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=registry,
        )
        Gauge(
            "wishbot_webhook_connections_open", "Connections being served.", registry=registry
        ).set_function(lambda: float(open_connections()))
        registry.register(_QueueCollector(queue_counts))
        registry.register(_GaugesCollector(gauges))
        self._zero()

    def _zero(self) -> None:
        for result in RESULTS:
            self.webhooks.labels(result)
        for reason in REFUSALS:
            self.refused.labels(reason)
        for kind in KINDS:
            self.job_failures.labels(kind)
            self.job_seconds.labels(kind)
            for outcome in OUTCOMES:
                self.jobs.labels(kind, outcome)

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample (0 when absent), e.g. for tests."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
