"""wokkel's modules import through xmppd.wokkel_compat on current Twisted."""

import importlib
import sys

import pytest

MODULES = ("data_form", "disco", "pubsub", "muc", "ping")


@pytest.mark.parametrize("name", MODULES)
def test_wokkel_modules_import(name):
    import xmppd.wokkel_compat  # noqa: F401

    module = importlib.import_module(f"wokkel.{name}")
    assert module.__name__ == f"wokkel.{name}"


def test_the_patched_names():
    from xmppd import wokkel_compat
    from wokkel.muc import STATUS_CODE

    assert sys.modules["twisted.python.constants"].Values.__module__.startswith("constantly")
    assert STATUS_CODE.lookupByValue(110).name == "SELF_PRESENCE"
    form = wokkel_compat.data_form.Form("result", formNamespace="urn:example")
    assert form.toElement().uri == "jabber:x:data"
