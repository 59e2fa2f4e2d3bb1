"""The module API of the web: resources under a path, external base URLs."""

import pytest
from twisted.web.resource import Resource

from tests.harness import make_server
from xmppd.core.api import ModuleAPI


def api(tmp_path, http=""):
    server = make_server(tmp_path, modules=(), extra=http)
    return server, ModuleAPI(server, "upload")


def test_a_module_serves_a_resource_under_a_path(tmp_path):
    server, module = api(tmp_path)
    resource = Resource()
    module.http_resource("upload", resource, max_request_size=lambda: 10**8)
    assert server.http_resources[("upload",)][0] is resource
    with pytest.raises(ValueError, match="already served"):
        module.http_resource("/upload/", Resource())


@pytest.mark.parametrize("path", ["xmpp-websocket", ".well-known/x", "http-bind", "", "a//b",
                                  "../etc"])
def test_reserved_or_bad_paths_are_refused(tmp_path, path):
    _, module = api(tmp_path)
    with pytest.raises(ValueError):
        module.http_resource(path, Resource())


@pytest.mark.parametrize("http,url", [
    ("", None),
    ('[http]\nlisten = ["ssl:5281"]', "https://example.com:5281/"),
    ('[http]\nlisten = ["ssl:port=443:interface=::"]', "https://example.com/"),
    ('[http]\nlisten = ["tcp:5280:interface=127.0.0.1"]', "https://example.com/"),
    ('[http]\nlisten = ["ssl:5281"]\nexternal_url = "https://{host}/xmpp"',
     "https://example.com/xmpp/"),
    ('[http]\nexternal_url = "https://web.example.net/{host}/"', "https://web.example.net/example.com/"),
])
def test_the_base_url_of_a_host(tmp_path, http, url):
    _, module = api(tmp_path, http)
    assert module.http_base_url("example.com") == url
