"""What the module API gives feature modules: dependencies, notification
events, and service domains kept apart from hosted ones."""

import pytest

from tests.harness import make_server
from xmppd.core.events import SESSION_BOUND


def test_a_dependency_is_loaded_once_before_the_module_that_needs_it(tmp_path):
    server = make_server(tmp_path, modules=("bind", "subscription"))
    assert {"roster", "presence", "subscription"} <= server.loaded
    assert server.services["roster"] is not None


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
