"""Which libnvidia-ml.so.1 pynvml talks to: the flag, the environment, the system's, or WSL's."""

from __future__ import annotations

import ctypes
import os
from typing import Any

ENV_LIBRARY = "MLTOP_NVML_LIB"
DEFAULT_LIBRARY = "libnvidia-ml.so.1"
WSL_LIBRARY = "/usr/lib/wsl/lib/libnvidia-ml.so.1"

# Which library pynvml's global `nvmlLib` was loaded from by us; guarded by pynvml.libLoadLock.
_loaded_library: str | None = None


class LibraryNotLoaded(Exception):
    """No candidate library could be loaded; the message says what to do."""


def resolve_library_path(cli_value: str | None) -> str | None:
    """--nvml-lib PATH, else $MLTOP_NVML_LIB, else None (the system's libnvidia-ml.so.1)."""
    if cli_value:
        return cli_value
    return os.environ.get(ENV_LIBRARY) or None


def library_not_found_message(library: str | None) -> str:
    if library:
        return (
            f"NVML library {library} could not be loaded: point --nvml-lib (or ${ENV_LIBRARY}) at the "
            f"driver's libnvidia-ml.so.1"
        )
    return (
        "libnvidia-ml.so.1 was not found: install the NVIDIA driver (in a container, start it with --gpus "
        f"or the NVIDIA container runtime), or point --nvml-lib / ${ENV_LIBRARY} at the library; on WSL it "
        f"is {WSL_LIBRARY}"
    )


def load_library(pynvml: Any, library_path: str | None) -> str:
    """Point pynvml at the library to use (pynvml itself only loads when its nvmlLib is None); the path
    loaded, or LibraryNotLoaded."""
    global _loaded_library
    if library_path:
        candidates = [library_path]
        if not os.path.exists(library_path):
            raise LibraryNotLoaded(
                f"NVML library {library_path} does not exist: point --nvml-lib (or "
                f"${ENV_LIBRARY}) at the driver's libnvidia-ml.so.1, or drop it to use the system's"
            )
    else:
        candidates = [DEFAULT_LIBRARY] + ([WSL_LIBRARY] if os.path.exists(WSL_LIBRARY) else [])
    with pynvml.libLoadLock:
        if pynvml.nvmlLib is not None and _loaded_library in candidates:
            return _loaded_library
        errors = []
        for candidate in candidates:
            try:
                library = ctypes.CDLL(candidate)
            except OSError as err:
                errors.append(str(err))
                continue
            pynvml.nvmlLib = library
            pynvml._nvmlGetFunctionPointer_cache.clear()
            _loaded_library = candidate
            return candidate
    message = library_not_found_message(library_path)
    if library_path:
        message += f" ({'; '.join(errors)})"
    raise LibraryNotLoaded(message)


def forget_library(pynvml: Any, library_in_use: str | None) -> None:
    """Unload pynvml's library if it is the one we loaded, so another probe or a fixed driver starts clean."""
    global _loaded_library
    with pynvml.libLoadLock:
        if _loaded_library is not None and _loaded_library == library_in_use:
            pynvml.nvmlLib = None
            pynvml._nvmlGetFunctionPointer_cache.clear()
            _loaded_library = None
