"""A toy ``client_caps`` service for personal eventing's unit tests: it
says what each full JID wants (``NODE+notify`` features) and passes on
presence to an account from another entity (available with ``<c/>``, or
unavailable), as the real one does; and a server built with it."""

import importlib
import types

from tests.harness import Client, add_user, make_server
from xmppd.core.events import BARE, FULL, presence_event
from xmppd.core.stanzas import child
from xmppd.tap import MODULES

NS_CAPS = "http://jabber.org/protocol/caps"
CAPS = (f"<c xmlns='{NS_CAPS}' hash='sha-1' node='https://client.example'"
        " ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>")


class Caps:
    def __init__(self):
        self.known = {}
        self.listeners = []
        self.followers = []

    def setup(self, api):
        api.provide("client_caps", self)
        for target in (BARE, FULL):
            api.hook(presence_event(target), self.inbound, priority=200)

    def inbound(self, stanza):
        sender, account = stanza.sender, stanza.recipient.bare
        if sender.resource is not None and sender.bare != account and (
                stanza.type == "unavailable" or (
                    stanza.type is None and child(stanza.element, NS_CAPS, "c") is not None)):
            for callback in self.followers:
                callback(account, sender.full, stanza.type is None)
        return False

    def features(self, full):
        return self.known.get(full)

    def listen(self, callback):
        self.listeners.append(callback)

    def follow(self, callback):
        self.followers.append(callback)

    def learn(self, full, *nodes, later=False):
        """``full`` wants notifications of ``nodes``; ``later``: learnt from
        an answer, so the listeners are told."""
        self.known[full] = frozenset(f"{node}+notify" for node in nodes)
        if later:
            for callback in self.listeners:
                callback(full, self.known[full])


def pep_server(tmp_path, caps, users, extra="", hosts=("example.com",)):
    """A server with the standard modules and ``caps`` as ``client_caps``."""
    server = make_server(tmp_path, hosts=hosts, modules=(), extra=extra)
    server.load(types.SimpleNamespace(__name__="tests.client_caps", setup=caps.setup))
    for name in MODULES:
        if name not in ("sasl", "client_caps"):
            server.load(importlib.import_module(f"xmppd.modules.{name}"))
    for user in users:
        add_user(server, user)
    return server


def online(server, user, resource="res", presence=f"<presence>{CAPS}</presence>"):
    """A client of ``user`` available with capabilities (what they are is
    the toy service's), what it got since taken."""
    client = Client(server)
    client.login(user, resource)
    client.send(presence)
    client.take()
    return client
