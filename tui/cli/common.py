"""What every headless command shares: the engine/NVML options and a sampler built from them."""

from __future__ import annotations

import argparse


def add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options accepted before or after the subcommand (`mltop --docker-host X doctor` and the reverse)."""
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("--docker-host", metavar="URL", default=default(None),
                        help="Docker engine endpoint, or `none` to not ask Docker at all (default: "
                             "$MLTOP_DOCKER_HOST, then $DOCKER_HOST, the docker context, unix:///var/run/docker.sock; "
                             "ssh://user@host works)")
    parser.add_argument("--cri-endpoint", metavar="URL", default=default(None),
                        help="CRI runtime socket(s) for Kubernetes pods, comma-separated, or `none` (default: "
                             "$MLTOP_CRI_ENDPOINT, else whichever of /run/containerd/containerd.sock, "
                             "/run/k3s/containerd/containerd.sock, /var/run/crio/crio.sock exists)")
    parser.add_argument("--pod-resources-socket", metavar="PATH", default=default(None),
                        help="the kubelet's pod-resources socket, for the GPUs allocated to pods, or `none` "
                             "(default: $MLTOP_POD_RESOURCES_SOCKET, else /var/lib/kubelet/pod-resources/kubelet.sock)")
    parser.add_argument("--containerd-config", metavar="PATH", default=default(None),
                        help="the node's containerd config.toml for the doctor's pod runtime check (default: "
                             "$MLTOP_CONTAINERD_CONFIG, else /etc/containerd/config.toml; its imports are read too)")
    parser.add_argument("--crio-config", metavar="PATH", default=default(None),
                        help="the node's CRI-O crio.conf for the same check (default: $MLTOP_CRIO_CONFIG, else "
                             "/etc/crio/crio.conf; every file of the crio.conf.d directory next to it is read too)")
    parser.add_argument("--device-plugins-dir", metavar="PATH", default=default(None),
                        help="the kubelet's device-plugins directory, where NVIDIA's device plugin listens on "
                             "nvidia*.sock (default: $MLTOP_DEVICE_PLUGINS_DIR, else /var/lib/kubelet/device-plugins)")
    parser.add_argument("--nvml-lib", metavar="PATH", default=default(None),
                        help="alternate libnvidia-ml.so.1 (default: $MLTOP_NVML_LIB, then the system's; "
                             "WSL keeps it in /usr/lib/wsl/lib)")
    parser.add_argument("--sysfs-root", metavar="DIR", default=default("/sys"),
                        help="where the host's sysfs is mounted, for InfiniBand ports and the GPUs on PCI "
                             "(node_exporter's --path.sysfs; default /sys: an agent in a container with the "
                             "host's /sys mounted at /host/sys passes --sysfs-root /host/sys)")
    parser.add_argument("--no-nvml", action="store_true", default=default(False),
                        help="do not load NVML at all")
    parser.add_argument("--interval", type=float, metavar="SECONDS", default=default(1.0),
                        help="refresh / sampling interval in seconds (default 1, minimum 0.25)")
    parser.add_argument("--no-exec", action="store_true", default=default(False),
                        help="never docker exec into a container nor attach to its processes (also MLTOP_NO_EXEC=1): "
                             "every action (py-spy included), the read test and the background device check are "
                             "refused, and the doctor lists what it skipped")
    parser.add_argument("--read-only", action="store_true", default=default(False),
                        help="never act on a container (also MLTOP_READ_ONLY=1): no exec, no py-spy, no signal, no "
                             "stop or restart; every action and `mltop kill|stop|restart` is refused, as --no-exec "
                             "refuses the exec ones. `mltop serve` is always read-only")
    parser.add_argument("--log-file", metavar="PATH", default=default(None),
                        help="write mltop's own log here (default: $MLTOP_LOG_FILE; level from $MLTOP_LOG, "
                             "e.g. MLTOP_LOG=debug)")


def make_sampler(args: argparse.Namespace, **options):
    """A Sampler from the common options; `options`: further ProbeOptions fields (serve: container_stats)."""
    from mltop.probes.sampler import ProbeOptions, Sampler

    return Sampler(ProbeOptions(docker_host=args.docker_host, nvml=not args.no_nvml, nvml_lib=args.nvml_lib,
                                sysfs_root=args.sysfs_root, **options))
