"""The flight recorder's own series: mltop_recorder_up and what it wrote, dropped and failed (counters)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class RecorderCollector:
    """Reads the recorder's status at each scrape (a few integers: no I/O). Nothing when not recording."""

    def __init__(self, recorder: Callable[[], Any]):
        self._recorder = recorder

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        recorder = self._recorder()
        if recorder is None:
            return
        status = recorder.status
        up = GaugeMetricFamily("mltop_recorder_up", "1 while the flight recorder writes; 0 after a database error "
                               "(full disk, read-only path) or once stopped.")
        up.add_metric([], 1.0 if status.ok else 0.0)
        yield up
        for name, help_text, value in (
                ("mltop_recorder_sweeps_written", "Sweeps the flight recorder wrote.", status.sweeps),
                ("mltop_recorder_events_written", "Events (engine, findings, Xids) the flight recorder wrote.",
                 status.events),
                ("mltop_recorder_dropped", "Work the flight recorder dropped unwritten: its queue was full (a "
                 "disk slower than the sampling) or its close passed the deadline.", status.dropped),
                ("mltop_recorder_failed", "Writes of the flight recorder that failed (each is logged with its "
                 "exception).", status.failed)):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], float(value))
            yield family
