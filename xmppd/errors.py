"""Errors shared by the server's parts."""


class StartupError(Exception):
    """The server cannot start; the message is one line saying what and where
    (the config file and key), printed as ``xmppd: MESSAGE``."""
