"""Files mltop writes, made so that a link another user planted can never redirect them.

Every file mltop creates goes through here (reports, action output, recordings and their lock, its own log):

- A whole file (`replace_file`) is written to a new temporary file next to the name given (O_EXCL, 0600),
  then renamed over that name. The rename replaces the name itself: when the name is a symbolic link, the
  link is replaced by the file and whatever it pointed at is left untouched. A path is never resolved first.
- A file kept open (a log appended to, the recorder's SQLite file and lock: `open_private`) cannot be renamed
  into place: it is opened with O_NOFOLLOW, so a name that is a symbolic link is refused (`UnsafeFile`, with
  a message saying so), as is one that is not a regular file or has a second hard link. A new one is 0600.
- A directory of mltop's own (`private_directory`) is created 0700; an existing one is left as it is, but one
  that any user may write to without the sticky bit is reported, since anyone could swap the files in it.

A directory on the way to the name that is a symbolic link owned by another user (not root, not us) is
refused too: whoever owns that link could point it anywhere, between one write and the next.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafeFile(OSError):
    """A name mltop refuses to write through: a symbolic link, not a regular file, or hard-linked elsewhere."""


def replace_file(path: str | os.PathLike, data: str | bytes, mode: int = PRIVATE_FILE_MODE) -> Path:
    """Write `data` (text is UTF-8) to a temporary file beside `path` and rename it over `path`; `mode` is set
    exactly (the umask does not apply: the caller asked for it). A missing parent directory is created 0700.
    Returns the absolute path written (its links not resolved). Raises OSError (UnsafeFile for a parent
    directory reached through another user's link)."""
    target = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if not target.name:
        raise IsADirectoryError(f"{target} names a directory, not a file")
    _check_parent_links(target)
    if not target.parent.is_dir():
        os.makedirs(target.parent, mode=PRIVATE_DIR_MODE, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        tmp, fd = _new_temporary(dir_fd, target.name)
        try:
            try:
                os.fchmod(fd, mode)
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            # Both names relative to the one directory we opened: a directory swapped meanwhile changes nothing.
            os.replace(tmp, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
    finally:
        os.close(dir_fd)
    return target


def open_private(path: str | os.PathLike, flags: int = os.O_RDWR, mode: int = PRIVATE_FILE_MODE) -> int:
    """A file descriptor on `path` (created `mode` when missing, `flags` as os.open takes them), never through
    a symbolic link. Raises UnsafeFile for a link, a file that is not regular, or one with another hard link
    (a name that may be someone else's file); other OSErrors as os.open raises them."""
    name = os.path.abspath(os.fspath(path))
    _check_parent_links(Path(name))
    try:
        # O_NONBLOCK: a FIFO planted under the name must not hang the open; cleared below for a regular file.
        fd = os.open(name, flags | os.O_CREAT | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as err:
        try:
            kind = os.lstat(name).st_mode
        except OSError:
            raise err from None
        if stat.S_ISLNK(kind):
            raise UnsafeFile(err.errno, f"refusing to open {name}: it is a symbolic link (to "
                                        f"{_link_text(name)}); remove it or name another file", name) from None
        if not stat.S_ISREG(kind):  # a FIFO without a reader (ENXIO), a socket
            raise UnsafeFile(err.errno, f"refusing to open {name}: it is not a regular file", name) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(0, f"refusing to open {name}: it is not a regular file", name)
        if info.st_nlink > 1:
            raise UnsafeFile(0, f"refusing to open {name}: it has {info.st_nlink} hard links, so it may be "
                                "another file under a second name; remove it or name another file", name)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(path: str | os.PathLike, mode: int = PRIVATE_FILE_MODE) -> int:
    """`open_private` for appending (a log file)."""
    return open_private(path, os.O_WRONLY | os.O_APPEND, mode)


def refuse_links(*paths: str | os.PathLike) -> None:
    """Raise UnsafeFile when one of the names that exist is a symbolic link: for the files a library opens by
    name (SQLite's -wal, -shm and -journal next to its database)."""
    for path in paths:
        name = os.fspath(path)
        if os.path.islink(name):
            raise UnsafeFile(0, f"refusing to use {name}: it is a symbolic link (to {_link_text(name)}); "
                                "remove it or name another file", name)


def private_directory(path: str | os.PathLike) -> str | None:
    """Make sure the directory exists: created 0700 when missing (its missing parents as the umask makes them).
    An existing one is left as it is. Returns a warning (None when none is due) for a directory every user may
    write to without the sticky bit."""
    name = os.path.abspath(os.fspath(path))
    if not os.path.isdir(name):
        os.makedirs(name, mode=PRIVATE_DIR_MODE, exist_ok=True)
    return loose_directory_warning(name)


def loose_directory_warning(path: str | os.PathLike) -> str | None:
    """A warning for a directory any user may write to without the sticky bit (anyone may rename or remove the
    files in it), else None."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        return (f"{os.fspath(path)} is writable by every user and has no sticky bit: another user can replace the "
                "files mltop keeps there; use a directory of your own (chmod 0700) or set the sticky bit (chmod +t)")
    return None


def _new_temporary(dir_fd: int, name: str) -> tuple[str, int]:
    for _ in range(100):
        tmp = f".{name[:200]}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, PRIVATE_FILE_MODE,
                         dir_fd=dir_fd)
        except FileExistsError:
            continue
        return tmp, fd
    raise FileExistsError(f"no free temporary name beside {name}")


def _check_parent_links(target: Path) -> None:
    """UnsafeFile when a directory on the way to `target` is a symbolic link owned by neither root nor us."""
    me = os.geteuid()
    for parent in target.parents:
        try:
            info = os.lstat(parent)
        except OSError:
            continue  # missing: created by us, or the open reports it
        if stat.S_ISLNK(info.st_mode) and info.st_uid not in (0, me):
            raise UnsafeFile(0, f"refusing to write under {parent}: it is a symbolic link owned by another user "
                                f"(uid {info.st_uid}), who could point it anywhere; name the real directory",
                             str(parent))


def _link_text(name: str) -> str:
    try:
        return repr(os.readlink(name)[:200])
    except OSError:
        return "somewhere"
