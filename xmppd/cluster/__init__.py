"""Several xmppd processes serving the same domains (docs/cluster.md).

PostgreSQL holds the durable state, shared by every node; Redis holds what
is shared and volatile: the session directory (each node's bound sessions,
mirrored in every node: :mod:`xmppd.cluster.directory`), the nodes'
heartbeats, and one Redis Stream per node of the stanzas routed to its
sessions, acknowledged once delivered and taken over by a survivor when
the node dies (:mod:`xmppd.cluster.node`).
"""
