"""A table of keyed rows that repaints only the rows that changed, keeps its cursor on a row, fits its width.

Rows are given as {row key: {column key: Text}} plus their order. Each sync drops rows that left, adds new
ones, replaces the cells whose text or style changed, and puts the cursor back on the row it was on.
Columns are planned for the width: lower-priority columns are dropped when they do not fit, and the
flexible column takes the room left.

Why not DataTable: its render caches are keyed on one table-wide update counter, so a single
`update_cell` re-renders every visible cell through rich's Padding/Styled pipeline. With 100
containers in a 200x60 terminal that was ~150 ms of the event loop per refresh and 9 % of a core
(tests/bench_tui.py). Here each row is one Text rendered once per change and cached as a Strip, and
only the lines of changed rows are refreshed, so a still table costs nothing and a busy one little.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Click, Resize
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..sanitize import clip

PADDING = 1  # cells of space on each side of a column


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    width: int  # cells; for the flexible column, its minimum
    priority: int  # 0 is kept longest; columns go in descending priority when the width is short
    justify: str = "left"
    flexible: bool = False  # takes the width left over (up to max_width)
    max_width: int = 0


def plan_columns(specs: Sequence[ColumnSpec], available: int) -> list[tuple[ColumnSpec, int]]:
    """Which columns fit in `available` cells and how wide each is, in display order."""
    chosen: list[ColumnSpec] = []
    used = 0
    for spec in sorted(specs, key=lambda s: s.priority):
        need = spec.width + 2 * PADDING
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


def _fit(cell: Text, width: int, justify: str) -> Text:
    """The cell clipped or padded to exactly `width` cells."""
    if cell.cell_len > width:
        return Text(clip(cell.plain, width), style=cell.style, no_wrap=True, end="")
    pad = " " * (width - cell.cell_len)
    out = Text(style=cell.style, no_wrap=True, end="")
    if justify == "right":
        out.append(pad)
        out.append_text(cell)
    else:
        out.append_text(cell)
        out.append(pad)
    return out


class KeyedTable(ScrollView, can_focus=True):
    """Rows synced by key (see the module docstring); a header line; a row cursor."""

    COLUMNS: Sequence[ColumnSpec] = ()
    COMPONENT_CLASSES = {"keyed-table--header", "keyed-table--cursor"}
    BINDINGS = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    class RowHighlighted(Message):
        """The cursor moved onto another row (or the row under it changed)."""

        def __init__(self, table: "KeyedTable", key: str | None):
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> "KeyedTable":
            return self.table

    class RowSelected(Message):
        """Enter on a row."""

        def __init__(self, table: "KeyedTable", key: str):
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> "KeyedTable":
            return self.table

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self._plan: list[tuple[ColumnSpec, int]] = []
        self._hidden: frozenset[str] = frozenset()
        self._source: dict[str, Mapping[str, Text]] = {}  # every column of every shown row, as given
        self._cells: dict[str, dict[str, Text]] = {}  # the visible columns, fitted to their widths
        self._versions: dict[str, int] = {}  # bumped when a row's cells change: part of its strip's key
        self._order: list[str] = []
        self._index: dict[str, int] = {}
        self._cursor = 0
        self._strips: dict[tuple, Strip] = {}
        self._highlighted: str | None = None

    # -- what other code reads ------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def cursor_row(self) -> int:
        return self._cursor

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, or None when the table is empty."""
        return self._order[self._cursor] if self._order else None

    @property
    def keys_in_order(self) -> list[str]:
        return list(self._order)

    @property
    def visible_columns(self) -> list[str]:
        return [spec.key for spec, _ in self._plan]

    @property
    def column_widths(self) -> dict[str, int]:
        return {spec.key: width for spec, width in self._plan}

    def cell(self, row_key: str, column_key: str) -> Text:
        """A cell as given (before it was fitted to its column)."""
        return self._source[row_key][column_key]

    def cell_text(self, row_key: str, column_key: str) -> str:
        return self._source[row_key][column_key].plain

    def shown_text(self, row_key: str, column_key: str) -> str:
        """The text the table shows in a cell (clipped to the column)."""
        return self._cells[row_key][column_key].plain.strip()

    # -- syncing --------------------------------------------------------------------------------

    def sync(self, rows: Mapping[str, Mapping[str, Text]], order: Sequence[str]) -> None:
        """Make the table show `rows` in `order` (rows whose keys are not in `order` are not shown).

        A row given as the very same mapping object as at the previous sync is taken as unchanged without
        looking at its cells, and a cell given as the same Text object as before is not fitted again
        (ContainersTable reuses a row's cells, or the cells of the columns that did not change)."""
        if not self._plan:
            self._plan = self._plan_for(self.scrollable_content_region.width)
        keep_key, keep_index = self.cursor_key, self._cursor
        order = list(order)
        widths = [(spec.key, width, spec.justify) for spec, width in self._plan]
        changed: list[str] = []
        cells_by_key: dict[str, dict[str, Text]] = {}
        source = self._source
        for key in order:
            given = rows[key]
            old = self._cells.get(key)
            if old is not None and source.get(key) is given:
                # the caller handed the very cells of last time: nothing to fit or compare
                cells_by_key[key] = old
                continue
            old_given = source.get(key) if old is not None else None
            if old_given is not None:
                # refit only the cells handed anew; a cell object given again is the same text
                cells = {c: old[c] if given[c] is old_given.get(c) else _fit(given[c], w, j) for c, w, j in widths}
                same = all(cells[c] is old[c] or _signature(old[c]) == _signature(cells[c]) for c in cells)
            else:
                cells = {c: _fit(given[c], w, j) for c, w, j in widths}
                same = old is not None and all(_signature(old[c]) == _signature(cells[c]) for c in cells)
            if same:
                cells = old
            else:
                changed.append(key)
                self._versions[key] = self._versions.get(key, 0) + 1
            cells_by_key[key] = cells
        for gone in set(self._cells) - set(cells_by_key):
            self._versions.pop(gone, None)
        moved = order != self._order
        self._cells = cells_by_key
        self._source = {key: rows[key] for key in order}
        self._order = order
        self._index = {key: i for i, key in enumerate(order)}
        if keep_key is not None and keep_key in self._index:
            self._cursor = self._index[keep_key]
        else:  # its row left: stay at the same height
            self._cursor = min(max(keep_index, 0), max(len(order) - 1, 0))
        if len(self._strips) > 4 * len(order) + 64:
            self._strips.clear()
        if moved:
            self.virtual_size = Size(self.scrollable_content_region.width, len(order) + 1)
            self._scroll_cursor_into_view()
            self.refresh()
        else:
            for key in changed:
                self.refresh_line(self._index[key] + 1)
        self._post_highlight()

    def move_to_key(self, key: str) -> bool:
        if key not in self._index:
            return False
        self.move_cursor(self._index[key])
        return True

    def move_cursor(self, row: int) -> None:
        if not self._order:
            return
        row = min(max(row, 0), len(self._order) - 1)
        if row != self._cursor:
            old = self._cursor
            self._cursor = row
            self.refresh_line(old + 1)
            self.refresh_line(row + 1)
        self._scroll_cursor_into_view()
        self._post_highlight()

    def _post_highlight(self) -> None:
        key = self.cursor_key
        if key != self._highlighted:
            self._highlighted = key
            self.post_message(self.RowHighlighted(self, key))

    def _scroll_cursor_into_view(self) -> None:
        visible = max(self.scrollable_content_region.height - 1, 1)
        top = int(self.scroll_y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False)
        elif self._cursor >= top + visible:
            self.scroll_to(y=self._cursor - visible + 1, animate=False)

    # -- drawing --------------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            return self._header_strip(width, base)
        index = int(self.scroll_y) + y - 1
        if index >= len(self._order):
            return Strip.blank(width, base)
        key = self._order[index]
        cursor = index == self._cursor
        cursor_style = self.get_component_rich_style("keyed-table--cursor") if cursor else None
        cache_key = (key, self._versions.get(key), cursor_style, base, width)
        strip = self._strips.get(cache_key)
        if strip is None:
            style = base + cursor_style if cursor_style is not None else base
            strip = self._strip_for(self._cells[key], width, style)
            self._strips[cache_key] = strip
        return strip

    def _header_strip(self, width: int, base: Style) -> Strip:
        style = base + self.get_component_rich_style("keyed-table--header")
        cache_key = ("\0header", tuple(self._plan), style, width)
        strip = self._strips.get(cache_key)
        if strip is None:
            cells = {spec.key: _fit(Text(spec.label), w, spec.justify) for spec, w in self._plan}
            strip = self._strip_for(cells, width, style)
            self._strips[cache_key] = strip
        return strip

    def _strip_for(self, cells: Mapping[str, Text], width: int, style: Style) -> Strip:
        line = Text(no_wrap=True, end="")
        pad = " " * PADDING
        for spec, _ in self._plan:
            line.append(pad)
            line.append_text(cells[spec.key])
            line.append(pad)
        segments = list(line.render(self.app.console))
        strip = Strip(Segment.apply_style(segments, style), line.cell_len)
        return strip.crop_extend(0, width, style)

    # -- fitting the width ----------------------------------------------------------------------

    def _plan_for(self, width: int) -> list[tuple[ColumnSpec, int]]:
        specs = [spec for spec in self.COLUMNS if spec.key not in self._hidden]
        return plan_columns(specs, width - 1 if width else 200)  # one cell spare at the right

    def hide_columns(self, keys: frozenset[str]) -> None:
        """Leave these columns out (e.g. the GPU columns on a host without GPUs), giving their width back."""
        if keys != self._hidden:
            self._hidden = keys
            if self._plan:
                self._replan()

    def on_resize(self, event: Resize) -> None:
        self._replan()

    def _replan(self) -> None:
        width = self.scrollable_content_region.width
        plan = self._plan_for(width)
        self.virtual_size = Size(width, len(self._order) + 1)
        if plan != self._plan:
            # Columns changed: refit every row once. This happens on a resize, never on a refresh tick.
            self._plan = plan
            source, order = self._source, self._order
            self._cells, self._strips = {}, {}
            if order:
                self.sync(source, order)
        self._scroll_cursor_into_view()
        self.refresh()

    # -- keys and mouse -------------------------------------------------------------------------

    def _page(self) -> int:
        return max(self.scrollable_content_region.height - 2, 1)

    def action_cursor_up(self) -> None:
        self.move_cursor(self._cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self._cursor + 1)

    def action_page_up(self) -> None:
        self.move_cursor(self._cursor - self._page())

    def action_page_down(self) -> None:
        self.move_cursor(self._cursor + self._page())

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(len(self._order) - 1)

    def action_select(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(self.RowSelected(self, key))

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None and offset.y >= 1:  # line 0 is the header
            self.move_cursor(int(self.scroll_y) + offset.y - 1)
            if event.chain >= 2:
                self.action_select()

    def on_focus(self) -> None:
        self._strips.clear()  # the cursor's colour follows focus
        self.refresh()

    def on_blur(self) -> None:
        self._strips.clear()
        self.refresh()
