"""Make wokkel importable on current Twisted.

wokkel (the XMPP protocol library for Twisted) is used for XEP-0004 data
forms (:mod:`wokkel.data_form`).  Its last release still imports two names
that Twisted has since removed; everything else it uses is still there:

- ``twisted.python.compat._PY3`` (removed with Python 2 support): set to
  True;
- ``twisted.python.constants`` (moved out of Twisted into the
  ``constantly`` package, a dependency of Twisted, with the same API):
  registered as an alias of ``constantly``.

Import this module before any wokkel module, then import wokkel's modules
as usual (``from xmppd.wokkel_compat import data_form`` does both).
"""

import sys

import constantly
import twisted.python
import twisted.python.compat

if not hasattr(twisted.python.compat, "_PY3"):
    twisted.python.compat._PY3 = True
if "twisted.python.constants" not in sys.modules:
    sys.modules["twisted.python.constants"] = constantly
    twisted.python.constants = constantly

from wokkel import data_form  # noqa: E402  (only importable after the patches above)

__all__ = ["data_form"]
