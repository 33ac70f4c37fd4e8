"""The Azure identity every client uses, and errors that say which identity and role to fix.

`DefaultAzureCredential` tries, in order: environment (service principal), workload identity,
managed identity, Azure CLI, PowerShell, azd; interactive browser login is excluded because
the pipeline runs unattended. Tests reach the CLI step through a stub `az`
(pipeline_tests/fakes/az_cli.py).
"""

from __future__ import annotations

from functools import lru_cache

from azure.core.credentials import TokenCredential
from azure.identity import DefaultAzureCredential

# Token audiences ("scopes") of the services the pipeline calls.
ARM_SCOPE = "https://management.azure.com/.default"
LOG_ANALYTICS_SCOPE = "https://api.loganalytics.io/.default"
SYNAPSE_SCOPE = "https://dev.azuresynapse.net/.default"
STORAGE_SCOPE = "https://storage.azure.com/.default"


class AzureAccessError(RuntimeError):
    """A call to Azure failed for a reason the operator fixes (identity, role, name)."""


@lru_cache(maxsize=1)
def azure_credential() -> TokenCredential:
    """One credential per process, so tokens are cached across calls."""
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def forget_credential() -> None:
    """Drop the cached credential (tests switch identities between cases)."""
    azure_credential.cache_clear()
