"""A container's log: the tail, then new lines as they come (follow), with a search that filters and marks.
A pod container's log is read from its CRI log file (probes/cri/logs.py), the same way.

Lines are fetched in a thread worker through the engine probe (which redacts secrets); a pod container's lines
are scrubbed of its own secret values (its environment, from the CRI's verbose ContainerStatus), and withheld
while those cannot be read, as the engine probe withholds a Docker container's. Following polls
with `since` the last line's timestamp instead of holding a streaming connection: a poll is one short
request, it stops the moment the pane goes away, and it survives an engine restart.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import RichLog, Static

from ..app_api import mltop_app
from ..sanitize import literal
from ..widgets.search_box import SearchBox
from ..widgets.key_bar import KeyBar

log = logging.getLogger(__name__)

TAIL_LINES = 500
KEEP_LINES = 5000


@dataclass(frozen=True)
class LogLine:
    at_ns: int  # engine timestamp, nanoseconds since the epoch (0 when the line carried none)
    text: str  # already printable: escapes stripped, controls replaced


def parse_timestamped(line: str, previous_ns: int = 0) -> LogLine:
    """Split Docker's `2024-05-01T12:00:00.123456789Z text` into nanoseconds and printable text."""
    stamp, sep, rest = line.partition(" ")
    at_ns = _parse_rfc3339_ns(stamp) if sep or stamp.endswith("Z") else None
    if at_ns is None:  # a piece of a line split at a carriage return: it has no timestamp of its own
        return LogLine(previous_ns, literal(line).plain)
    return LogLine(at_ns, literal(rest).plain)


def _parse_rfc3339_ns(stamp: str) -> int | None:
    if len(stamp) < 20 or stamp[4] != "-" or stamp[10] != "T":
        return None
    try:
        main, _, fraction = stamp.rstrip("Z").partition(".")
        offset = 0
        for sign in ("+", "-"):  # an explicit offset instead of Z
            if sign in fraction:
                fraction, _, tz = fraction.partition(sign)
                hours, _, minutes = tz.partition(":")
                offset = (int(hours) * 3600 + int(minutes or 0) * 60) * (1 if sign == "+" else -1)
        seconds = datetime.fromisoformat(main).replace(tzinfo=timezone.utc).timestamp() - offset
        nanos = int((fraction + "000000000")[:9]) if fraction else 0
    except ValueError:
        return None
    return int(seconds) * 1_000_000_000 + nanos


class LogPane(Vertical):
    """The log of one container: tail, follow (F) and search (/)."""

    BINDINGS = [
        Binding("slash", "search", "Search", id="mltop.logs.search"),
        Binding("F", "toggle_follow", "Follow", id="mltop.logs.follow"),
        Binding("G", "end", "End", show=False, id="mltop.logs.end"),
    ]
    mltop = mltop_app()

    class Fetched(Message):
        def __init__(self, lines: list[str], error: str | None, first: bool):
            super().__init__()
            self.lines = lines
            self.error = error
            self.first = first

    def __init__(self, container_id: str, *, follow: bool = True, poll_s: float = 1.0,
                 id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.container_id = container_id
        self.follow = follow
        self.poll_s = poll_s
        self.lines: deque[LogLine] = deque(maxlen=KEEP_LINES)
        self.needle = ""
        self.error: str | None = None
        self._fetched_once = False
        self._engine = None
        self._secrets = None  # a pod container's secret values, once read (ContainerSecrets)
        self._seen_at_last: set[str] = set()  # texts of the lines at the newest timestamp, to skip repeats
        self._timer = None

    def compose(self) -> ComposeResult:
        yield SearchBox(placeholder="search the log (enter keeps, esc clears)", classes="log-search")
        yield RichLog(max_lines=KEEP_LINES, wrap=False, markup=False, highlight=False, classes="log-lines")
        yield Static(classes="log-status")

    def on_mount(self) -> None:
        self.query_one(".log-search", SearchBox).display = False
        self._update_status()
        self._fetch(first=True)

    def on_unmount(self) -> None:
        follower, self._follower = getattr(self, "_follower", None), None
        if follower is not None:
            follower.close()
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.reset()

    # -- fetching (thread) -------------------------------------------------------------------------

    def _cri_log_path(self) -> str | None:
        """A pod container's log file (the kubelet's), read directly: CRI has no log API."""
        snapshot = getattr(self.app, "snapshot", None)
        container = snapshot.container(self.container_id) if snapshot is not None else None
        return container.config.log_path if container is not None and container.kubernetes is not None else None

    def _pod_secrets(self):
        """The pod container's own secret values, from its runtime's verbose ContainerStatus (its environment), as
        the report and the doctor read them; read once, and again on every poll while they cannot be read."""
        from mltop.probes.cri.access import cri_secrets, runs_on_cri
        from mltop.probes.redaction import ContainerSecrets

        if self._secrets is not None:
            return self._secrets
        snapshot = getattr(self.app, "snapshot", None)
        container = snapshot.container(self.container_id) if snapshot is not None else None
        if container is None:
            return ContainerSecrets(error="the container is no longer in the snapshot")
        if runs_on_cri(container):
            secrets = cri_secrets(snapshot, [container])[container.id]
        else:  # a pod container the Docker engine runs: its environment is the engine's
            if self._engine is None:
                self._engine = self.mltop.new_engine()
            secrets = self._engine.container_secrets(container.id)
        if secrets.known:
            self._secrets = secrets
        return secrets

    def _fetch_cri(self, path: str, first: bool) -> None:
        from mltop.probes.cri.logs import LogFollower, read_log
        from mltop.probes.engine import SecretsUnreadable
        from mltop.probes.text import LOG_LINE_CAP

        secrets = self._pod_secrets()
        if not secrets.known:  # fail closed, as the Docker path does: a line could echo a value mltop cannot name
            raise SecretsUnreadable(secrets.error)
        if first or getattr(self, "_follower", None) is None:
            self._follower = LogFollower(path)  # from the end: the tail below is what came before
            lines = read_log(path, tail=TAIL_LINES)
        else:
            lines = self._follower.poll()
        if first and not lines and not os.path.exists(path):
            raise FileNotFoundError(f"no log file at {path} (is /var/log/pods mounted?)")
        self.post_message(self.Fetched([f"{line.time} {secrets.scrub(line.text, LOG_LINE_CAP)}" for line in lines],
                                       None, first))

    @work(thread=True, exclusive=True, group="logs", exit_on_error=False)
    def _fetch(self, first: bool) -> None:
        from mltop.probes.engine import EngineError

        try:
            cri_path = self._cri_log_path()
            if cri_path is not None:
                self._fetch_cri(cri_path, first)
                return
            if self._engine is None:
                self._engine = self.mltop.new_engine()
            if first:
                raw = self._engine.logs(self.container_id, tail=TAIL_LINES, timestamps=True)
            else:
                last = self.lines[-1].at_ns if self.lines else 0
                since = max((last - 1000) / 1e9, 1.0)  # a microsecond early: the float may round up
                raw = self._engine.logs(self.container_id, tail=KEEP_LINES, since=since, timestamps=True)
            self.post_message(self.Fetched(raw, None, first))
        except EngineError as err:
            self.post_message(self.Fetched([], err.message, first))
        except Exception as exc:  # the container was removed, an API error: say so, keep the pane
            log.info("log read failed", exc_info=True)
            self.post_message(self.Fetched([], f"{type(exc).__name__}: {exc}", first))

    def on_log_pane_fetched(self, message: Fetched) -> None:
        message.stop()
        self.error = message.error
        self._fetched_once = True
        self._add(message.lines)
        self._update_status()
        if self.follow:
            self._timer = self.set_timer(self.poll_s, lambda: self._fetch(first=False), name="log-follow")

    def _add(self, raw: list[str]) -> None:
        last_ns = self.lines[-1].at_ns if self.lines else -1
        new: list[LogLine] = []
        previous = last_ns
        for line in raw:
            parsed = parse_timestamped(line, previous)
            previous = parsed.at_ns
            if parsed.at_ns < last_ns:
                continue
            if parsed.at_ns == last_ns and parsed.text in self._seen_at_last:
                continue
            new.append(parsed)
        if not new:
            return
        newest = new[-1].at_ns
        if newest != last_ns:
            self._seen_at_last = set()
        self._seen_at_last.update(line.text for line in new if line.at_ns == newest)
        self.lines.extend(new)
        self._write([line for line in new if self._matches(line)])

    # -- showing ------------------------------------------------------------------------------------

    def _matches(self, line: LogLine) -> bool:
        return not self.needle or self.needle.lower() in line.text.lower()

    def _write(self, lines: list[LogLine]) -> None:
        if not lines:
            return
        text = Text("\n".join(line.text for line in lines), no_wrap=True, end="")
        if self.needle:
            text.highlight_words([self.needle], style="reverse", case_sensitive=False)
        self.query_one(".log-lines", RichLog).write(text)

    def _rewrite(self) -> None:
        log = self.query_one(".log-lines", RichLog)
        log.clear()
        self._write([line for line in self.lines if self._matches(line)])
        log.scroll_end(animate=False)

    @property
    def shown_lines(self) -> list[str]:
        """The text of the lines shown now (what the search lets through)."""
        return [line.text for line in self.lines if self._matches(line)]

    def _update_status(self) -> None:
        status = Text(no_wrap=True, end="")
        if self.error:
            status.append("⚠ ", style="bold red")
            status.append_text(literal(self.error))
            status.append("  ")
        elif not self._fetched_once:
            status.append("reading the log…  ", style="dim")
        status.append("following" if self.follow else "not following", style="bold" if self.follow else "dim")
        status.append(f"  {len(self.lines)} lines")
        if self.needle:
            status.append("  search ")
            status.append_text(literal(self.needle, "reverse"))
            status.append(f": {len(self.shown_lines)} matching")
        self.query_one(".log-status", Static).update(status)

    # -- actions --------------------------------------------------------------------------------------

    def action_search(self) -> None:
        self.query_one(".log-search", SearchBox).open()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self._fetch(first=False)
        elif self._timer is not None:
            self._timer.stop()
        self._update_status()

    def action_end(self) -> None:
        self.query_one(".log-lines", RichLog).scroll_end(animate=False)

    def on_input_changed(self, event: SearchBox.Changed) -> None:
        event.stop()
        if event.value != self.needle:
            self.needle = event.value
            self._rewrite()
            self._update_status()

    def on_search_box_closed(self, event: SearchBox.Closed) -> None:
        event.stop()
        self.query_one(".log-lines", RichLog).focus()

    def clear_search(self) -> bool:
        """Clear an active search; False when there was none (so escape can go back instead)."""
        box = self.query_one(".log-search", SearchBox)
        if not self.needle and not box.display:
            return False
        box.action_clear()
        return True

    def focus_lines(self) -> None:
        self.query_one(".log-lines", RichLog).focus()


class LogsScreen(Screen):
    """The log of one container, full screen (`l`)."""

    BINDINGS = [Binding("escape", "back", "Back", id="mltop.logs.back")]
    mltop = mltop_app()

    def __init__(self, container_id: str):
        super().__init__()
        self.container_id = container_id

    def compose(self) -> ComposeResult:
        yield Static(classes="screen-title")
        yield LogPane(self.container_id, poll_s=self.mltop.interval, classes="logs-full")
        yield KeyBar()

    def on_mount(self) -> None:
        self.show_snapshot(self.mltop.snapshot)
        self.query_one(LogPane).focus_lines()

    def show_snapshot(self, snapshot) -> None:
        try:
            title_widget = self.query_one(".screen-title", Static)
        except NoMatches:
            return  # a sweep landed between push_screen and compose: on_mount shows the newest snapshot
        container = snapshot.container(self.container_id) if snapshot is not None else None
        title = Text("Log of ", style="bold", no_wrap=True, end="")
        if container is None:
            title.append(self.container_id[:12])
            title.append("  (gone)", style="dim")
        else:
            title.append_text(literal(container.name, "bold"))
            title.append(f"  {container.short_id}  {container.status}", style="dim")
        title_widget.update(title)

    def action_back(self) -> None:
        if not self.query_one(LogPane).clear_search():
            self.app.pop_screen()
