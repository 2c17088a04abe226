# The `mltop serve` agent image. Build (offline: no pip, no network in the image):
#   python3 scripts/vendor_agent.py build/agent-vendor
#   docker build --build-arg BASE_IMAGE=python:3.11-slim -t mltop-agent .
# BASE_IMAGE needs python3 of the same minor version as the Python that ran vendor_agent.py.
# Run (see README "mltop serve" for what each mount is for):
#   docker run -d --name mltop-agent --pid=host --gpus all -p 127.0.0.1:10140:10140 \
#     --cap-drop ALL --cap-add SYS_PTRACE --cap-add DAC_READ_SEARCH --security-opt no-new-privileges \
#     --read-only -v /sys/fs/cgroup:/sys/fs/cgroup:ro -v /var/run/docker.sock:/var/run/docker.sock:ro \
#     -v /var/lib/mltop:/var/lib/mltop --hostname "$(hostname)" mltop-agent
# An image cannot drop capabilities itself, so the run line does: the agent keeps only SYS_PTRACE (reading
# /proc/<pid>/ns/net and /proc/<pid>/fd/* of other containers' processes passes the kernel's ptrace access
# check) and DAC_READ_SEARCH (/proc/<pid>/fd of a process of another user is a 0500 directory of theirs);
# Docker's default seccomp profile applies unless told otherwise. SYSLOG is not kept: /dev/kmsg (Xids from
# before the agent started) is not in the container; mount it with --device /dev/kmsg and add SYSLOG to read it.
# The Docker socket, even mounted :ro, is the whole Docker API (anyone holding it is root on the host): the
# agent only lists and inspects with it.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG VENDOR=build/agent-vendor
COPY ${VENDOR}/ /opt/mltop/
# MLTOP_NO_EXEC=1: the agent never execs into a container (the doctor's read test and device check are skipped).
ENV PYTHONPATH=/opt/mltop \
    MLTOP_NO_EXEC=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 10140
# Inside its own network namespace the agent must listen on every address for -p to reach it; publish the
# port on the host's loopback (-p 127.0.0.1:10140:10140) unless Prometheus runs elsewhere.
ENTRYPOINT ["python3", "-m", "mltop.tui.cli", "serve", "--listen", "0.0.0.0:10140"]
