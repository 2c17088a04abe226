"""A source that cannot act never touches a live container: every key of every screen pressed in a replay of a
real running container, and the engine itself says no exec was made (its ExecIDs and its exec events).

The keys are not listed here: each screen's active bindings are pressed (the app's, the screen's and its
widgets'), and the screens are found by pressing them, so a key or screen added later is covered too.
"""

from __future__ import annotations

import inspect
import time
import uuid

import pytest

from builders import replace
from conftest import until

from textual.binding import Binding

from mltop.diagnostics.actions import ACTIONS, BACKGROUND_DEVICE_CHECK, refusal
from mltop.probes.recording import Recorder, RecordingSource
from mltop.probes.source import StaticSource
from mltop.tui.app import MltopApp
from mltop.tui.screens.actions import ActionScreen
from mltop.tui.screens.dashboard import DashboardScreen

SIZE = (120, 36)
PREFIX = f"mltop-safe-{uuid.uuid4().hex[:6]}"
# Looks like a GPU workload to the background device check (doctor.BackgroundDeviceChecks.due). Put in the
# snapshot only, never in the real container: a live mltop of another test session on this engine would run its
# own device check in a GPU-looking container.
GPU_LOOKING_ENV = (("NVIDIA_VISIBLE_DEVICES", "all"), ("CUDA_VERSION", "12.4.1"))
REPLAY_REFUSAL = refusal(ACTIONS[0], RecordingSource)  # what `p` has always said in replay
EXPLORE_DEPTH = 3  # screens reached by up to this many keys from the dashboard


def exec_events(client, container_id: str, since: float) -> list[dict]:
    """The engine's exec_create / exec_start events for the container from `since` to now."""
    return list(client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                              filters={"container": container_id, "event": ["exec_create", "exec_start"]}))


def exec_ids(container) -> list[str]:
    container.reload()
    return list(container.attrs.get("ExecIDs") or [])


def record_real_container(path: str, sampler, sweeps: int = 3) -> None:
    rec = Recorder(path, watch_engine=False).start()
    try:
        for _ in range(sweeps):
            rec.record(sampler.sweep())
            time.sleep(0.25)
        rec.flush()
    finally:
        rec.close()


class RecordingNotes:
    """Every notification the app shows, in order (the refusal is one)."""

    def __init__(self, app: MltopApp):
        self.messages: list[str] = []
        original = app.notify

        def notify(message, *args, **kwargs):
            self.messages.append(str(message))
            return original(message, *args, **kwargs)

        app.notify = notify  # type: ignore[method-assign]


def ours(active) -> bool:
    """The binding is mltop's: in the BINDINGS of an mltop class of the node (not Textual's own scrolling, focus,
    copy and palette keys)."""
    return any(cls.__module__.startswith("mltop.") and any(
        isinstance(b, Binding) and b.action == active.binding.action for b in cls.__dict__.get("BINDINGS", ()))
        for cls in type(active.node).__mro__)


def pressable(app: MltopApp) -> list[str]:
    """A key for each of mltop's bindings active on the screen on top (the app's, the screen's, its widgets'),
    except quitting; of two keys for one action (`k` and `up`), one."""
    keys, done = [], set()
    for key, active in sorted(app.screen.active_bindings.items()):
        what = (type(active.node), active.binding.action)
        if active.binding.action != "quit" and ours(active) and what not in done:
            done.add(what)
            keys.append(key)
    return keys


def action_key(app: MltopApp, key: str) -> bool:
    """`key` reaches an in-container action on the screen on top (an Input with focus types it instead)."""
    active = app.screen.active_bindings.get(key)
    focused = app.screen.focused
    if active is None or (focused is not None and focused.check_consume_key(key, key if len(key) == 1 else None)):
        return False
    return any(active.binding.action == f"container_screen('{a.name}')" for a in ACTIONS)


async def back_to(pilot, app: MltopApp, path: tuple[str, ...], container_id: str) -> None:
    """The dashboard with the cursor on the container, then `path` pressed."""
    if len(app.screen_stack) > 1:
        while len(app.screen_stack) > 1:
            app.pop_screen()
        await pilot.pause()
    screen = app.screen
    assert isinstance(screen, DashboardScreen)
    if screen.maximized is not None:
        screen.minimize()
    screen.action_clear_filter()
    screen.table.focus()
    await until(pilot, lambda: screen.table.move_to_key(container_id), what="the container's row")
    for key in path:
        await pilot.press(key)
        await pilot.pause(0.05)


async def press_everything(pilot, app: MltopApp, container_id: str, notes: RecordingNotes,
                           seen: list[type]) -> tuple[int, dict[str, list[str]]]:
    """Find the screens by their keys, press every key on each; palette commands of the actions too.
    Returns how many presses reached an in-container action, and the keys pressed on each screen."""
    explored: dict[type, tuple[str, ...]] = {DashboardScreen: ()}
    queue: list[tuple[str, ...]] = [()]
    action_presses, pressed = 0, []
    while queue:
        path = queue.pop(0)
        await back_to(pilot, app, path, container_id)
        screen_type = type(app.screen)
        state = (list(app.screen_stack), app.screen.focused)
        # The actions' keys too where no binding of this screen takes them (a modal screen): still nothing
        for key in pressable(app) + sorted({a.key for a in ACTIONS} - set(app.screen.active_bindings)):
            if (list(app.screen_stack), app.screen.focused) != state:
                await back_to(pilot, app, path, container_id)  # the last key moved away: start again
                state = (list(app.screen_stack), app.screen.focused)
                if type(app.screen) is not screen_type:
                    continue  # a path that depends on state (a replay key moved the time)
            if action_key(app, key):
                action_presses += 1
            await pilot.press(key)  # (returns once the app is idle again)
            pressed.append((screen_type.__name__, key))
            seen.extend(type(s) for s in app.screen_stack)
            reached = type(app.screen)
            if reached not in explored and len(path) < EXPLORE_DEPTH and reached.__module__.startswith("mltop."):
                explored[reached] = path + (key,)
                queue.append(path + (key,))
        # The command palette's entries for the actions (the same bindings, another way in)
        await back_to(pilot, app, path, container_id)
        titles = {a.key_help for a in ACTIONS}
        for command in list(app.get_system_commands(app.screen)):
            if command.title in titles:
                done = command.callback()
                if inspect.isawaitable(done):
                    await done
                action_presses += 1
                await pilot.pause(0.05)
                seen.extend(type(s) for s in app.screen_stack)
    by_screen: dict[str, list[str]] = {}
    for name, key in pressed:
        by_screen.setdefault(name, []).append(key)
    print(f"{len(pressed)} keys pressed on {len(explored)} screens: {by_screen}")
    return action_presses, by_screen


async def test_replay_of_a_real_container_never_execs_in_it_whatever_key_is_pressed(
        containers, docker_client, sampler, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # replay's `r` writes its report here
    since = time.time()
    # A Python process (py-spy's target) with Python in the container (the device check's)
    target = containers.run(["python3", "-c", "import time\nwhile True: time.sleep(1)"], image="python",
                            name=f"{PREFIX}-job")
    path = str(tmp_path / "h.db")
    record_real_container(path, sampler)
    assert exec_ids(target) == []

    app = MltopApp(nvml=False, source=RecordingSource(path))
    notes = RecordingNotes(app)
    seen: list[type] = []
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is not None and app.snapshot.container(target.id) is not None,
                    what="the recorded container")
        action_presses, by_screen = await press_everything(pilot, app, target.id, notes, seen)
        await pilot.pause(1.0)  # an exec started by any of them would be on the engine by now
        device_checks, actions_run = dict(app.device_checks.outcomes), len(app.action_log)

    # What the engine says: no exec was created or started in the container during all that
    assert exec_events(docker_client, target.id, since) == []
    assert exec_ids(target) == []
    assert device_checks == {} and actions_run == 0 and ActionScreen not in seen
    # Every screen was found and had its keys pressed, the actions' keys on each, and each press that reached
    # an action was refused in the words users know
    assert {"DashboardScreen", "ContainerDetailScreen", "LogsScreen", "TimelineScreen", "HelpScreen",
            "RecordedDiagnosticsScreen", "RecordedReportScreen", "GotoTimeScreen"} <= set(by_screen)
    assert all({a.key for a in ACTIONS} <= set(keys) for keys in by_screen.values())
    assert action_presses >= 3 * len(ACTIONS)
    assert notes.messages.count(REPLAY_REFUSAL) == action_presses, notes.messages
    # ...and the engine's events would have shown an exec
    target.exec_run(["true"])
    assert [e["Action"].split(":")[0] for e in exec_events(docker_client, target.id, since)][:2] == [
        "exec_create", "exec_start"]


class FleetLikeSource(StaticSource):
    """Snapshots of real containers that come from elsewhere, as a Prometheus-backed fleet view's will: live
    (it sweeps, the doctor judges), but it cannot act on the containers it shows."""

    cannot_act = "The fleet view shows what Prometheus scraped"


@pytest.mark.parametrize("can_act", [False, True])
async def test_a_live_source_that_cannot_act_is_refused_by_its_capability_not_by_being_a_replay(
        containers, docker_client, sampler, can_act):
    since = time.time()
    target = containers.run(["sleep", "600"], name=f"{PREFIX}-gpu-{int(can_act)}")
    snapshots = [gpu_looking(sampler.sweep(), target.id), gpu_looking(sampler.sweep(), target.id)]
    source = StaticSource(snapshots) if can_act else FleetLikeSource(snapshots)
    assert source.live
    app = MltopApp(nvml=False, source=source, interval=0.25)
    notes = RecordingNotes(app)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.doctor_result is not None, what="the background doctor")
        if can_act:  # the control: the same snapshot on a source that can act gets its device check
            await until(pilot, lambda: any(k[0] == target.id and v != "running"
                                           for k, v in app.device_checks.outcomes.items()),
                        timeout=30, what="the background device check")
            assert refusal(BACKGROUND_DEVICE_CHECK, source) is None
        else:
            await until(pilot, lambda: dashboard_on(app, target.id), what="the container's row")
            for action in ACTIONS:
                await pilot.press(action.key)
                await pilot.pause(0.1)
                assert isinstance(app.screen, DashboardScreen)
            await pilot.pause(1.0)  # the device check would have started with the doctor run
            expected = refusal(ACTIONS[0], source)
            assert expected and expected.startswith(FleetLikeSource.cannot_act)
            assert notes.messages.count(expected) == len(ACTIONS)
            assert app.device_checks.outcomes == {} and len(app.action_log) == 0
    made = exec_events(docker_client, target.id, since)
    if can_act:
        assert made, "the background device check execs on a source that can act"
    else:
        assert made == [] and exec_ids(target) == []


def gpu_looking(snapshot, container_id: str):
    """The snapshot with the container's environment saying CUDA (see GPU_LOOKING_ENV)."""
    containers = tuple(replace(c, config=replace(c.config, env=c.config.env + GPU_LOOKING_ENV))
                       if c.id == container_id else c for c in snapshot.containers)
    return replace(snapshot, containers=containers)


def dashboard_on(app: MltopApp, container_id: str) -> bool:
    screen = app.screen
    return isinstance(screen, DashboardScreen) and screen.table.move_to_key(container_id)
