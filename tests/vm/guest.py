"""A cgroup v2 + systemd test host the suite boots by itself: Debian 12 under qemu's software emulation.

    python tests/vm/guest.py build          # the image, once (cached under /var/cache/mltop-test/cgroup-v2/)
    python tests/vm/guest.py boot           # restore the saved Docker-ready VM (saves it first if needed)
    python tests/vm/guest.py run CMD...     # run a command in the guest: its output and exit code
    python tests/vm/guest.py stop           # stop the VM that `boot` started (by its PID)

What goes into the image is Debian's packages only: `mmdebstrap` (inside `unshare -m`, so its mounts never
show on the host, and in its own directory, so the host's apt and dpkg are untouched) makes a root
filesystem with systemd, docker.io, containerd, python3, openssh-server, busybox-static and the kernel
(linux-image-amd64, whose initramfs-tools builds the initrd); `mke2fs -d` makes it an ext4 image. The guest
boots with the unified hierarchy (systemd.unified_cgroup_hierarchy=1) and Docker's systemd cgroup driver.

- The image is keyed by a hash of its recipe (RECIPE and the hook below): a changed recipe builds anew.
- A first boot is cold (about a minute to Docker ready under emulation). Once ready, the test images and
  mltop's dependencies are loaded, and the whole machine is saved (`migrate "exec:zstd > state"`) with its
  disk in a qcow2 overlay; later boots restore it (`-incoming`) with that overlay opened `snapshot=on`, so
  every boot starts from the same Docker-ready state and writes nothing back.
- Commands run over ssh (a test-only key, user-mode networking with a port forward on 127.0.0.1); files are
  shared over 9p (mounted at /mnt/mltop after the restore: a mounted 9p export blocks migration).
- mltop is installed as a user would: `pip install` of the wheels built on the host (Python 3.11 on both
  sides, same glibc), into a venv at /opt/mltop.
- Everything it starts it stops by PID.

The facts behind the choices (PVM's /dev/kvm cannot boot a stock kernel, so `-accel tcg`, `-cpu
max,la57=off`): issue 19.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("MLTOP_VM_CACHE", "/var/cache/mltop-test/cgroup-v2"))
SUITE = "bookworm"
MEMORY_MB = 2048
CPUS = 2
SHARE_TAG = "mltop"
GUEST_SHARE = "/mnt/mltop"
GUEST_VENV = "/opt/mltop"
GUEST_IMAGES = ("mltop-test/busybox:1",)  # loaded from the host's engine (tests/images.py builds them)

RECIPE = {
    "suite": SUITE,
    "variant": "minbase",
    "packages": [
        "systemd", "systemd-sysv", "udev", "dbus", "kmod", "iproute2", "procps",
        "linux-image-amd64", "initramfs-tools", "openssh-server", "python3", "python3-venv",
        # docker.io, with what Debian recommends beside it that a container start needs: Debian's kernel
        # enables AppArmor, and dockerd then loads its docker-default profile with apparmor_parser
        "docker.io", "containerd", "apparmor", "busybox-static",
    ],
    "files": {
        "/etc/hostname": "mltop-v2\n",
        "/etc/hosts": "127.0.0.1 localhost\n127.0.1.1 mltop-v2\n",
        "/etc/fstab": "/dev/vda / ext4 rw,relatime 0 1\n",
        "/etc/systemd/network/20-wired.network": "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n",
        "/etc/docker/daemon.json": json.dumps({"exec-opts": ["native.cgroupdriver=systemd"],
                                               "storage-driver": "overlay2"}) + "\n",
        # the initrd (initramfs-tools' MODULES=most) holds virtio and ext4; 9p for the share is loaded from
        # the root filesystem at boot
        "/etc/modules-load.d/mltop.conf": "9p\n9pnet_virtio\n",
    },
    "enable": ["systemd-networkd", "ssh", "docker"],
    # nothing periodic or slow at boot: emulation makes every unit count
    "mask": ["apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
             "systemd-timesyncd.service", "getty@tty1.service", "serial-getty@ttyS0.service",
             "systemd-networkd-wait-online.service", "e2scrub_reap.service"],
    "size": "6G",
}
KERNEL_ARGS = "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 quiet loglevel=3 " \
              "systemd.show_status=0 net.ifnames=0"
# the save/restore needs the same machine on both sides: memory, CPU count and model, the devices
QEMU_MACHINE = ["-machine", "q35", "-accel", "tcg", "-cpu", "max,la57=off", "-smp", str(CPUS),
                "-m", str(MEMORY_MB), "-display", "none", "-no-user-config", "-nodefaults"]


class VmError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[vm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def require_root() -> None:
    """The build (mmdebstrap --mode=root in `unshare -m`, a root-owned tree for mke2fs -d) and the cache under
    /var/cache need root; CI runs as root."""
    if os.geteuid() != 0:
        raise VmError("the cgroup v2 guest needs root (mmdebstrap --mode=root, unshare -m, /var/cache/mltop-test)")


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (MLTOP_DEBIAN_MIRROR overrides): the build reaches the same
    place apt does."""
    if os.environ.get("MLTOP_DEBIAN_MIRROR"):
        return os.environ["MLTOP_DEBIAN_MIRROR"]
    candidates: list[str] = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for line in Path(path).read_text(errors="replace").splitlines():
            if line.startswith("URIs:"):
                candidates += line.split()[1:]
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        try:
            for line in Path(path).read_text(errors="replace").splitlines():
                fields = line.split()
                if fields and fields[0] == "deb":
                    candidates += [f for f in fields[1:] if "://" in f][:1]
        except OSError:
            pass
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    return "http://deb.debian.org/debian"


def _hook_script() -> str:
    """The customize hook: runs on the host with the new root as $1 (mmdebstrap --mode=root)."""
    lines = ["set -eu", 'R="$1"']
    for path, text in RECIPE["files"].items():
        lines.append(f'mkdir -p "$R{os.path.dirname(path)}"')
        lines.append(f'printf %s {shlex.quote(text)} > "$R{path}"')
    lines += [
        'mkdir -p "$R/root/.ssh" "$R' + GUEST_SHARE + '"',
        'cp "$MLTOP_VM_PUBKEY" "$R/root/.ssh/authorized_keys"',
        'chmod 700 "$R/root/.ssh"; chmod 600 "$R/root/.ssh/authorized_keys"',
        'chroot "$R" systemctl enable ' + " ".join(RECIPE["enable"]),
        'chroot "$R" systemctl mask ' + " ".join(RECIPE["mask"]),
        'rm -rf "$R/var/cache/apt/archives/"*.deb "$R/var/lib/apt/lists/"*',
    ]
    return "\n".join(lines) + "\n"


def _prune(prefix: str, keep: Path) -> None:
    """Cache entries of an older recipe: 1-7 GB each, never used again."""
    for old in CACHE.glob(prefix + "*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def image_key() -> str:
    text = json.dumps(RECIPE, sort_keys=True) + _hook_script()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_dir() -> Path:
    return CACHE / f"image-{image_key()}"


def build(force: bool = False) -> Path:
    """The image (root.img, vmlinuz, initrd.img, the test key), built once per recipe."""
    out = image_dir()
    if (out / "BUILT").exists() and not force:
        return out
    require_root()
    for tool in ("mmdebstrap", "mke2fs", "unshare", "ssh-keygen"):
        if not shutil.which(tool):
            raise VmError(f"{tool} is missing (apt-get install mmdebstrap e2fsprogs util-linux openssh-client)")
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
    started = time.monotonic()
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mltop-test-vm (test only)",
                        "-f", str(work / "id_ed25519")], check=True)
        hook = work / "customize.sh"
        hook.write_text(_hook_script())
        rootfs = work / "rootfs"
        mirror = debian_mirror()
        log(f"mmdebstrap {SUITE} from {mirror} into {rootfs}")
        cmd = ["unshare", "-m", "--propagation", "private",
               "mmdebstrap", "--mode=root", f"--variant={RECIPE['variant']}", "--quiet",
               "--include=" + ",".join(RECIPE["packages"]),
               f"--customize-hook=sh {shlex.quote(str(hook))} \"$1\"",
               SUITE, str(rootfs), mirror]
        env = {**os.environ, "MLTOP_VM_PUBKEY": str(work / "id_ed25519.pub")}
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise VmError(f"mmdebstrap failed ({result.returncode}): {result.stderr[-2000:]}")
        kernels = sorted(glob.glob(str(rootfs / "boot" / "vmlinuz-*")))
        initrd = Path(kernels[-1].replace("vmlinuz-", "initrd.img-")) if kernels else None
        if initrd is None or not initrd.exists():
            raise VmError("the root filesystem holds no kernel or initrd")
        shutil.copy(kernels[-1], work / "vmlinuz")
        shutil.copy(initrd, work / "initrd.img")
        log("mke2fs -d")
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "mltop-root", "-d", str(rootfs),
                        str(work / "root.img"), RECIPE["size"]], check=True)
        shutil.rmtree(rootfs)
        (work / "BUILT").write_text(json.dumps({"recipe": RECIPE, "mirror": mirror,
                                                "seconds": round(time.monotonic() - started, 1)}))
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
        _prune("image-", keep=out)
        log(f"image built in {time.monotonic() - started:.0f} s: {out}")
        return out
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- wheels


def _wheels_key() -> str:
    """mltop's dependency list (not the rest of pyproject.toml)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return hashlib.sha256(json.dumps(project["dependencies"]).encode()).hexdigest()[:16]


def _source_copy(dest: Path) -> Path:
    """The checkout as it is (uncommitted edits included), without its venv, git data and build outputs:
    `pip wheel` builds in the source tree, and the worktree stays clean."""
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", "__snapshots__",
                                    "screenshots", ".pytest_cache")
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def _pip_wheel(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise VmError(f"pip wheel {' '.join(args)} failed: {result.stdout[-1500:]}{result.stderr[-3000:]}")


def dependency_wheels() -> Path:
    """mltop's dependencies as wheels for the guest, built on the host with its Python (3.11, as the
    guest's), cached by pyproject.toml."""
    if sys.version_info[:2] != (3, 11):  # compiled wheels (cffi) are per Python version
        raise VmError(f"the guest runs Debian 12's Python 3.11: run the tier with Python 3.11, not "
                      f"{sys.version.split()[0]}")
    out = CACHE / f"wheels-{_wheels_key()}"
    if (out / "DONE").exists():
        return out
    work = Path(tempfile.mkdtemp(prefix="wheels-", dir=CACHE))
    log("pip wheel mltop's dependencies")
    with tempfile.TemporaryDirectory() as tmp:
        src = _source_copy(Path(tmp) / "src")
        _pip_wheel(["-w", str(work), str(src)])
    for own in work.glob("mltop-*.whl"):
        own.unlink()
    (work / "DONE").write_text("")
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    _prune("wheels-", keep=out)
    return out


def mltop_wheel(out_dir: Path) -> Path:
    """This checkout as a wheel (the code under test: built afresh each session)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = _source_copy(Path(tmp) / "src")
        _pip_wheel(["--no-deps", "-w", str(out_dir), str(src)])
    wheels = sorted(out_dir.glob("mltop-*.whl"), key=os.path.getmtime)
    return wheels[-1]


# --------------------------------------------------------------------------- the machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image_ids(names=GUEST_IMAGES) -> str:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", *names],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise VmError(f"the host's engine lacks {names}: run python tests/images.py")
    return out.stdout


def saved_dir() -> Path:
    """The saved Docker-ready machine: keyed by the image, the test images, qemu and the machine. Not by
    mltop's dependencies: those it holds are what they were at the save, and `install_mltop` brings the
    current ones (pip installs what changed)."""
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    text = image_key() + _image_ids() + qemu + " ".join(QEMU_MACHINE) + KERNEL_ARGS
    return CACHE / f"saved-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class Guest:
    """One running VM. `Guest.start()` restores the saved machine (saving it first when there is none)."""

    def __init__(self, image: Path, disk: Path, run_dir: Path, share: Path, port: int):
        self.image, self.disk, self.run_dir, self.share, self.port = image, disk, run_dir, share, port
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.monitor = run_dir / "monitor.sock"
        self.serial = run_dir / "serial.log"
        self.boot_seconds: float | None = None

    # ---- starting

    @classmethod
    def start(cls, share: Path | None = None, detach: bool = False) -> "Guest":
        require_root()
        image = build()
        saved = saved_dir()
        if not (saved / "DONE").exists():
            cls._save(image, saved)
        run_dir = Path(tempfile.mkdtemp(prefix="mltop-vm-"))
        share = share or (run_dir / "share")
        share.mkdir(parents=True, exist_ok=True)
        guest = cls(image, saved / "overlay.qcow2", run_dir, share, _free_port())
        started = time.monotonic()
        guest._launch(snapshot=True, incoming=saved / "state.zst", detach=detach)
        try:
            guest.wait_incoming(timeout=120)
            guest.wait_ssh(timeout=120)
            # the clock stood still since the save: the guest takes the host's
            guest.run(f"date -s @{time.time():.3f} >/dev/null && mount -t 9p -o trans=virtio,version=9p2000.L "
                      f"{SHARE_TAG} {GUEST_SHARE}", check=True)
        except BaseException:
            guest.stop()
            raise
        guest.boot_seconds = time.monotonic() - started
        log(f"restored in {guest.boot_seconds:.1f} s (pid {guest.pid}, ssh 127.0.0.1:{guest.port})")
        return guest

    @classmethod
    def _save(cls, image: Path, saved: Path) -> None:
        """Cold boot on a qcow2 overlay, wait for Docker, load the test images and mltop's dependencies,
        then save memory and devices; the overlay is kept with the state (they belong together)."""
        wheels = dependency_wheels()
        work = Path(tempfile.mkdtemp(prefix="saving-", dir=CACHE))
        try:
            overlay = work / "overlay.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            str(image / "root.img"), str(overlay)], check=True)
            run_dir = Path(tempfile.mkdtemp(prefix="mltop-vm-"))
            (run_dir / "share").mkdir()
            guest = cls(image, overlay, run_dir, run_dir / "share", _free_port())
            try:
                started = time.monotonic()
                guest._launch(snapshot=False)
                guest.wait_ssh(timeout=300)
                guest.wait_docker(timeout=300)
                cold = time.monotonic() - started
                log(f"cold boot to Docker ready: {cold:.0f} s")
                for name in GUEST_IMAGES:
                    save = subprocess.Popen(["docker", "save", name], stdout=subprocess.PIPE)
                    guest.run("docker load -q", stdin=save.stdout, check=True, timeout=300)
                    save.wait()
                tar = subprocess.Popen(["tar", "-C", str(wheels), "-c", "."], stdout=subprocess.PIPE)
                guest.run("mkdir -p /root/wheels && tar -C /root/wheels -x", stdin=tar.stdout, check=True)
                tar.wait()
                # the dependencies now, mltop itself (the code under test) at every boot
                log("installing mltop's dependencies in the guest's venv")
                guest.run(f"python3 -m venv {GUEST_VENV} && {GUEST_VENV}/bin/pip install -q --no-index "
                          f"--find-links /root/wheels /root/wheels/*.whl", check=True, timeout=900)
                guest.run("sync", check=True)
                guest.hmp("stop")
                state = work / "state.zst"
                guest.hmp(f'migrate -d "exec:zstd -q -3 -T2 > {state}"')
                deadline = time.monotonic() + 300
                while True:
                    info = guest.hmp("info migrate")
                    if "Migration status: completed" in info:
                        break
                    if "failed" in info or time.monotonic() > deadline:
                        raise VmError(f"saving the VM failed: {info}")
                    time.sleep(0.5)
                (work / "DONE").write_text(json.dumps({"cold_boot_s": round(cold, 1),
                                                       "saved_s": round(time.monotonic() - started, 1)}))
            finally:
                guest.stop()
            if saved.exists():
                shutil.rmtree(saved)
            work.rename(saved)
            _prune("saved-", keep=saved)
            log(f"saved the Docker-ready machine: {saved}")
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)

    def _launch(self, snapshot: bool, incoming: Path | None = None, detach: bool = False) -> None:
        drive = f"file={self.disk},if=virtio,format=qcow2" + (",snapshot=on,cache=unsafe" if snapshot else "")
        cmd = ["qemu-system-x86_64", *QEMU_MACHINE,
               "-kernel", str(self.image / "vmlinuz"), "-initrd", str(self.image / "initrd.img"),
               "-append", KERNEL_ARGS, "-drive", drive,
               "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
               "-device", "virtio-net-pci,netdev=n0",
               "-fsdev", f"local,id=fs0,path={self.share},security_model=none",
               "-device", f"virtio-9p-pci,fsdev=fs0,mount_tag={SHARE_TAG}",
               "-serial", f"file:{self.serial}",
               "-monitor", f"unix:{self.monitor},server=on,wait=off"]
        if incoming is not None:
            cmd += ["-incoming", f"exec:zstd -dc {shlex.quote(str(incoming))}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=open(self.run_dir / "qemu.log", "w"),
                                     stderr=subprocess.STDOUT, start_new_session=detach)
        self.pid = self.proc.pid

    def _alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        # a PID from the state file: still this qemu (its monitor socket in its command line), not a reused PID
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, TypeError):
            return False
        return cmdline.startswith(b"qemu-system") and str(self.monitor).encode() in cmdline

    def _died(self) -> VmError:
        tail = lambda p: p.read_text(errors="replace")[-1500:] if p.exists() else ""  # noqa: E731
        return VmError(f"qemu exited: {tail(self.run_dir / 'qemu.log')}\nserial:\n{tail(self.serial)}")

    def wait_incoming(self, timeout: float) -> None:
        """Until the saved state is loaded; then run it (it was saved stopped, and restores stopped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive():
                raise self._died()
            try:
                status = self.hmp("info status")
            except OSError:  # the monitor is not up yet
                status = ""
            if "VM status: running" in status:
                return
            if "VM status: paused" in status and "inmigrate" not in status:
                self.hmp("cont")
                return
            time.sleep(0.2)
        raise VmError(f"restoring the saved state took over {timeout:.0f} s")

    def wait_ssh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive():
                raise self._died()
            if self.run("true", timeout=30, connect_timeout=5).returncode == 0:
                return
            time.sleep(1)
        raise VmError(f"no ssh after {timeout:.0f} s; serial: {self.serial}")

    def wait_docker(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run("docker info >/dev/null 2>&1", timeout=60).returncode == 0:
                return
            time.sleep(1)
        raise VmError("Docker did not come up in the guest")

    # ---- using

    def ssh_command(self, connect_timeout: int = 10) -> list[str]:
        return ["ssh", "-q", "-p", str(self.port), "-i", str(self.image / "id_ed25519"),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=10",
                "root@127.0.0.1"]

    def run(self, command: str, timeout: float = 600, check: bool = False, stdin=None,
            connect_timeout: int = 10) -> subprocess.CompletedProcess:
        """Run a shell command in the guest: CompletedProcess with its stdout, stderr and exit code."""
        try:
            result = subprocess.run([*self.ssh_command(connect_timeout), command], capture_output=True,
                                    text=True, timeout=timeout, stdin=stdin if stdin is not None
                                    else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            result = subprocess.CompletedProcess(exc.cmd, 124, exc.stdout or "", f"timed out after {timeout} s")
            if isinstance(result.stdout, bytes):
                result.stdout = result.stdout.decode(errors="replace")
        if check and result.returncode != 0:
            raise VmError(f"guest command failed ({result.returncode}): {command}\n{result.stdout[-2000:]}"
                          f"\n{result.stderr[-2000:]}")
        return result

    def install_mltop(self) -> str:
        """pip install this checkout's wheel in the guest's venv, as a user would; returns the wheel's name."""
        wheel = mltop_wheel(self.share / "wheels")
        # the dependencies as they are now, next to the mltop wheel: the saved venv holds those of its day,
        # and pip installs only what changed since
        for dep in dependency_wheels().glob("*.whl"):
            shutil.copy(dep, self.share / "wheels" / dep.name)
        # (an earlier install of the same version goes first: pip would keep it)
        self.run(f"export PIP_DISABLE_PIP_VERSION_CHECK=1; {GUEST_VENV}/bin/pip uninstall -q -y mltop 2>/dev/null; "
                 f"{GUEST_VENV}/bin/pip install -q --no-index "
                 f"--find-links {GUEST_SHARE}/wheels {GUEST_SHARE}/wheels/{wheel.name}", check=True, timeout=600)
        return wheel.name

    def hmp(self, command: str) -> str:
        """One command on qemu's human monitor; its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(self.monitor))

            def until_prompt() -> str:
                data = b""
                while not data.endswith(b"(qemu) "):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                return data.decode(errors="replace")

            until_prompt()
            s.sendall(command.encode() + b"\n")
            return until_prompt()

    # ---- stopping

    def stop(self) -> None:
        """Stop qemu by its PID (TERM, then KILL) and remove the run directory."""
        if self.pid is not None and self._alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while self._alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._alive():
                os.kill(self.pid, signal.SIGKILL)
            if self.proc is not None:
                self.proc.wait()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def describe(self) -> dict:
        return {"pid": self.pid, "port": self.port, "run_dir": str(self.run_dir), "share": str(self.share),
                "image": str(self.image), "disk": str(self.disk)}

    @classmethod
    def attach(cls, info: dict) -> "Guest":
        guest = cls(Path(info["image"]), Path(info["disk"]), Path(info["run_dir"]), Path(info["share"]),
                    info["port"])
        guest.pid = info["pid"]
        return guest


# --------------------------------------------------------------------------- command line

STATE_FILE = Path(tempfile.gettempdir()) / f"mltop-vm-{os.getuid()}.json"


def _attached() -> Guest:
    try:
        guest = Guest.attach(json.loads(STATE_FILE.read_text()))
    except (OSError, ValueError):
        raise VmError("no VM is running (python tests/vm/guest.py boot)") from None
    if not guest._alive():
        STATE_FILE.unlink(missing_ok=True)
        raise VmError(f"the VM (pid {guest.pid}) is gone")
    return guest


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("build", "boot", "run", "stop", "install"):
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    what, rest = argv[0], argv[1:]
    try:
        if what == "build":
            print(build(force="--force" in rest))
        elif what == "boot":
            if STATE_FILE.exists():
                try:
                    _attached()
                    raise VmError(f"a VM is already running ({STATE_FILE}); stop it first")
                except VmError as err:
                    if "already" in str(err):
                        raise
            guest = Guest.start(detach=True)
            STATE_FILE.write_text(json.dumps(guest.describe()))
            print(json.dumps({**guest.describe(), "boot_s": round(guest.boot_seconds, 1)}))
        elif what == "install":
            print(_attached().install_mltop())
        elif what == "run":
            result = _attached().run(" ".join(shlex.quote(a) for a in rest) if len(rest) > 1 else rest[0])
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            return result.returncode
        elif what == "stop":
            _attached().stop()
            STATE_FILE.unlink(missing_ok=True)
    except VmError as err:
        print(f"vm: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
