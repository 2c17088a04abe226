"""The layers hold: probes (sense) never import diagnostics (judge) or tui (show); diagnostics never imports
tui; neither imports Textual, nor do the agent and the command line; no import circles. The contracts live in
pyproject.toml ([tool.importlinter]); import-linter checks every import statement, including those inside
functions, without running the code."""

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
    assert "4 kept, 0 broken" in done.stdout


def _import_circles() -> list[list[str]]:
    """Every set of mltop modules that import one another round in a circle (strongly connected components of
    grimp's import graph, imports inside functions included), each sorted."""
    import grimp

    graph = grimp.build_graph("mltop.probes", "mltop.diagnostics", "mltop.tui", cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative (no recursion limit to meet)
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.find_modules_directly_imported_by(target)))))
                    break
                if target in on_stack:
                    low[module] = min(low[module], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return sorted(circles)


def test_no_module_imports_itself_round_a_circle():
    """Module by module, which acyclic_siblings cannot see: a package's __init__ and the modules inside it."""
    circles = _import_circles()
    assert not circles, "modules that import one another round a circle:\n" + "\n".join(map(" <-> ".join, circles))


def test_every_command_is_registered_once_with_its_options():
    from mltop.diagnostics.actions import ACTIONS
    from mltop.tui.cli import SUBCOMMANDS, build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert list(sub.choices) == list(SUBCOMMANDS) == ["snapshot", "doctor", "report", "run", "kill", "stop",
                                                        "restart", "events", "replay", "silence", "fleet", "serve"]
    for name, (factory, _help) in SUBCOMMANDS.items():
        module = factory()
        assert callable(module.add_arguments) and callable(module.main), name
    run = parser.parse_args(["run", "device-check", "trainer", "--log-file", "/tmp/x.log"])
    assert (run.action, run.container, run.log_file) == ("device-check", "trainer", "/tmp/x.log")
    kill = parser.parse_args(["kill", "trainer", "4242", "--signal", "KILL", "--yes"])
    assert (kill.act, kill.container, kill.pid, kill.signal, kill.yes) == ("kill", "trainer", 4242, "KILL", True)
    assert parser.parse_args(["restart", "trainer"]).act == "restart"
    (action_arg,) = [a for a in sub.choices["run"]._actions if a.dest == "action"]
    assert list(action_arg.choices) == [a.name for a in ACTIONS]


def test_the_dashboard_keys_and_the_action_screen_read_the_one_registry():
    from mltop.diagnostics.actions import ACTIONS
    from mltop.tui.app import CONTAINER_SCREENS, MltopApp

    keys = {b.key: b.action for b in MltopApp.BINDINGS}
    for action in ACTIONS:
        assert keys[action.key] == f"container_screen('{action.name}')"
        assert CONTAINER_SCREENS[action.name].title == action.title
