"""Build the simulated libnvidia-ml.so.1 and write the scenarios it answers from (format: fakenvml.c)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SOURCE = Path(__file__).with_name("fakenvml.c")
LIBRARY_NAME = "libnvidia-ml.so.1"
SCENARIO_ENV = "MLTOP_FAKE_NVML_SCENARIO"

# NVML return codes the tests use.
NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 6
DRIVER_NOT_LOADED = 9
GPU_IS_LOST = 15
LIB_RM_VERSION_MISMATCH = 18
UNKNOWN = 999


class FakeNvmlBuildError(RuntimeError):
    pass


def build_fake_nvml(out_dir: str | os.PathLike, old_driver: bool = False) -> Path:
    """Compile fakenvml.c into <out_dir>/libnvidia-ml.so.1; reuse it when source and flags are unchanged."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise FakeNvmlBuildError(
            "gcc is not installed: the NVML tests compile a simulated libnvidia-ml.so.1 "
            "(tests/fakenvml/fakenvml.c); install gcc (apt-get install gcc) to run them"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    library = out / LIBRARY_NAME
    command = [gcc, "-shared", "-fPIC", "-O1", "-o", str(library), str(SOURCE), "-lpthread"]
    if old_driver:
        command.insert(1, "-DMLTOP_FAKE_OLD_DRIVER")
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(command[1:]).encode()).hexdigest()
    stamp = out / (LIBRARY_NAME + ".sha256")
    if library.exists() and stamp.exists() and stamp.read_text() == digest:
        return library
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise FakeNvmlBuildError(f"building the fake NVML failed:\n{' '.join(command)}\n{result.stderr}")
    stamp.write_text(digest)
    return library


# --------------------------------------------------------------------------- scenarios


@dataclass
class FakeProcess:
    pid: int
    type: str = "compute"  # "compute" | "graphics" | "mps" (an MPS client: only the MPS process call lists it)
    used_memory: int | None = 1 << 30  # None -> NVML_VALUE_NOT_AVAILABLE
    sm: int = 0  # % in the newest utilisation sample; 0 = no sample (NVML lists only busy processes)
    sm_prev: int | None = None  # an older sample, 1 s before the newest
    mig: int | None = None  # the MIG device (slot) of its GPU it runs on
    alive: bool = False  # listed only while host PID `pid` runs (a test kills it and sees it go)


# The health keys fakenvml.c knows; a key left out makes its NVML call answer NOT_SUPPORTED.
HEALTH_KEYS = (
    "sm_clock", "sm_clock_max", "mem_clock", "mem_clock_max", "pstate", "fan", "ecc_mode",
    "ecc_vol_corr", "ecc_vol_unc", "ecc_agg_corr", "ecc_agg_unc", "retired_pending", "remap_corr",
    "remap_unc", "remap_pending", "remap_failed", "pcie_gen", "pcie_gen_max", "pcie_width",
    "pcie_width_max", "pcie_tx_kbs", "pcie_rx_kbs", "enc", "dec", "compute_mode", "mig_mode",
)

# A healthy H100 for scenarios that want every health call answered.
HEALTHY = dict(sm_clock=1980, sm_clock_max=1980, mem_clock=2619, mem_clock_max=2619, pstate=0, fan=40,
               ecc_mode=1, ecc_vol_corr=0, ecc_vol_unc=0, ecc_agg_corr=0, ecc_agg_unc=0, retired_pending=0,
               remap_corr=0, remap_unc=0, remap_pending=0, remap_failed=0, pcie_gen=5, pcie_gen_max=5,
               pcie_width=16, pcie_width_max=16, pcie_tx_kbs=1_000_000, pcie_rx_kbs=2_000_000, enc=0, dec=0,
               compute_mode=0, mig_mode=0)


def _series(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(int(v)) for v in value)
    return str(int(value))


@dataclass
class FakeNvLink:
    """NVLink `link` of a GPU (count: links link..link+count-1 alike): active or not, and its four DL error
    counters (NVML_NVLINK_ERROR_DL_REPLAY, _RECOVERY, _CRC_FLIT, _CRC_DATA), each a value or a sequence stepping
    every step_ms of its GPU."""

    link: int = 0
    count: int = 1
    active: bool = True
    replay: int | list[int] = 0
    recovery: int | list[int] = 0
    crc_flit: int | list[int] = 0
    crc_data: int | list[int] = 0


def nvlinks(count: int = 18, down: tuple[int, ...] = (), **counters) -> list[FakeNvLink]:
    """`count` links (18 on an H100 SXM), those in `down` inactive; `counters` (replay=..., crc_flit=...) apply
    to link 0 only, the rest stay at 0."""
    out = [FakeNvLink(link=0, active=0 not in down, **counters)]
    out += [FakeNvLink(link=i, active=i not in down) for i in range(1, count)]
    return out


# NVML_GPU_FABRIC_STATE_*
FABRIC_NOT_SUPPORTED, FABRIC_NOT_STARTED, FABRIC_IN_PROGRESS, FABRIC_COMPLETED = 0, 1, 2, 3


@dataclass
class FakeFabric:
    """nvmlDeviceGetGpuFabricInfo(V) of a GPU: state (FABRIC_*) and status (an nvmlReturn_t)."""

    state: int = FABRIC_COMPLETED
    status: int = 0
    clique: int = 1
    health: int = 0


@dataclass
class FakeGpu:
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    name: str = "NVIDIA H100 80GB HBM3"
    util: int | list[int] = 0
    mem_util: int | list[int] = 0
    mem_total: int = 80 * (1 << 30)
    mem_used: int | list[int] = 0
    temp: int | list[int] = 35
    power_mw: int | list[int] = 70_000
    power_limit_mw: int = 700_000
    clocks_event: int = 0x1
    persistence: bool = True
    pci: str = "00000000:3B:00.0"
    lost: bool = False
    util_ts: int | None = None  # fixed process-sample timestamp (us); None = wall clock at each call
    processes: list[FakeProcess] = field(default_factory=list)
    # HEALTH_KEYS -> value or sequence; a healthy GPU by default, {} for one that supports none of them.
    health: dict[str, int | list[int]] = field(default_factory=lambda: dict(HEALTHY))
    step_ms: int | None = None  # how long each item of a sequence lasts (default 1000)
    # GPU Performance Metrics: None = the GPU has none (older than Hopper); else NVML_GPM_METRIC_* id -> value
    # (% or MiB/s) or a sequence; gpm_mig: the same per MIG GPU instance id.
    gpm: dict[int, float | list[float]] | None = None
    gpm_mig: dict[int, dict[int, float | list[float]]] = field(default_factory=dict)
    nvlinks: list[FakeNvLink] = field(default_factory=list)  # empty: no NVLink (every link NOT_SUPPORTED)
    fabric: FakeFabric | None = None  # None: nvmlDeviceGetGpuFabricInfo(V) answers NOT_SUPPORTED


# NVML_GPM_METRIC_* ids (nvidia-ml-py), for scenarios.
GPM_GRAPHICS, GPM_SM, GPM_OCCUPANCY, GPM_TENSOR = 1, 2, 3, 5
GPM_DRAM, GPM_FP64, GPM_FP32, GPM_FP16 = 10, 11, 12, 13
GPM_PCIE_TX, GPM_PCIE_RX, GPM_NVLINK_RX, GPM_NVLINK_TX = 20, 21, 60, 61


def _gpm_values(value) -> str:
    values = value if isinstance(value, (list, tuple)) else [value]
    return ",".join(repr(float(v)) for v in values)


@dataclass
class FakeMig:
    """A MIG device in slot `index` of GPU `gpu` (give that GPU health mig_mode=1)."""

    gpu: int
    index: int
    uuid: str
    mem_total: int = 10 * (1 << 30)
    mem_used: int = 0
    gi: int = 1
    ci: int = 0
    profile: str = "1g.10gb"


@dataclass
class FakeXid:
    """An Xid the library delivers once through nvmlEventSetWait, `at` seconds after nvmlInit or later."""

    gpu: int
    code: int
    at: float = 0.0


@dataclass
class Directive:
    kind: str  # "fail" | "hang"
    function: str  # exact NVML symbol, e.g. "nvmlDeviceGetPowerUsage"
    value: float  # return code for fail, seconds for hang
    gpu: int | None = None
    times: int | None = None
    after: int | None = None  # let this many matching calls through first


def fail(function: str, code: int, gpu: int | None = None, times: int | None = None,
         after: int | None = None) -> Directive:
    return Directive("fail", function, code, gpu, times, after)


def hang(function: str, seconds: float, gpu: int | None = None, times: int | None = None,
         after: int | None = None) -> Directive:
    return Directive("hang", function, seconds, gpu, times, after)


@dataclass
class FakeScenario:
    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: int = 0
    init_delay_s: float = 0.0  # how long every nvmlInit* takes (a host without persistence mode)
    driver_version: str = "550.54.15"
    cuda_version: int = 12040
    directives: list[Directive] = field(default_factory=list)
    xids: list[FakeXid] = field(default_factory=list)
    migs: list[FakeMig] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"init_error {self.init_error}", f"driver {self.driver_version}", f"cuda {self.cuda_version}"]
        if self.init_delay_s:
            lines.append(f"init_delay {self.init_delay_s}")
        for index, g in enumerate(self.gpus):
            words = [
                "gpu",
                f"index={index}",
                f'uuid="{g.uuid}"',
                f'name="{g.name}"',
                f"util={_series(g.util)}",
                f"mem_util={_series(g.mem_util)}",
                f"mem_total={g.mem_total}",
                f"mem_used={_series(g.mem_used)}",
                f"temp={_series(g.temp)}",
                f"power_mw={_series(g.power_mw)}",
                f"power_limit_mw={g.power_limit_mw}",
                f"clocks_event={g.clocks_event:#x}",
                f"persistence={int(g.persistence)}",
                f"pci={g.pci}",
                f"lost={int(g.lost)}",
            ]
            if g.util_ts is not None:
                words.append(f"util_ts={g.util_ts}")
            if g.step_ms is not None:
                words.append(f"step_ms={g.step_ms}")
            if g.gpm is not None:
                words.append("gpm=1")
            for key, value in g.health.items():
                if key not in HEALTH_KEYS:
                    raise ValueError(f"unknown fake NVML health key {key!r} (known: {', '.join(HEALTH_KEYS)})")
                words.append(f"{key}={_series(value)}")
            lines.append(" ".join(words))
            for p in g.processes:
                mem = "na" if p.used_memory is None else str(p.used_memory)
                words = ["proc", f"gpu={index}", f"pid={p.pid}", f"type={p.type}", f"mem={mem}", f"sm={p.sm}"]
                if p.sm_prev is not None:
                    words.append(f"sm_prev={p.sm_prev}")
                if p.mig is not None:
                    words.append(f"mig={p.mig}")
                if p.alive:
                    words.append("alive=1")
                lines.append(" ".join(words))
        for index, g in enumerate(self.gpus):
            for metric, value in (g.gpm or {}).items():
                lines.append(f"gpm gpu={index} id={metric} value={_gpm_values(value)}")
            for gi, metrics in g.gpm_mig.items():
                for metric, value in metrics.items():
                    lines.append(f"gpm gpu={index} gi={gi} id={metric} value={_gpm_values(value)}")
        for index, g in enumerate(self.gpus):
            for link in g.nvlinks:
                lines.append(f"nvlink gpu={index} link={link.link} count={link.count} state={int(link.active)} "
                             f"replay={_series(link.replay)} recovery={_series(link.recovery)} "
                             f"crc_flit={_series(link.crc_flit)} crc_data={_series(link.crc_data)}")
            if g.fabric is not None:
                f = g.fabric
                lines.append(f"fabric gpu={index} state={f.state} status={f.status} clique={f.clique} "
                             f"health={f.health}")
        for m in self.migs:
            lines.append(f'mig gpu={m.gpu} index={m.index} uuid="{m.uuid}" mem_total={m.mem_total} '
                         f"mem_used={m.mem_used} gi={m.gi} ci={m.ci} profile={m.profile}")
        for x in self.xids:
            lines.append(f"xid gpu={x.gpu} code={x.code} at={x.at}")
        for d in self.directives:
            value = int(d.value) if d.kind == "fail" else d.value
            words = [d.kind, d.function, str(value)]
            if d.gpu is not None:
                words.append(f"gpu={d.gpu}")
            if d.times is not None:
                words.append(f"times={d.times}")
            if d.after is not None:
                words.append(f"after={d.after}")
            lines.append(" ".join(words))
        return "\n".join(lines) + "\n"


def write_scenario(path: str | os.PathLike, scenario: FakeScenario | None = None, **fields) -> Path:
    """Write a scenario file: pass a FakeScenario, or its fields as keywords (gpus=[...], init_error=18)."""
    if scenario is None:
        scenario = FakeScenario(**fields)
    elif fields:
        raise TypeError("pass either a FakeScenario or its fields, not both")
    target = Path(path)
    # Write then rename, so a library re-reading at init never sees half a file.
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(scenario.render())
    tmp.replace(target)
    return target
