"""The layers hold: probes (sense) never import diagnostics (judge) or tui (show); diagnostics never imports
tui; neither imports Textual. The contracts live in pyproject.toml ([tool.importlinter]); import-linter
checks every import statement, including those inside functions, without running the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                               "sys.argv = ['lint-imports', '--no-cache']; lint_imports_command()"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def test_every_command_is_registered_once_with_its_options():
    from mltop.diagnostics.actions import ACTIONS
    from mltop.tui.cli import SUBCOMMANDS, build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert list(sub.choices) == list(SUBCOMMANDS) == ["snapshot", "doctor", "report", "run", "events", "replay", "serve"]
    for name, (factory, _help) in SUBCOMMANDS.items():
        module = factory()
        assert callable(module.add_arguments) and callable(module.main), name
    run = parser.parse_args(["run", "device-check", "trainer", "--log-file", "/tmp/x.log"])
    assert (run.action, run.container, run.log_file) == ("device-check", "trainer", "/tmp/x.log")
    (action_arg,) = [a for a in sub.choices["run"]._actions if a.dest == "action"]
    assert list(action_arg.choices) == [a.name for a in ACTIONS]


def test_the_dashboard_keys_and_the_action_screen_read_the_one_registry():
    from mltop.diagnostics.actions import ACTIONS
    from mltop.tui.app import CONTAINER_SCREENS, MltopApp

    keys = {b.key: b.action for b in MltopApp.BINDINGS}
    for action in ACTIONS:
        assert keys[action.key] == f"container_screen('{action.name}')"
        assert CONTAINER_SCREENS[action.name].title == action.title
