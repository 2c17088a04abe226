"""Sense: read the Docker engine, cgroups, /proc and NVML into plain frozen records."""
