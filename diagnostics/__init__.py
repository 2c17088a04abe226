"""Judge and act: checks that turn snapshots into findings, in-container actions, reports."""
