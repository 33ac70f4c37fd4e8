"""A stub `az` command so the real DefaultAzureCredential chain works offline.

`AzureCliCredential` (part of `DefaultAzureCredential`) runs
`az account get-access-token --output json --resource R` and reads `accessToken` and
`expires_on`. The stub answers with a token that names the resource it was asked for
(`fake-token-for:<resource>`), so fake servers can check both the header and the audience.
Writing `expired` or `error` into the stub's mode file makes it hand out an already expired
token, or fail the way `az` does when nobody is logged in.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

TOKEN_PREFIX = "fake-token-for:"

_SCRIPT = """#!{python}
import json, sys, time
from pathlib import Path
mode = Path({mode!r}).read_text().strip()
args = sys.argv[1:]
if args[:2] != ["account", "get-access-token"]:
    print("stub az: only 'account get-access-token' is supported", file=sys.stderr)
    sys.exit(2)
resource = args[args.index("--resource") + 1] if "--resource" in args else ""
if "--scope" in args:
    resource = args[args.index("--scope") + 1].removesuffix("/.default")
if mode == "error":
    print("ERROR: Please run 'az login' to setup account.", file=sys.stderr)
    sys.exit(1)
expires = int(time.time()) + (-600 if mode == "expired" else 3600)
print(json.dumps({{
    "accessToken": {prefix!r} + resource.rstrip("/"),
    "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(expires)),
    "expires_on": expires,
    "subscription": "00000000-0000-0000-0000-000000000000",
    "tenant": "00000000-0000-0000-0000-000000000001",
    "tokenType": "Bearer",
}}))
"""


class AzCli:
    """The stub's folder (put it first on PATH) and its mode switch."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.mode_file = folder / "mode"
        self.set_mode("ok")
        script = folder / "az"
        script.write_text(
            _SCRIPT.format(python=sys.executable, mode=str(self.mode_file), prefix=TOKEN_PREFIX)
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def set_mode(self, mode: str) -> None:
        """`ok`, `expired` (token already past its expiry) or `error` (not logged in)."""
        self.mode_file.write_text(mode)

    def env(self) -> dict[str, str]:
        """Environment for a process that should find only this `az` and no other identity."""
        path = f"{self.folder}{os.pathsep}{os.environ.get('PATH', '')}"
        return {"PATH": path}


def token_for(resource: str) -> str:
    """The bearer token the stub hands out for `resource` (what fakes should expect)."""
    return TOKEN_PREFIX + resource.rstrip("/")
