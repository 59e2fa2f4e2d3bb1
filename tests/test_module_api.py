"""What the module API gives feature modules: dependencies, notification
events, and service domains kept apart from hosted ones."""

import types

import pytest

from tests.harness import Client, make_server
from xmppd.core.events import SESSION_BOUND, SESSION_UNBOUND


def test_a_dependency_is_loaded_once_before_the_module_that_needs_it(tmp_path):
    server = make_server(tmp_path, modules=("bind", "subscription"))
    assert {"roster", "presence", "subscription"} <= server.loaded
    order = list(server.services)
    assert order.index("roster") < order.index("presence") < order.index("subscription")


def test_a_failing_notification_handler_does_not_stop_the_others(tmp_path):
    server = make_server(tmp_path, modules=())
    seen = []

    def broken(session):
        raise RuntimeError("broken module")

    server.hooks.add(SESSION_BOUND, broken, priority=10)
    server.hooks.add(SESSION_BOUND, seen.append)
    server.hooks.notify(SESSION_BOUND, "session")
    assert seen == ["session"]


def test_a_service_domain_cannot_shadow_a_hosted_one(tmp_path):
    server = make_server(tmp_path, modules=())
    with pytest.raises(ValueError, match="already served"):
        server.router.add_service("example.com", "example.com")


def test_modules_enabled_for_one_host_only(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=("bind", "ping"), extra=(
        '[hosts."a.example"]\nmodules_enabled = ["vcard"]\n[hosts."b.example"]\n'))
    server.load_host_modules()
    assert server.enabled("vcard", "a.example") and not server.enabled("vcard", "b.example")
    assert server.enabled("ping", "b.example")


def test_a_dependency_is_enabled_where_its_dependent_is(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=("bind",), extra=(
        '[hosts."a.example"]\nmodules_enabled = ["subscription"]\n[hosts."b.example"]\n'))
    server.load_host_modules()
    assert server.enabled("roster", "a.example") and server.enabled("presence", "a.example")
    assert not server.enabled("roster", "b.example")


def test_disabled_modules_win(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=("bind", "ping"), extra=(
        '[hosts."a.example"]\ndisabled_modules = ["ping"]\n'))
    assert not server.enabled("ping", "a.example")


def test_a_failing_unbind_handler_does_not_stop_the_others(server):
    seen = []

    def broken(session):
        raise RuntimeError("broken module")

    server.hooks.add(SESSION_UNBOUND, broken, priority=1000)
    server.hooks.add(SESSION_UNBOUND, seen.append, priority=-1000)
    alice = Client(server)
    alice.login("alice@example.com", "a")
    alice.stream.connectionLost(None)
    assert [str(session.jid) for session in seen] == ["alice@example.com/a"]


def test_a_module_is_off_where_a_module_it_depends_on_is_disabled(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=("bind",), extra=(
        '[hosts."a.example"]\ndisabled_modules = ["vcard"]\n[hosts."b.example"]\n'))
    server.load(types.SimpleNamespace(__name__="tests.avatars",
                                      setup=lambda api: api.depends("vcard")))
    assert not server.enabled("avatars", "a.example")
    assert server.enabled("avatars", "b.example") and server.enabled("vcard", "b.example")
