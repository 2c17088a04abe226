"""`mltop serve`: the always-on agent that keeps sampling and serves the latest snapshot to Prometheus."""
