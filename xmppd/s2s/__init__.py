"""Server-to-server federation (RFC 6120, XEP-0220, XEP-0185, XEP-0178,
XEP-0368): policy, resolution, dialback, TLS, incoming and outgoing streams,
and the :class:`~xmppd.s2s.service.Federation` service that ``tap.py``
wires in."""
