"""Where the export container and the lake live: local folders or Azure storage, one way in.

Turns a URL into an fsspec filesystem with the right credentials, so the Python side of the
pipeline (export listings, manifests, the watchlist CSV, plots, reference files) reads and writes
ADLS Gen2 / Blob Storage the same way it reads a local folder. Spark on Synapse (or a cluster
with hadoop-azure) reads `abfss://` itself; local Spark cannot, so a remote export day is staged
into a local folder first (`local_copies`).

URL forms:
- a local path or `file://` URL;
- `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH` (what Synapse and hadoop-azure read;
  `abfs://` and `…blob.core.windows.net` hosts work too);
- `az://CONTAINER/PATH`: the account comes from the connection string or
  `AZURE_STORAGE_ACCOUNT_NAME`.

Credentials, first match wins:
1. `AZURE_STORAGE_CONNECTION_STRING` (Azurite in tests; an account key or SAS in the string):
   its `BlobEndpoint` is where every request goes, whatever host the URL names; the URL's
   account must be the string's `AccountName`.
2. `AZURE_STORAGE_SAS_TOKEN` with the URL's account.
3. `DefaultAzureCredential` (managed identity, workload identity, service principal, Azure CLI;
   never an interactive browser login) with the URL's account.

The ADLS Gen2 `dfs` endpoint is never called: every request goes to the Blob API of the account
(`ACCOUNT.blob.core.windows.net`), which hierarchical-namespace accounts serve too and Azurite
emulates (its `dfs` endpoint does not work).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import fsspec
from azure.core.utils import parse_connection_string
from fsspec import AbstractFileSystem

REMOTE_SCHEMES = ("abfss", "abfs", "az")
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
SAS_TOKEN_ENV = "AZURE_STORAGE_SAS_TOKEN"
ACCOUNT_NAME_ENV = "AZURE_STORAGE_ACCOUNT_NAME"
# `ACCOUNT.dfs.core.windows.net` (ADLS Gen2) or `ACCOUNT.blob.core.windows.net`, any Azure cloud.
_ACCOUNT_HOST = re.compile(r"^(?P<account>[a-z0-9]{3,24})\.(dfs|blob)\.(?P<suffix>.+)$")
# Blobs downloaded at once when staging a remote export day for local Spark.
STAGING_CONCURRENCY = 16


class StorageError(RuntimeError):
    """The storage a URL names cannot be used as configured; the message says what to fix."""


class StorageContainerMissingError(StorageError, FileNotFoundError):
    """The container a URL names does not exist in its storage account."""


@dataclass(frozen=True)
class RemoteLocation:
    """A parsed Azure storage URL."""

    scheme: str
    container: str
    account: str | None  # None: `az://` without an account in the URL
    host: str | None  # the URL's host when it names one, e.g. ACCOUNT.dfs.core.windows.net
    path: str  # inside the container, no leading or trailing slash

    @property
    def fs_path(self) -> str:
        """The path as adlfs spells it: `container/path`."""
        return f"{self.container}/{self.path}".rstrip("/")

    def url(self, path: str) -> str:
        """A URL in this location's own form for `path` inside the same container."""
        path = path.strip("/")
        authority = f"{self.container}@{self.host}" if self.host else self.container
        return f"{self.scheme}://{authority}/{path}"


def is_remote(url: str) -> bool:
    """True for Azure storage URLs (abfss://, abfs://, az://), False for local paths."""
    return url.split("://", 1)[0].lower() in REMOTE_SCHEMES if "://" in url else False


def parse(url: str) -> RemoteLocation:
    """Split an Azure storage URL into container, account and path (see the module docstring)."""
    if not is_remote(url):
        raise ValueError(f"{url}: not an abfss://, abfs:// or az:// URL")
    scheme, rest = url.split("://", 1)
    authority, _, path = rest.partition("/")
    account: str | None = None
    host: str | None = None
    if "@" in authority:
        container, host = authority.split("@", 1)
        match = _ACCOUNT_HOST.match(host.lower())
        if not match:
            raise StorageError(
                f"{url}: the host must be ACCOUNT.dfs.core.windows.net (or "
                "ACCOUNT.blob.core.windows.net), as in "
                "abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH"
            )
        account = match.group("account")
    else:
        container = authority
    if not container:
        raise StorageError(f"{url}: names no container")
    return RemoteLocation(scheme.lower(), container, account, host, path.strip("/"))


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for a local path or Azure storage URL, and the path within it.

    Raises StorageContainerMissingError naming the container and account when the container
    does not exist, before anything is read or written.
    """
    if not is_remote(url):
        fs, path = fsspec.core.url_to_fs(url)
        return fs, path
    location = parse(url)
    connection_string = os.environ.get(CONNECTION_STRING_ENV) or None
    account = _account(url, location, connection_string)
    fs = _blob_filesystem(account, connection_string, os.environ.get(SAS_TOKEN_ENV) or None)
    _require_container(fs, account, location.container, connection_string)
    return fs, location.fs_path


def url_in(root_url: str, fs_path: str) -> str:
    """The URL of `fs_path` (a path `filesystem(root_url)` returned or listed), in the form of
    `root_url`: local paths stay paths; remote paths keep the root's scheme and account host, so
    Spark on a cluster and the quarantine's `source_file` get a URL that names the account."""
    if not is_remote(root_url):
        return fs_path
    location = parse(root_url)
    container, _, inside = fs_path.strip("/").partition("/")
    if container != location.container:
        raise ValueError(f"{fs_path} is not in container {location.container}")
    return location.url(inside)


def _account(url: str, location: RemoteLocation, connection_string: str | None) -> str:
    if connection_string:
        named = _connection_string_account(connection_string)
        if location.account and named and location.account != named:
            raise StorageError(
                f"{url} names storage account '{location.account}' but "
                f"{CONNECTION_STRING_ENV} is for account '{named}': point the URL at that "
                f"account or unset {CONNECTION_STRING_ENV} to use DefaultAzureCredential"
            )
        return location.account or named or "(from connection string)"
    account = location.account or os.environ.get(ACCOUNT_NAME_ENV)
    if not account:
        raise StorageError(
            f"{url}: no storage account. Use abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/…, "
            f"or set {ACCOUNT_NAME_ENV} (or {CONNECTION_STRING_ENV}) for az:// URLs"
        )
    return account


def _connection_string_account(connection_string: str) -> str | None:
    try:
        fields = parse_connection_string(connection_string)
    except ValueError as error:
        # The message names the variable only: the string itself holds a key.
        raise StorageError(f"{CONNECTION_STRING_ENV} is not a valid connection string") from error
    return fields.get("accountname")


@lru_cache(maxsize=8)
def _blob_filesystem(
    account: str, connection_string: str | None, sas_token: str | None
) -> AbstractFileSystem:
    """One adlfs filesystem per account and credential, kept for the process (tokens and HTTP
    connections are reused across calls)."""
    from adlfs import AzureBlobFileSystem

    if connection_string:
        return AzureBlobFileSystem(connection_string=connection_string)
    if sas_token:
        return AzureBlobFileSystem(account_name=account, sas_token=sas_token)
    return AzureBlobFileSystem(account_name=account, credential=_async_credential())


@lru_cache(maxsize=1)
def _async_credential() -> Any:
    """DefaultAzureCredential for adlfs's asyncio clients (pipeline/azure/credentials.py holds the
    synchronous one). The asyncio chain has no interactive browser step, so it never waits for a
    human."""
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


_containers_seen: set[tuple[str, str]] = set()


def _require_container(
    fs: AbstractFileSystem, account: str, container: str, connection_string: str | None
) -> None:
    """Fail with a message an operator can act on when the container does not exist (adlfs
    would list nothing or create it on write)."""
    if (account, container) in _containers_seen:
        return
    if not fs.exists(container):
        where = "the connection string" if connection_string else "DefaultAzureCredential"
        raise StorageContainerMissingError(
            f"storage container '{container}' does not exist in storage account '{account}' "
            f"(reached through {where}): create it (docs/deploy-azure.md) or fix the URL"
        )
    _containers_seen.add((account, container))


def forget_filesystems() -> None:
    """Drop cached filesystems, credentials and container checks (tests switch accounts)."""
    _blob_filesystem.cache_clear()
    _async_credential.cache_clear()
    _containers_seen.clear()


@contextmanager
def local_copies(urls: Sequence[str], prefix: str = "beacon-staging-") -> Iterator[list[str]]:
    """Local paths for `urls`, in the same order: remote blobs are downloaded (in parallel) into a
    temporary folder that is removed afterwards; local paths are passed through.

    A copy keeps its blob path under `{tmp}/{account}/{container}/`, so the export's folder names
    (y=/m=/d=/h=, the workspace id) that the readers parse stay intact.
    """
    remote = [u for u in urls if is_remote(u)]
    if not remote:
        yield list(urls)
        return
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        copies = {u: _stage_path(folder, u) for u in remote}
        by_fs: dict[int, tuple[AbstractFileSystem, list[str], list[str]]] = {}
        for url in remote:
            fs, path = filesystem(url)
            _, sources, targets = by_fs.setdefault(id(fs), (fs, [], []))
            sources.append(path)
            targets.append(copies[url])
        for fs, sources, targets in by_fs.values():
            for target in targets:
                os.makedirs(os.path.dirname(target), exist_ok=True)
            # adlfs downloads a list of blobs concurrently (batch_size at a time).
            fs.get(sources, targets, batch_size=STAGING_CONCURRENCY)
        yield [copies.get(u, u) for u in urls]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def staging_prefixes(urls: Sequence[str], copies: Sequence[str]) -> dict[str, str]:
    """Local folder prefix → remote URL prefix of each copy made by `local_copies`, so readers
    can name the remote blob a record came from."""
    prefixes: dict[str, str] = {}
    for url, copy in zip(urls, copies, strict=True):
        if copy == url:
            continue
        blob_path = parse(url).path.lstrip("/")
        if copy.endswith(blob_path) and url.endswith(blob_path):
            prefixes[copy[: len(copy) - len(blob_path)]] = url[: len(url) - len(blob_path)]
    return prefixes


def _stage_path(folder: str, url: str) -> str:
    location = parse(url)
    account = location.account or "account"
    return os.path.join(folder, account, location.container, *location.path.split("/"))
