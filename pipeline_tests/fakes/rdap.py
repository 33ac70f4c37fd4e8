"""A fake RDAP server (RFC 9083 JSON for `GET /ip/{addr}`), served over HTTPS by fakes/tls.py.

It answers from a small table of networks (CIDR → registrant, name, registration date), 404
for addresses in none, and can be told to answer 429 or 500 to exercise the client's handling.
Every request is recorded so tests can assert what was (not) looked up.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler


@dataclass
class RdapState:
    """The fake's memory: its networks, forced error statuses and the requests it saw."""

    networks: dict[str, dict[str, str]] = field(default_factory=dict)  # cidr → facts
    force_status: dict[str, int] = field(default_factory=dict)  # address → status (or "*")
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, cidr: str, name: str, registrant: str, registered: str) -> None:
        self.networks[cidr] = {"name": name, "registrant": registrant, "registered": registered}


def ip_network_object(cidr: str, facts: dict[str, str]) -> dict:
    """An RFC 9083 `ip network` object shaped like ARIN's answers."""
    network = ipaddress.ip_network(cidr)
    return {
        "rdapConformance": ["rdap_level_0", "nro_rdap_profile_0"],
        "objectClassName": "ip network",
        "handle": f"NET-{str(network.network_address).replace('.', '-').replace(':', '-')}-1",
        "startAddress": str(network.network_address),
        "endAddress": str(network.broadcast_address),
        "ipVersion": f"v{network.version}",
        "name": facts["name"],
        "type": "DIRECT ALLOCATION",
        "events": [
            {"eventAction": "last changed", "eventDate": "2024-05-01T12:00:00-04:00"},
            {"eventAction": "registration", "eventDate": f"{facts['registered']}T09:30:00-04:00"},
        ],
        "entities": [
            {
                "objectClassName": "entity",
                "handle": "ABUSE-1",
                "roles": ["abuse"],
                "vcardArray": [
                    "vcard",
                    [["version", {}, "text", "4.0"], ["fn", {}, "text", "Abuse"]],
                ],
            },
            {
                "objectClassName": "entity",
                "handle": "REG-1",
                "roles": ["registrant"],
                "vcardArray": [
                    "vcard",
                    [
                        ["version", {}, "text", "4.0"],
                        ["fn", {}, "text", facts["registrant"]],
                        ["kind", {}, "text", "org"],
                    ],
                ],
            },
        ],
    }


class RdapHandler(BaseHTTPRequestHandler):
    """`GET /ip/{addr}` → 200 ip network, 404 error object, or a forced 429/500."""

    def log_message(self, *_: object) -> None:  # Keep test output quiet.
        pass

    def do_GET(self) -> None:
        state: RdapState = self.server.state  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        with state.lock:
            state.requests.append(path)
        if not path.startswith("/ip/"):
            return self._send(400, {"errorCode": 400, "title": "only /ip/{addr} is served"})
        address = path[len("/ip/") :]
        forced = state.force_status.get(address, state.force_status.get("*"))
        if forced:
            return self._send(forced, {"errorCode": forced, "title": "forced by the test"})
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return self._send(400, {"errorCode": 400, "title": "not an IP address"})
        for cidr, facts in state.networks.items():
            if ip in ipaddress.ip_network(cidr):
                return self._send(200, ip_network_object(cidr, facts))
        return self._send(404, {"errorCode": 404, "title": "Not Found"})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/rdap+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
