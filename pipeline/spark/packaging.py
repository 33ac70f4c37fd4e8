"""The pipeline's code as a Spark pool runs it: a content-hashed zip plus a tiny entry script.

A Livy batch names a Python `file` and `pyFiles` on storage the pool can read. We zip the
`pipeline` package and `dagster_pipes` (stdlib-only; Synapse runtimes do not ship it), and hash
the zip with the entry script: the hash names the folder they are uploaded to
(`{staging}/_code/{hash}/`), so each version of the code is uploaded once and a running batch is
never changed under it. The zip is byte-for-byte reproducible (sorted entries, fixed timestamps),
so the same code always gets the same hash.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import dagster_pipes

import pipeline

ZIP_NAME = "pipeline.zip"
ENTRY_NAME = "entry.py"
ENTRY_SCRIPT = '''"""Livy batch entry point of the beacon pipeline (pipeline.spark.packaging)."""

import sys

from pipeline.spark.synapse_entry import main

sys.exit(main(sys.argv[1:]))
'''
# Zip entries get this timestamp, so the bytes (and the hash) depend on content only.
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class CodePackage:
    version: str  # first 16 hex digits of the SHA-256 of zip and entry script
    zip_bytes: bytes
    entry_bytes: bytes
    files: tuple[str, ...]  # paths inside the zip


def package_roots() -> tuple[Path, ...]:
    """The package folders that go into the zip: ours and dagster_pipes."""
    return (Path(pipeline.__file__).parent, Path(dagster_pipes.__file__).parent)


def build_package(roots: tuple[Path, ...] | None = None) -> CodePackage:
    """Zip the `.py` files (and `py.typed`) of each root package, named from its parent folder."""
    entries: list[tuple[str, bytes]] = []
    for root in package_roots() if roots is None else roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            if path.suffix != ".py" and path.name != "py.typed":
                continue
            entries.append((path.relative_to(root.parent).as_posix(), path.read_bytes()))
    entries.sort()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    zip_bytes = buffer.getvalue()
    entry_bytes = ENTRY_SCRIPT.encode()
    digest = hashlib.sha256(zip_bytes + b"\0" + entry_bytes).hexdigest()
    return CodePackage(
        version=digest[:16],
        zip_bytes=zip_bytes,
        entry_bytes=entry_bytes,
        files=tuple(name for name, _ in entries),
    )


@lru_cache(maxsize=1)
def current_package() -> CodePackage:
    """This process's code, packaged once (the code cannot change under a running process)."""
    return build_package()
