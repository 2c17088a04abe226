"""The network interfaces a container sees: the names in its PID's /proc/<pid>/net/dev (its network namespace)."""

from __future__ import annotations

from .openfiles import read_whole

MAX_INTERFACES = 256


def parse_interface_names(text: str) -> tuple[str, ...]:
    """/proc/net/dev's interface names (`  eth0: 123 ...` after two header lines), in order, at most
    MAX_INTERFACES."""
    out = []
    for line in text.splitlines()[2:2 + MAX_INTERFACES]:
        name, sep, _ = line.partition(":")
        name = name.strip()
        if sep and name:
            out.append(name)
    return tuple(out)


def container_interfaces(pid: int | None, proc: str = "/proc") -> tuple[str, ...] | None:
    """The interface names in `pid`'s network namespace; None when its /proc entry cannot be read."""
    if not pid:
        return None
    try:
        return parse_interface_names(read_whole(f"{proc}/{pid}/net/dev")[:1 << 16].decode("utf-8", "replace"))
    except OSError:
        return None
