"""Lock-free counters, gauges and histograms for the event loop's hot path, exposed as prometheus_client collectors.

prometheus_client takes a lock for every update (a few microseconds per request over the metric set). These
metrics are updated only on the event loop's thread, where a plain `+=` cannot interleave with another update,
and `/metrics` is served on that thread too. Each one registers itself as a collector, so the exposition (names,
HELP and TYPE lines, labels, `_created` samples, cumulative buckets) is the one prometheus_client's own Counter,
Gauge and Histogram produce. Do not update them from another thread.
"""

from __future__ import annotations

import abc
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

DEFAULT_BUCKETS: tuple[float, ...] = tuple(Histogram.DEFAULT_BUCKETS)


class CounterCell:
    """One labelled counter: `value += 1.0` directly on the hot path, or `inc()`."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount` (never negative, as for prometheus_client's Counter)."""
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class GaugeCell:
    """One labelled gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount`."""
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract `amount`."""
        self.value -= amount

    def set(self, value: float) -> None:
        """Set the value."""
        self.value = float(value)


class HistogramCell:
    """One labelled histogram: a count per bucket (not cumulative until exposition) and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        """Count `amount` in the first bucket whose upper bound is >= it, as prometheus_client does."""
        # bisect_left finds that bucket; the last bound is +Inf, so the index is always valid for numbers.
        self.counts[bisect_left(self.bounds, amount)] += 1.0
        self.sum += amount


C = TypeVar("C", CounterCell, GaugeCell, HistogramCell)


class _Family(abc.ABC, Generic[C]):
    """A metric with label names and one cell per label values; registered as a collector."""

    type = ""
    suffixes: tuple[str, ...] = ()

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), registry: CollectorRegistry | None = None
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._cells: dict[tuple[str, ...], C] = {}
        if registry is not None:
            registry.register(self)

    @abc.abstractmethod
    def _new_cell(self) -> C:
        """A cell for one new set of label values."""

    @abc.abstractmethod
    def collect(self) -> list[Metric]:
        """The family with one sample set per cell, for the registry."""

    def labels(self, *values: str) -> C:
        """The cell for these label values (created on first use, as prometheus_client's `labels`)."""
        key = tuple(str(v) for v in values)
        cell = self._cells.get(key)
        if cell is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values, got {len(key)}")
            cell = self._cells[key] = self._new_cell()
        return cell

    def describe(self) -> list[Metric]:
        """The family without samples, so the registry refuses a duplicate name."""
        return [self._metric()]

    def _metric(self) -> Metric:
        return Metric(self.name, self.documentation, self.type)

    def _items(self) -> Iterable[tuple[dict[str, str], C]]:
        # A copy: a collection on another thread (a custom exporter) must not see the dict grow under it.
        for values, cell in self._cells.copy().items():
            yield dict(zip(self.labelnames, values, strict=True)), cell


class FastCounter(_Family[CounterCell]):
    """A counter; `name` without the `_total` suffix, as for prometheus_client's Counter."""

    type = "counter"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), registry: CollectorRegistry | None = None
    ) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def _new_cell(self) -> CounterCell:
        return CounterCell()

    def collect(self) -> list[Metric]:
        """`_total` and `_created` samples per label set, as prometheus_client's Counter."""
        metric = self._metric()
        total, created = self.name + "_total", self.name + "_created"
        for labels, cell in self._items():
            metric.samples.append(Sample(total, labels, cell.value, None, None))
            metric.samples.append(Sample(created, dict(labels), cell.created, None, None))
        return [metric]


class FastGauge(_Family[GaugeCell]):
    """A gauge (labelled)."""

    type = "gauge"

    def _new_cell(self) -> GaugeCell:
        return GaugeCell()

    def collect(self) -> list[Metric]:
        """One sample per label set."""
        metric = self._metric()
        for labels, cell in self._items():
            metric.samples.append(Sample(self.name, labels, cell.value, None, None))
        return [metric]


class FastHistogram(_Family[HistogramCell]):
    """A histogram with prometheus_client's default buckets unless given others."""

    type = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError("buckets must be sorted and distinct")
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        self._le = tuple(floatToGoString(b) for b in bounds)
        super().__init__(name, documentation, labelnames, registry)

    def _new_cell(self) -> HistogramCell:
        return HistogramCell(self.bounds)

    def collect(self) -> list[Metric]:
        """Cumulative `_bucket` samples, then `_count`, `_sum` and `_created`, as prometheus_client's Histogram."""
        metric = self._metric()
        add = metric.samples.append
        bucket = self.name + "_bucket"
        for labels, cell in self._items():
            counts, total = list(cell.counts), cell.sum  # one consistent reading of the cell
            acc = 0.0
            for le, count in zip(self._le, counts, strict=True):
                acc += count
                add(Sample(bucket, {**labels, "le": le}, acc, None, None))
            add(Sample(self.name + "_count", dict(labels), acc, None, None))
            add(Sample(self.name + "_sum", dict(labels), total, None, None))
            add(Sample(self.name + "_created", dict(labels), cell.created, None, None))
        return [metric]
