"""The real dashboard's start-up tuning, which changes the whole process: only `mltop` itself makes it
(tui/cli/dashboard.py `make_dashboard_app`), never an MltopApp built in a test or for a replay.

The figures behind each setting are in the README, "What it costs".
"""

from __future__ import annotations

import gc

# How long the app waits for its first sweep before Textual starts. Started together, the two fight over the
# GIL: every file the sweep opens hands the GIL to Textual's start-up, which keeps it for the switch interval
# (5 ms), so the sweep made almost no progress until the UI thread went idle (README, "What it costs"). A slow
# or hung engine still gets the screen up after this long, with the rows to follow.
FIRST_SWEEP_WAIT_S = 0.3
GC_YOUNG_THRESHOLD = 20_000  # allocations between collections of the youngest generation (700 by default)
GC_SETTLE_S = 5.0  # the garbage collector is back on this long after start at the latest


class StartupTuning:
    """No cyclic garbage collection until the first full frame, and the open-file limit raised with the
    descriptor table grown while there is one thread. `begin()` before the app and its threads exist;
    the app calls `settle()` at its first full frame (or GC_SETTLE_S, or when it ends before one)."""

    def __init__(self) -> None:
        self.settled = True  # nothing to undo until begin()

    def begin(self) -> "StartupTuning":
        # Start-up makes hundreds of thousands of objects that all live on, and a full collection among them
        # took 20 ms of the first sweep at 500 containers.
        self.settled = not gc.isenabled()  # a collector already off is someone else's choice: left alone
        gc.disable()
        from mltop.probes.openfiles import prepare

        prepare()  # the sweep keeps ~10 files a container open: grow the table while we have one thread
        return self

    def settle(self, running: bool = True) -> None:
        """Turn the garbage collector back on, once (`running`: the app goes on, so tune it for the sweeps)."""
        if self.settled:
            return
        self.settled = True
        if running:
            # What exists now (modules, Textual's widgets and styles, the first snapshots) lives as long as the
            # app: out of the collector's sight, a full collection scans only what came later.
            gc.freeze()
            # Nearly everything a sweep allocates is freed by reference counting; collecting the young
            # generation every 700 allocations (the default) cost ~0.2 % of a core at 500 containers.
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        gc.enable()
