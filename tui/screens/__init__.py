"""The dashboard's screens: each shows snapshots (and what the app holds) one way."""
