"""The Azure identity every client uses, and errors that say which identity and role to fix.

`DefaultAzureCredential` tries, in order: environment (service principal), workload identity,
managed identity, Azure CLI, PowerShell, azd; interactive browser login is excluded because
the pipeline runs unattended. Tests reach the CLI step through a stub `az`
(pipeline_tests/fakes/az_cli.py).
"""

from __future__ import annotations

import time
from functools import lru_cache

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential

# Token audiences ("scopes") the pipeline asks for itself; the Log Analytics and storage SDK
# clients pick their own.
ARM_SCOPE = "https://management.azure.com/.default"
SYNAPSE_SCOPE = "https://dev.azuresynapse.net/.default"


class AzureAccessError(RuntimeError):
    """A call to Azure failed for a reason the operator fixes (identity, role, name)."""


@lru_cache(maxsize=1)
def azure_credential() -> TokenCredential:
    """One credential per process, so tokens are cached across calls."""
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def forget_credential() -> None:
    """Drop the cached credential (tests switch identities between cases)."""
    azure_credential.cache_clear()


def first_line(error: BaseException) -> str:
    """An error's first line (SDK errors carry long multi-line bodies), or its type name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def usable_token(
    credential: TokenCredential, scope: str, *, unavailable: str, expired: str
) -> AccessToken:
    """A token for `scope` that is good for at least a minute, checked before anything is sent.

    Otherwise `AzureAccessError` with `unavailable` (formatted with `error`, the credential
    chain's first line) or `expired` (formatted with `expired`, the token's UTC expiry).
    """
    try:
        token = credential.get_token(scope)
    except ClientAuthenticationError as error:
        raise AzureAccessError(unavailable.format(error=first_line(error))) from error
    if token.expires_on <= time.time() + 60:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(token.expires_on))
        raise AzureAccessError(expired.format(expired=when))
    return token
