"""`mltop fleet`: every host that runs `mltop serve`, read from the team's Prometheus (never from the hosts)."""
