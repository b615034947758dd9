"""The output stage: block events, aggregated counts, Prometheus text and the status file."""
