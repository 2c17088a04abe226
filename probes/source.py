"""Where snapshots come from: the live sampler, or (later) a recording; every screen reads one of these.

A source is one small interface so the dashboard, `serve`, `doctor` and replay never care which they have:

    source.live          True for the live sampler; False for a recording (the header says REPLAY)
    source.cannot_act    None when mltop may exec in, attach to or signal the containers it shows; else why not,
                         in words for the user ("Replay shows recorded data"). A recording or a Prometheus
                         cannot act; the action registry asks this (diagnostics.actions.registry.refusal)
    source.past_label    (optional) what the header calls data from the past: REPLAY for a recording,
                         PROMETHEUS for a fleet host read from Prometheus
    source.follows_present (optional) a non-live source whose newest data keeps coming (a Prometheus): the
                         dashboard starts playing instead of still
    source.act_command   (optional) the command that acts on these containers where they run (default `mltop`)
    source.latest()      the next snapshot to show: live, a new sweep; a recording, the one at its cursor
    source.close()       release the engine connection, NVML, the database

Recorded sources add `at(t)` and `range(t0, t1)`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol, runtime_checkable

from .model import Snapshot


@runtime_checkable
class SnapshotSource(Protocol):
    live: bool
    cannot_act: str | None

    def latest(self) -> Snapshot: ...

    def close(self) -> None: ...


class LiveSource:
    """The live sampler as a source: each `latest()` is one sweep. The Sampler is built on first use (in the
    sampling thread, so loading NVML and connecting to the engine never block a UI), by `make_sampler`."""

    live = True
    cannot_act: str | None = None  # the containers it shows run here, now

    def __init__(self, make_sampler: Callable[[], object]):
        self._make_sampler = make_sampler
        self.sampler = None

    def latest(self) -> Snapshot:
        if self.sampler is None:
            self.sampler = self._make_sampler()
        return self.sampler.sweep()  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()  # type: ignore[attr-defined]


class StaticSource:
    """Snapshots given in advance, one per `latest()`, the last repeated: tests and screenshots use it to show
    every screen without an engine or a GPU."""

    live = True
    cannot_act: str | None = None  # built snapshots of real containers in tests; a test may set a reason

    def __init__(self, snapshots: Iterable[Snapshot]):
        self._snapshots = list(snapshots)
        if not self._snapshots:
            raise ValueError("StaticSource needs at least one snapshot")
        self._next = 0
        self.closed = False

    def latest(self) -> Snapshot:
        snapshot = self._snapshots[min(self._next, len(self._snapshots) - 1)]
        self._next += 1
        return snapshot

    def close(self) -> None:
        self.closed = True
