"""What the fault tests share: the log records of one of mltop's loggers, and a recorder writer held mid-sweep."""

from __future__ import annotations

import logging
import threading


class LogRecords(logging.Handler):
    """A handler on one mltop logger, by name (in-process CLI runs may stop `mltop` propagating, so caplog on
    the root logger can miss them): `with LogRecords("mltop.probes.engine_events") as log: ...; log.records`."""

    def __init__(self, name: str):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)

    def with_exception(self, kind: type) -> list[logging.LogRecord]:
        return [r for r in self.records if r.exc_info and isinstance(r.exc_info[1], kind)]


def block_writer(recorder, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make the recorder's writer stop inside its next sweep until `release` is set (a disk that stopped
    answering); `entered` is set once it is stuck there."""
    entered, release = threading.Event(), threading.Event()
    original = recorder._write_sweep

    def stuck(db, snap):
        entered.set()
        release.wait(30)
        return original(db, snap)

    monkeypatch.setattr(recorder, "_write_sweep", stuck)
    return entered, release
