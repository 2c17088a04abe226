"""The sweep loop: a snapshot every interval and a doctor every doctor interval, each on its own thread,
published as one immutable `ServeState` that the HTTP side only reads."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from mltop.probes.model import GpuSample, NvmlStatus, Snapshot

log = logging.getLogger(__name__)

Listener = Callable[[Snapshot, Any], None]  # (snapshot, DoctorResult or None)


@dataclass(frozen=True)
class ServeState:
    """What the last sweeps found. Replaced whole after each sweep, so a reader never sees half an update."""

    snapshot: Snapshot | None = None
    previous: Snapshot | None = None  # the sweep before `snapshot`: rates and throttling judged over both
    swept_at: float | None = None  # time.monotonic() when `snapshot` was published
    sweeps: int = 0
    sweep_error: str | None = None  # the last sweep's exception, in words; None when it succeeded
    # The GPUs of the last sweep where NVML answered: a hung driver keeps its last values on /metrics
    # (with mltop_nvml_up 0) instead of making every GPU series vanish.
    last_good_gpus: tuple[GpuSample, ...] = ()
    doctor: Any = None  # the last DoctorResult
    doctor_at: float | None = None  # time.monotonic() when `doctor` finished
    doctor_error: str | None = None

    @property
    def nvml(self) -> NvmlStatus | None:
        return self.snapshot.host.nvml if self.snapshot is not None else None

    def gpus_to_serve(self) -> tuple[GpuSample, ...]:
        if self.snapshot is None:
            return ()
        if self.snapshot.host.nvml.ok or self.snapshot.gpus:
            return self.snapshot.gpus
        return self.last_good_gpus


class SweepLoop:
    """Owns a SnapshotSource; sweeps on one thread and runs the doctor on another.

    Listeners (`add_listener(fn)`) are called on the sweep thread after each sweep with the new snapshot and
    the DoctorResult that finished since the previous call (None otherwise), so a recorder sees every
    snapshot and every doctor result exactly once. A listener that raises is logged and kept.
    """

    def __init__(self, source, interval: float, doctor_interval: float | None, *,
                 engine: Callable[[], Any] | None = None, doctor: Callable[..., Any] | None = None,
                 on_sweep_seconds: Callable[[float], None] | None = None):
        self.source = source
        self.interval = interval
        self.doctor_interval = doctor_interval  # None or <= 0: no doctor
        self._engine = engine or (lambda: getattr(getattr(source, "sampler", None), "engine", None))
        self._doctor = doctor
        self._on_sweep_seconds = on_sweep_seconds
        self._state = ServeState()
        self._publish_lock = threading.Lock()  # writers only; readers take self._state as it is
        self._listeners: list[Listener] = []
        self._fresh_doctor: Any = None
        self._stop = threading.Event()
        self._previous: Snapshot | None = None  # the snapshot before the current one, for the doctor
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- reading

    @property
    def state(self) -> ServeState:
        return self._state

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # ---------------------------------------------------------------- running

    def start(self) -> None:
        sweeper = threading.Thread(target=self._sweep_forever, name="mltop-serve-sweep", daemon=True)
        self._threads.append(sweeper)
        sweeper.start()
        if self.doctor_interval and self.doctor_interval > 0:
            doctor = threading.Thread(target=self._doctor_forever, name="mltop-serve-doctor", daemon=True)
            self._threads.append(doctor)
            doctor.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        try:
            self.source.close()
        except Exception:
            log.exception("closing the snapshot source failed")

    def sweep_once(self) -> ServeState:
        """One sweep, published; the loop calls this, tests may too."""
        started = time.monotonic()
        try:
            snapshot = self.source.latest()
        except Exception as exc:  # a bug or an unexpected source failure: keep serving the last snapshot
            log.exception("sweep failed")
            self._publish(sweep_error=f"{type(exc).__name__}: {exc}")
            return self._state
        elapsed = time.monotonic() - started
        if self._on_sweep_seconds is not None:
            self._on_sweep_seconds(elapsed)
        with self._publish_lock:
            old = self._state
            self._previous = old.snapshot
            good = snapshot.gpus if snapshot.host.nvml.ok else old.last_good_gpus
            self._state = replace(old, snapshot=snapshot, previous=old.snapshot, swept_at=time.monotonic(), sweeps=old.sweeps + 1,
                                  sweep_error=None, last_good_gpus=good)
            doctor, self._fresh_doctor = self._fresh_doctor, None
        for listener in list(self._listeners):
            try:
                listener(snapshot, doctor)
            except Exception:
                log.exception("serve listener %r failed", listener)
        return self._state

    def doctor_once(self) -> ServeState:
        """Diagnose the latest snapshot (against the one before it, so rising counters count) and publish."""
        state = self._state
        if state.snapshot is None:
            return state
        try:
            run = self._doctor or _default_doctor
            result = run(state.snapshot, self._engine(), previous=self._previous)
        except Exception as exc:
            log.exception("doctor failed")
            self._publish(doctor_error=f"{type(exc).__name__}: {exc}")
            return self._state
        with self._publish_lock:
            self._state = replace(self._state, doctor=result, doctor_at=time.monotonic(), doctor_error=None)
            self._fresh_doctor = result
        return self._state

    def restate_doctor(self, change: Callable[[Any, Snapshot | None], Any]) -> None:
        """Replace the published doctor result by `change(result, snapshot)` (silences marked afresh)."""
        with self._publish_lock:
            if self._state.doctor is not None:
                changed = change(self._state.doctor, self._state.snapshot)
                if changed is not self._state.doctor:
                    self._state = replace(self._state, doctor=changed)

    def _publish(self, **changes) -> None:
        with self._publish_lock:
            self._state = replace(self._state, **changes)

    def _sweep_forever(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.sweep_once()
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:  # a sweep overran: skip the missed ticks instead of sweeping back to back
                next_at = now + self.interval
            self._stop.wait(next_at - now)

    def _doctor_forever(self) -> None:
        # Wait for two sweeps, so the first diagnosis can already see counters rise.
        while not self._stop.is_set() and self._state.sweeps < 2:
            self._stop.wait(min(self.interval, 0.25))
        while not self._stop.is_set():
            self.doctor_once()
            self._stop.wait(self.doctor_interval)


def _default_doctor(snapshot: Snapshot, engine, previous: Snapshot | None):
    from mltop.diagnostics.doctor import run_doctor

    return run_doctor(snapshot, engine, previous=previous)
