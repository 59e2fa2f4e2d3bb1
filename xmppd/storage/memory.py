"""Hosted domains whose data is kept in memory only: anonymous hosts
(XEP-0175 §3), whose accounts and all they store last as long as their
sessions and never reach the operator's database.

:class:`MemoryRouted` stands where the server's
:class:`~xmppd.storage.deferred.AsyncStore` does (``open(kind, name)``):
a call for one of its ``hosts``, or for a service domain of one of them
(``owner``), goes to a second database, SQLite in memory at the same
schema (the same migrations); every other call goes to the real store.
The domain of a call is its ``domain`` argument; for the
publish-subscribe stores the domain of the ``service`` (``user@domain``,
or a service domain such as ``pubsub.example.com``), for an upload its
account's, for a batch (``append_many``) each entry's: the batch is
split, and the answers merged in its order.  A call that names no domain
(``offline.total``, ``archive.last_id``, ``uploads.get``,
``accounts.list()``...) asks both databases and combines their answers.

The database in memory runs its calls at once, in the reactor thread: it
waits for no disk, and one thread is one database (SQLAlchemy gives an
SQLite database in memory one connection per thread, each its own).
"""

import inspect
import operator

from .deferred import AsyncStore, immediate_runner
from .kinds import methods
from .sql import SQLStore

# Parameter -> the domain of its value: how a call names its domain.
_DOMAIN_OF = {
    "domain": lambda domain: domain,
    "service": lambda service: service.rpartition("@")[2],
    "upload": lambda upload: upload.domain,
}
# The batch parameter of ``append_many`` -> the domain of one of its entries.
_ENTRY_DOMAIN = {
    "messages": lambda message: message[1],  # (username, domain, stanza)
    "entries": lambda record: record.domain,  # ArchiveRecord
}
# How the answers of the two databases to a call naming no domain combine,
# by method: (real, memory) -> answer.
_COMBINED = {
    "list": lambda real, memory: sorted(real + memory),  # accounts.list()
    "total": operator.add,  # offline.total
    "last_id": lambda real, memory: max((i for i in (real, memory) if i is not None),
                                        key=int, default=None),
    "delete_until": operator.add,  # archive.delete_until, every user
    "get": lambda real, memory: memory if real is None else real,  # uploads.get
    "mark_stored": operator.or_,
    "existing": operator.or_,
    "delete": operator.add,  # uploads.delete
}


class MemoryRouted:
    """``real`` (an :class:`AsyncStore`), but the data of ``hosts``, and
    of their services (``owner(domain)``: the hosted domain a domain is or
    belongs to, None for another), in ``database``, an SQLite database in
    memory, whose calls run at once in the calling thread (``memory``)."""

    def __init__(self, real, hosts, owner):
        self.real = real
        self.database = SQLStore("sqlite://")  # blocking methods: to look at what it holds
        self.database.migrate()
        self.memory = AsyncStore(self.database, immediate_runner)
        self.hosts = frozenset(hosts)
        self._owner = owner
        self._routes = {}  # domain -> whether its data is in memory

    def in_memory(self, domain) -> bool:
        """Whether the data of ``domain`` (hosted or a service's) is in memory."""
        routed = self._routes.get(domain)
        if routed is None:
            owner = self._owner(domain)
            routed = owner in self.hosts
            if owner is not None:  # a domain may become a service later
                self._routes[domain] = routed
        return routed

    def open(self, kind, name=None):
        """The store of ``kind`` (scoped to ``name``), each call routed."""
        return RoutedView(kind, self.real.open(kind, name), self.memory.open(kind, name),
                          self.in_memory)


class RoutedView:
    """A typed store whose calls go to ``real`` or ``memory`` by their domain."""

    def __init__(self, kind, real, memory, in_memory):
        self.kind = kind
        for name, declared in methods(kind).items():
            setattr(self, name, _routed(name, declared, getattr(real, name),
                                        getattr(memory, name), in_memory))


def _routed(name, declared, real, memory, in_memory):
    """``real`` or ``memory``, method ``name`` of the interface (``declared``),
    as the domain of each call chooses."""
    parameters = list(inspect.signature(declared).parameters.values())[1:]  # not self
    for index, parameter in enumerate(parameters):
        if parameter.name in _ENTRY_DOMAIN:
            return _split(real, memory, in_memory, _ENTRY_DOMAIN[parameter.name])
        if parameter.name in _DOMAIN_OF:
            return _by_domain(name, parameter, index, real, memory, in_memory)
    return _both(name, real, memory)


def _by_domain(name, parameter, index, real, memory, in_memory):
    """A call routed by the domain of its argument ``parameter`` (at
    ``index`` unless keyword-only); one whose argument is None (every
    domain: ``accounts.list()``) asks both databases."""
    key, domain_of = parameter.name, _DOMAIN_OF[parameter.name]
    if parameter.kind is parameter.KEYWORD_ONLY:
        index = None
    everywhere = _both(name, real, memory) if parameter.default is None else None

    def call(*args, **kw):
        value = args[index] if index is not None and index < len(args) else kw.get(key)
        if value is None and everywhere is not None:
            return everywhere(*args, **kw)
        return (memory if in_memory(domain_of(value)) else real)(*args, **kw)

    return call


def _both(name, real, memory):
    """``name`` asked of both databases, their answers combined."""
    try:
        combine = _COMBINED[name]
    except KeyError:
        raise ValueError(f"no domain routes {name}, and its answers do not combine") from None

    def call(*args, **kw):
        return memory(*args, **kw).addCallback(
            lambda from_memory: real(*args, **kw).addCallback(combine, from_memory))

    return call


def _split(real, memory, in_memory, domain_of):
    """A batch call split between the two databases, its answers (one
    per entry) merged back in the batch's order."""

    def call(batch, *args, **kw):
        flags = [in_memory(domain_of(entry)) for entry in batch]
        if not any(flags):
            return real(batch, *args, **kw)
        if all(flags):
            return memory(batch, *args, **kw)
        kept = [entry for entry, flag in zip(batch, flags) if flag]
        others = [entry for entry, flag in zip(batch, flags) if not flag]

        def merge(from_real, from_memory):
            from_real, from_memory = iter(from_real), iter(from_memory)
            return [next(from_memory if flag else from_real) for flag in flags]

        return memory(kept, *args, **kw).addCallback(
            lambda from_memory: real(others, *args, **kw).addCallback(merge, from_memory))

    return call
