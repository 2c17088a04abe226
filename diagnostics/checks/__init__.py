"""The checks, one module per domain, and the one registry the doctor reads.

A new check is one function in the module of its domain, registered with `@host_check(name)` or
`@container_check(name)` (see base.py).
"""

from __future__ import annotations

# Import order is registration order, and so the order in which the doctor runs (and reports skips).
from . import (driver, health, toolkit, visibility, memory, io, container, performance,  # noqa: F401
               gpu_efficiency, kubernetes, node_runtime, fabric, pci_infiniband, nccl)
from .base import (CONTAINER_CHECKS, EXEC_CHECKS, HOST_CHECKS, CheckContext, CheckSkipped, Thresholds,
                   container_check, host_check, looks_like_gpu_workload)
from .memory import CudaOom, parse_cuda_oom


from mltop.probes.host_facts import ContainerFacts, HostFacts, HostProbe

__all__ = ["CONTAINER_CHECKS", "EXEC_CHECKS", "HOST_CHECKS", "CheckContext", "CheckSkipped", "ContainerFacts",
           "CudaOom", "HostFacts", "HostProbe", "Thresholds", "container_check", "host_check",
           "looks_like_gpu_workload", "parse_cuda_oom"]
