"""A DataTable kept in step with keyed rows: update what changed, keep the cursor on its row, fit the width.

Rows are given as {row key: {column key: Text}} plus their order. Each sync removes rows that left,
adds new ones with `add_row(key=)`, `update_cell`s only the cells whose text or style changed, sorts only
when the order moved, and puts the cursor back on the row it was on. Columns are planned for the width:
lower-priority columns are dropped when they do not fit, and the flexible column takes the room left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.events import Resize
from textual.widgets import DataTable

from .sanitize import clip


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    width: int  # cells; for the flexible column, its minimum
    priority: int  # 0 is kept longest; columns go in descending priority when the width is short
    justify: str = "left"
    flexible: bool = False  # takes the width left over (up to max_width)
    max_width: int = 0


def plan_columns(specs: Sequence[ColumnSpec], available: int, padding: int = 2) -> list[tuple[ColumnSpec, int]]:
    """Which columns fit in `available` cells and how wide each is, in display order."""
    chosen: list[ColumnSpec] = []
    used = 0
    for spec in sorted(specs, key=lambda s: s.priority):
        need = spec.width + padding
        if used + need <= available or not chosen:
            chosen.append(spec)
            used += need
    left = max(available - used, 0)
    widths = {}
    for spec in chosen:
        extra = 0
        if spec.flexible and left:
            cap = (spec.max_width or 10_000) - spec.width
            extra = min(left, max(cap, 0))
            left -= extra
        widths[spec.key] = spec.width + extra
    return [(spec, widths[spec.key]) for spec in specs if spec.key in widths]


def _signature(cell: Text) -> tuple:
    # rich's Text.__eq__ ignores the base style, and dimming a stopped row changes only that.
    return (cell.plain, str(cell.style), tuple(cell.spans))


class KeyedTable(DataTable):
    """A row-cursor DataTable whose rows are synced by key (see the module docstring)."""

    COLUMNS: Sequence[ColumnSpec] = ()
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._source: dict[str, Mapping[str, Text]] = {}  # every column of every row, as given
        self._shown: dict[str, dict[str, Text]] = {}  # the cell objects the table holds
        self._order: list[str] = []
        self._plan: list[tuple[ColumnSpec, int]] = []

    # -- what other code reads ------------------------------------------------------------------

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, or None when the table is empty."""
        if not self.row_count:
            return None
        row = min(max(self.cursor_row, 0), self.row_count - 1)
        return self.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value

    @property
    def keys_in_order(self) -> list[str]:
        return list(self._order)

    @property
    def visible_columns(self) -> list[str]:
        return [spec.key for spec, _ in self._plan]

    def cell_text(self, row_key: str, column_key: str) -> str:
        """The full text of a cell as given (before it was clipped to the column)."""
        return self._source[row_key][column_key].plain

    def shown_text(self, row_key: str, column_key: str) -> str:
        """The text the table shows in a cell."""
        return self._shown[row_key][column_key].plain

    # -- syncing --------------------------------------------------------------------------------

    def sync(self, rows: Mapping[str, Mapping[str, Text]], order: Sequence[str]) -> None:
        """Make the table show `rows` in `order` (rows whose keys are not in `order` are not shown)."""
        if not self._plan:
            self._set_plan(self._plan_for(self.size.width))
        keep, keep_index = self.cursor_key, self.cursor_row
        order = list(order)
        wanted = set(order)
        columns = self.visible_columns
        widths = dict((spec.key, (width, spec.justify)) for spec, width in self._plan)
        with self.app.batch_update():
            for key in [k for k in self._order if k not in wanted]:
                self.remove_row(key)
                del self._shown[key]
            for key in order:
                given = rows[key]
                old = self._shown.get(key)
                cells = {}
                for c in columns:
                    cell = _fit(given[c], *widths[c])
                    if old is not None and _signature(old[c]) == _signature(cell):
                        cell = old[c]  # unchanged: keep the object the table holds
                    elif old is not None:
                        self.update_cell(key, c, cell)
                    cells[c] = cell
                if old is None:
                    self.add_row(*(cells[c] for c in columns), key=key)
                self._shown[key] = cells
            self._source = {k: rows[k] for k in order}
            current = [row.key.value for row in self.ordered_rows]
            if current != order:
                rank = {id(self._shown[k][columns[0]]): i for i, k in enumerate(order)}
                self.sort(columns[0], key=lambda cell: rank[id(cell)])
            self._order = order
            self._restore_cursor(keep, keep_index)

    def _restore_cursor(self, key: str | None, index: int) -> None:
        if not self.row_count:
            return
        if key is not None and key in self._shown:
            target = self.get_row_index(key)
        else:  # its row left: stay at the same height
            target = min(max(index, 0), self.row_count - 1)
        if target != self.cursor_row:
            self.move_cursor(row=target, animate=False)

    def move_to_key(self, key: str) -> bool:
        if key not in self._shown:
            return False
        self.move_cursor(row=self.get_row_index(key), animate=False)
        return True

    # -- fitting the width ----------------------------------------------------------------------

    def _plan_for(self, width: int) -> list[tuple[ColumnSpec, int]]:
        # The vertical scrollbar and one spare cell are not available to columns.
        available = max(width - 2, 20) if width else 200
        return plan_columns(self.COLUMNS, available)

    def _set_plan(self, plan: list[tuple[ColumnSpec, int]]) -> None:
        """Rebuild the columns. Happens on a resize that changes them, never on a refresh tick."""
        source, order = self._source, self._order
        keep, keep_index = self.cursor_key, self.cursor_row
        self.clear(columns=True)
        self._plan = plan
        self._shown, self._order, self._source = {}, [], {}
        for spec, width in plan:
            self.add_column(Text(spec.label, justify=spec.justify), width=width, key=spec.key)
        if source:
            self.sync(source, order)
            self._restore_cursor(keep, keep_index)

    def on_resize(self, event: Resize) -> None:
        plan = self._plan_for(event.size.width)
        if plan != self._plan:
            self._set_plan(plan)


def _fit(cell: Text, width: int, justify: str) -> Text:
    plain = cell.plain
    if len(plain) > width:
        cell = Text(clip(plain, width), style=cell.style, no_wrap=True, end="")
    cell.justify = justify  # type: ignore[assignment]
    return cell
