# The `mltop serve` agent image. Build (offline: no pip, no network in the image):
#   python3 scripts/vendor_agent.py build/agent-vendor
#   docker build --build-arg BASE_IMAGE=python:3.11-slim -t mltop-agent .
# BASE_IMAGE needs python3 of the same minor version as the Python that ran vendor_agent.py.
# Run (see README "mltop serve" for what each mount is for):
#   docker run -d --name mltop-agent --pid=host --gpus all -p 127.0.0.1:10140:10140 \
#     -v /sys/fs/cgroup:/sys/fs/cgroup:ro -v /var/run/docker.sock:/var/run/docker.sock:ro \
#     --hostname "$(hostname)" mltop-agent
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG VENDOR=build/agent-vendor
COPY ${VENDOR}/ /opt/mltop/
ENV PYTHONPATH=/opt/mltop \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 10140
# Inside its own network namespace the agent must listen on every address for -p to reach it; publish the
# port on the host's loopback (-p 127.0.0.1:10140:10140) unless Prometheus runs elsewhere.
ENTRYPOINT ["python3", "-m", "mltop.tui.cli", "serve", "--listen", "0.0.0.0:10140"]
