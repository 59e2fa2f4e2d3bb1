"""Where modules keep files of their own, and the secrets they sign with.

A module's file (upload's directory, FAST's secret) is where its option
says, relative to the configuration file's directory, else beside the
SQLite database, else beside the configuration file.  A secret file is
made at random the first time, created 0600 (never readable by others),
and read afterwards.
"""

import os
import secrets

from sqlalchemy import make_url

SECRET_BYTES = 32


def data_path(config, chosen, name):
    """``chosen`` (an option's value, None for the default) or ``name``
    in the default place for ``config``."""
    base = os.path.dirname(config.path)
    if chosen is not None:
        return os.path.join(base, os.path.expanduser(chosen))
    url = make_url(config.storage.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        base = os.path.dirname(url.database)
    return os.path.join(base, name)


def load_secret(path):
    """The secret in ``path``, made the first time; ValueError if the file
    holds fewer than :data:`SECRET_BYTES` bytes."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as file:
            secret = file.read()
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"{path} holds fewer than {SECRET_BYTES} bytes") from None
        return secret
    secret = secrets.token_bytes(SECRET_BYTES)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    return secret
