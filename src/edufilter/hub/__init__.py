"""Multi-site mode: a group's policy and its sites' parts in NATS JetStream, followed by
each gateway; block events published per site. Needs the `hub` extra (nats-py)."""
