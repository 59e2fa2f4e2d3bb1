"""The database goes away and comes back: clients get errors meanwhile, the
server keeps running and recovers (PostgreSQL behind a loopback proxy that
the test cuts and restores)."""

import os
import secrets
import select
import socket
import threading

import pytest
from slixmpp.exceptions import IqError
from sqlalchemy import create_engine, make_url, text

from tests.integration.conftest import LoginFailed, free_ports, prepare

POSTGRES_URL = os.environ.get("XMPPD_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="XMPPD_TEST_POSTGRES_URL is not set")


class Proxy:
    """Forwards 127.0.0.1:port to the database; ``cut()`` drops the
    listener and every connection, ``restore()`` listens again."""

    def __init__(self, port, target):
        self.port = port
        self.target = target
        self._listener = None
        self._connections = []
        self._lock = threading.Lock()

    def restore(self):
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def cut(self):
        # shutdown() first: close() alone does not interrupt a thread blocked
        # in accept() or select() on the socket, which would keep it alive.
        with self._lock:
            for sock in [self._listener, *self._connections]:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._connections.clear()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=5)
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        peers = {a: b, b: a}
        try:
            while True:
                ready, _, _ = select.select(list(peers), [], [], 30)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return


@pytest.fixture
def database():
    """A fresh schema in the test PostgreSQL database; its URL, through a proxy."""
    schema = f"xmppd_outage_{secrets.token_hex(4)}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(POSTGRES_URL)
    [port] = free_ports(1)
    proxy = Proxy(port, (url.host or "127.0.0.1", url.port or 5432))
    proxy.restore()
    proxied = url.set(host="127.0.0.1", port=port, query={"options": f"-csearch_path={schema}"})
    yield proxied.render_as_string(hide_password=False), proxy
    proxy.cut()
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


async def roster_set(client, contact):
    """Add ``contact`` to the roster (raises IqError on an error answer): a
    write, which needs the database whatever is kept in memory."""
    iq = client.xmpp.Iq()
    iq["type"] = "set"
    iq["roster"]["items"] = {contact: {"name": contact}}
    return await iq.send(timeout=10)


def test_outage_and_recovery(tmp_path, database, run):
    url, proxy = database
    deployment = prepare(tmp_path, storage_url=url)
    deployment.process.start()
    try:
        async def body(clients):
            alice = await clients.login("alice")
            await roster_set(alice, "carol@example.test")

            proxy.cut()
            with pytest.raises(IqError) as error:
                await roster_set(alice, "dave@example.test")
            assert error.value.condition == "internal-server-error"
            with pytest.raises(LoginFailed):
                await clients.login("bob")
            assert "temporary-auth-failure" in clients.all[-1].failed_auth

            proxy.restore()
            bob = await clients.login("bob")
            await roster_set(bob, "carol@example.test")
            await roster_set(alice, "dave@example.test")

        run(deployment, body, timeout=60)
    finally:
        deployment.process.check_clean_exit()
