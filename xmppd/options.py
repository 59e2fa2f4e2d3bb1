"""Checked TOML values, and the config sections feature modules own.

A feature module owns the section of the config file named after it
(``[ping]`` for ``xmppd/modules/ping.py``) by declaring its keys, with
their defaults and checks, at module level, as Prosody modules declare
theirs with ``module:get_option_number``::

    OPTIONS = Options(
        idle_timeout=Option(300.0, non_negative_number),
        timeout=Option(60.0, positive_number),
    )

:func:`xmppd.config.parse` finds section NAME's declaration in
``xmppd.modules.NAME`` (:func:`declared`) without setting any module up:
``xmppctl check`` and the preflight parse the file before anything is
loaded.  No registry to keep in step: the module is the one place that
knows its keys.  Importing a feature module therefore only defines it;
its ``setup(api)`` does the work.  The module reads its options as
``api.options``, from the server's current config, when it uses them, so
a reload applies them.

A check takes a value and its dotted key and returns the value converted,
or raises :class:`Invalid`; the core sections of :mod:`xmppd.config` use
the same ones.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import re
from importlib.util import find_spec
from typing import Any, Callable, TypeVar

MODULE_NAME = re.compile(r"[a-z][a-z0-9_]*")

_T = TypeVar("_T")

Check = Callable[[Any, str], Any]


@dataclasses.dataclass(frozen=True)
class Option:
    """One key of a module's section: its default and its check."""

    default: Any
    check: Check


class Options:
    """The keys of the section a feature module owns (its ``OPTIONS``)."""

    def __init__(self, **keys: Option):
        self._keys = keys
        self._values = dataclasses.make_dataclass("Values", keys, frozen=True)
        self.defaults = self.parse(Table({}, ""))

    def parse(self, table: Table) -> Any:
        """The frozen values of section ``table``: each key's value, or its
        default when the file leaves it out; any other key is refused."""
        return table.done(self._values(**{
            name: table.take(name, option.check, option.default)
            for name, option in self._keys.items()}))


@functools.cache  # asked whenever a module reads options its file leaves out
def declared(module: str) -> Options | None:
    """The ``OPTIONS`` of feature module ``xmppd.modules.MODULE``, or None
    if there is no such module or it declares none."""
    if not MODULE_NAME.fullmatch(module) or find_spec(f"xmppd.modules.{module}") is None:
        return None
    return getattr(importlib.import_module(f"xmppd.modules.{module}"), "OPTIONS", None)


class Invalid(Exception):
    """A problem with one key; :func:`xmppd.config.parse` adds the file name."""

    def __init__(self, key: str, problem: str):
        super().__init__(key, problem)
        self.key = key
        self.problem = problem


class Table:
    """A TOML table under validation: keys are taken one by one, leftovers refused."""

    def __init__(self, value: Any, key: str):
        if not isinstance(value, dict):
            raise expected(key, "a table", value)
        self.key = key
        self._items = dict(value)

    def child(self, name: str) -> str:
        """The dotted key of *name* within this table."""
        part = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else quote(name)
        return f"{self.key}.{part}" if self.key else part

    def names(self) -> list[str]:
        return list(self._items)

    def take(self, name: str, check: Callable[[Any, str], _T], default: Any) -> _T:
        """Remove *name* (or use *default*) and return it as converted by *check*."""
        return check(self._items.pop(name, default), self.child(name))

    def table(self, name: str) -> Table:
        """Remove the sub-table *name* (empty if absent)."""
        return Table(self._items.pop(name, {}), self.child(name))

    def done(self, result: _T, table_hint: str = "") -> _T:
        """Return *result* if every key was taken; *table_hint* explains stray tables."""
        for name, value in self._items.items():
            hint = table_hint if isinstance(value, dict) else ""
            raise Invalid(self.child(name), "unknown key" + hint)
        return result


def quote(text: str) -> str:
    """*text* as a one-line, double-quoted string."""
    return '"' + "".join(
        c if c.isprintable() and c not in '"\\' else json.dumps(c)[1:-1]
        for c in text
    ) + '"'


def _show(value: Any) -> str:
    """A short description of a TOML value for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def expected(key: str, what: str, value: Any) -> Invalid:
    return Invalid(key, f"expected {what}, got {_show(value)}")


# Checks.


def string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise expected(key, "a non-empty string", value)
    return value


def strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):  # a tuple: a dataclass default
        raise expected(key, "an array of strings", value)
    return tuple(string(item, f"{key}[{i}]") for i, item in enumerate(value))


_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def dns_label(value: Any, key: str) -> str:
    """One label of a domain name (a service's subdomain: ``conference``)."""
    if not isinstance(value, str) or not _DNS_LABEL.fullmatch(value):
        raise expected(key, "a DNS label (lower-case letters, digits, hyphens)", value)
    return value


def optional_string(value: Any, key: str) -> str | None:
    return None if value is None else string(value, key)


def choice(options: tuple[str, ...]) -> Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in options:
            raise expected(key, "one of " + ", ".join(map(quote, options)), value)
        return value
    return check


def integer(minimum: int) -> Check:
    def check(value: Any, key: str) -> int:
        if type(value) is not int or value < minimum:
            raise expected(key, f"an integer >= {minimum}", value)
        return value
    return check


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise expected(key, "true or false", value)
    return value


def non_negative_number(value: Any, key: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 <= value < math.inf):
        raise expected(key, "a number >= 0", value)
    return float(value)


def positive_number(value: Any, key: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 < value < math.inf):
        raise expected(key, "a number > 0", value)
    return float(value)
