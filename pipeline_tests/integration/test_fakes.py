"""The shared fakes work with the real SDKs: the credential chain, TLS trust and Azurite."""

import json
import socket
import urllib.parse
from http.server import BaseHTTPRequestHandler

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobServiceClient

from pipeline_tests.fakes.az_cli import token_for
from pipeline_tests.fakes.tls import serve_https


def _credential() -> DefaultAzureCredential:
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def test_default_credential_takes_the_stub_az_token(az_cli):
    token: AccessToken = _credential().get_token("https://management.azure.com/.default")
    assert token.token == token_for("https://management.azure.com")


def test_stub_az_not_logged_in_is_unavailable(az_cli):
    az_cli.set_mode("error")
    with pytest.raises(ClientAuthenticationError, match="az login"):
        _credential().get_token("https://management.azure.com/.default")


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"auth": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_fake_https_is_trusted_through_the_test_ca(az_cli, test_ca):
    with serve_https(test_ca, _Echo) as url:
        answer = requests.get(url, headers={"Authorization": "Bearer x"}, timeout=10)
        assert answer.json() == {"auth": "Bearer x"}
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, verify=requests.certs.where(), timeout=10)


def test_a_client_stalled_in_the_handshake_does_not_block_the_fake(az_cli, test_ca):
    # A run interrupted mid-request can leave a connection open before its TLS handshake; the
    # next request (the run's cancel) must still be answered, not wait out the client timeouts.
    with serve_https(test_ca, _Echo) as url:
        address = urllib.parse.urlsplit(url)
        with socket.create_connection((address.hostname, address.port), timeout=10):
            answer = requests.get(url, headers={"Authorization": "Bearer y"}, timeout=10)
        assert answer.json() == {"auth": "Bearer y"}


def test_azurite_round_trips_a_blob(azurite):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container("roundtrip")
    container.upload_blob("a/b.json", b'{"x": 1}\n')
    assert container.download_blob("a/b.json").readall() == b'{"x": 1}\n'
    assert [b.name for b in container.list_blobs()] == ["a/b.json"]
