"""Which host driver a CUDA version needs: NVIDIA's minimum-driver table and NVIDIA_REQUIRE_CUDA parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .findings import CRITICAL, WARNING

Version = tuple[int, ...]

# CUDA toolkit -> minimum Linux x86_64 driver (CUDA release notes, table 3).
MIN_DRIVER: dict[tuple[int, int], str] = {
    (10, 0): "410.48",
    (10, 1): "418.39",
    (10, 2): "440.33",
    (11, 0): "450.51.05",
    (11, 1): "455.23",
    (11, 2): "460.27.03",
    (11, 3): "465.19.01",
    (11, 4): "470.42.01",
    (11, 5): "495.29.05",
    (11, 6): "510.39.01",
    (11, 7): "515.43.04",
    (11, 8): "520.61.05",
    (12, 0): "525.60.13",
    (12, 1): "530.30.02",
    (12, 2): "535.54.03",
    (12, 3): "545.23.06",
    (12, 4): "550.54.14",
    (12, 5): "555.42.02",
    (12, 6): "560.28.03",
    (12, 8): "570.26",
    (12, 9): "575.51.03",
    (13, 0): "580.65.06",
    (13, 1): "590.44.01",
    (13, 2): "595.45.04",
}

# Minor-version compatibility: a driver at least this new runs any CUDA of the same major (11 onwards),
# except for PTX JIT of code newer than the driver.
MINOR_COMPAT_FLOOR: dict[int, str] = {11: "450.80.02", 12: "525", 13: "580"}

SOURCE = "CUDA release notes, table 3 (minimum driver per toolkit)"


def parse_version(text: str | None) -> Version | None:
    """"12.4.1" -> (12, 4, 1); "550.54.15" -> (550, 54, 15); None for anything else."""
    if not text:
        return None
    m = re.match(r"\s*(\d+(?:\.\d+)*)", str(text))
    if not m:
        return None
    return tuple(int(p) for p in m.group(1).split("."))


def format_version(version: Version) -> str:
    return ".".join(str(p) for p in version)


def cuda_major_minor(version: Version) -> tuple[int, int]:
    return version[0], version[1] if len(version) > 1 else 0


def minimum_driver(cuda: Version) -> str | None:
    """The minimum driver for CUDA `cuda` (a major.minor missing from the table takes the next row up)."""
    wanted = cuda_major_minor(cuda)
    for row in sorted(MIN_DRIVER):
        if row >= wanted:
            return MIN_DRIVER[row]
    return None  # newer than this table knows


# --------------------------------------------------------------------------- NVIDIA_REQUIRE_CUDA


@dataclass(frozen=True)
class Constraint:
    """One `name op value` term such as `cuda>=12.4`, `driver<471` or `brand=tesla`."""

    name: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


_TERM = re.compile(r"^([A-Za-z_]+)\s*(>=|<=|==|!=|=|>|<)\s*(\S+)$")


def parse_requirement(text: str | None) -> tuple[tuple[Constraint, ...], ...]:
    """Parse NVIDIA_REQUIRE_CUDA: spaces separate alternatives (OR), commas join terms (AND).

    `cuda>=12.4 brand=tesla,driver>=470,driver<471` -> ((cuda>=12.4,), (brand=tesla, driver>=470, driver<471)).
    Terms that do not parse are dropped.
    """
    alternatives = []
    for word in (text or "").split():
        terms = []
        for part in word.split(","):
            m = _TERM.match(part.strip())
            if m:
                terms.append(Constraint(m.group(1).lower(), m.group(2), m.group(3)))
        if terms:
            alternatives.append(tuple(terms))
    return tuple(alternatives)


def _compare(left: Version, op: str, right: Version) -> bool:
    width = max(len(left), len(right))
    a = left + (0,) * (width - len(left))
    b = right + (0,) * (width - len(right))
    return {
        ">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b, "=": a == b, "==": a == b, "!=": a != b,
    }[op]


def _prefix_compare(left: Version, op: str, right: Version) -> bool:
    """Compare on the precision of `right`, so that `driver<471` is true for 470.256.02."""
    return _compare(left[: len(right)], op, right)


@dataclass(frozen=True)
class CudaNeed:
    """The CUDA version a container asks for, and where that was read."""

    version: Version
    source: str  # e.g. "env CUDA_VERSION=12.4.1"
    forward_compat_alternatives: tuple[tuple[Constraint, ...], ...] = ()  # driver-branch exceptions


def cuda_need(env_value) -> CudaNeed | None:
    """The newest CUDA the container's image says it needs, from CUDA_VERSION and NVIDIA_REQUIRE_CUDA.

    `env_value` is a callable name -> value (ContainerConfig.env_value).
    """
    candidates: list[tuple[Version, str]] = []
    cuda_version = parse_version(env_value("CUDA_VERSION"))
    if cuda_version is not None:
        candidates.append((cuda_version, f"env CUDA_VERSION={env_value('CUDA_VERSION')}"))
    requirement = env_value("NVIDIA_REQUIRE_CUDA")
    alternatives = parse_requirement(requirement)
    exceptions = []
    for alt in alternatives:
        cudas = [parse_version(t.value) for t in alt if t.name == "cuda" and t.op in (">=", ">", "=", "==")]
        cudas = [v for v in cudas if v is not None]
        if cudas:
            candidates.append((max(cudas), f"env NVIDIA_REQUIRE_CUDA={requirement}"))
        elif any(t.name == "driver" for t in alt):
            exceptions.append(alt)
    if not candidates:
        return None
    version, source = max(candidates, key=lambda c: cuda_major_minor(c[0]))
    return CudaNeed(version, source, tuple(exceptions))


def driver_satisfies(alternative: tuple[Constraint, ...], driver: Version) -> bool:
    """Whether the host driver meets every `driver` term of one alternative (brand terms are not known)."""
    terms = [t for t in alternative if t.name == "driver"]
    if not terms:
        return False
    for t in terms:
        bound = parse_version(t.value)
        if bound is None or not _prefix_compare(driver, t.op, bound):
            return False
    return True


@dataclass(frozen=True)
class Verdict:
    severity: str
    reason: str
    minimum_driver: str | None


def judge(need: CudaNeed, host_cuda: Version, host_driver: Version | None) -> Verdict | None:
    """Compare a container's CUDA need with what the host driver supports; None when it is fine.

    Newer major: critical (the CUDA runtime refuses to start), unless the image's NVIDIA_REQUIRE_CUDA
    lists a driver-branch exception the host meets (forward compatibility with cuda-compat on datacenter
    GPUs): then a warning. Same major, newer minor: warning (minor-version compatibility runs it when
    the driver meets the family floor, but PTX JIT of newer code can fail with error 222).
    """
    need_mm = cuda_major_minor(need.version)
    host_mm = cuda_major_minor(host_cuda)
    if need_mm <= host_mm:
        return None
    min_driver = minimum_driver(need.version)
    if need_mm[0] > host_mm[0]:
        if host_driver is not None:
            for alt in need.forward_compat_alternatives:
                if driver_satisfies(alt, host_driver):
                    terms = ",".join(str(t) for t in alt)
                    return Verdict(
                        WARNING,
                        f"relies on forward compatibility: the image allows `{terms}` (needs a datacenter GPU "
                        "and the cuda-compat package in the image)",
                        min_driver,
                    )
        return Verdict(CRITICAL, "newer major version than the driver supports", min_driver)
    floor = MINOR_COMPAT_FLOOR.get(need_mm[0])
    floor_ok = host_driver is None or floor is None or _compare(host_driver, ">=", parse_version(floor) or ())
    if not floor_ok:
        return Verdict(CRITICAL, f"driver below the CUDA {need_mm[0]}.x minor-version compatibility floor "
                                 f"{floor}", min_driver)
    return Verdict(
        WARNING,
        "same major version, newer minor: runs through minor-version compatibility, but PTX JIT of "
        "newer code can fail (CUDA error 222)",
        min_driver,
    )
