"""Fixtures shared by the in-memory tests (tests/integration has its own)."""

import pytest

from tests.harness import add_user, make_server


@pytest.fixture
def server(tmp_path):
    """The in-memory server of :func:`tests.harness.make_server` with the
    accounts alice@example.com and bob@example.com."""
    server = make_server(tmp_path)
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    return server
