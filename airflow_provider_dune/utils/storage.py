"""Files the provider writes (query results) and reads (uploads): local files, or objects in object storage.

A local path (``/data/out.csv``, ``out.csv``, ``file:///data/out.csv``) is opened with :mod:`pathlib`. An
object-storage URL (``s3://bucket/key.csv``, ``gs://conn_id@bucket/key.csv``: the optional user part names the
Airflow connection, as for ``ObjectStoragePath``) is opened through the fsspec filesystem Airflow registers for
its scheme, with that connection's credentials.

Neither goes through Airflow's ``ObjectStoragePath``: Airflow 3.0 and 2.11.0 accept universal-pathlib 0.3, and
their ``ObjectStoragePath`` then refuses every URL ("ObjectStoragePath(...) detected protocol s3 which is
incompatible with ObjectStoragePath"), local files included. The filesystem registry it sits on works with any
universal-pathlib.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol
from urllib.request import url2pathname

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.version_compat import get_fs

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


#: What to install for the filesystems of the common object stores.
STORAGE_PACKAGES = {
    "s3": "s3fs (pip install 'apache-airflow-providers-amazon[s3fs]')",
    "gs": "gcsfs (pip install apache-airflow-providers-google)",
    "gcs": "gcsfs (pip install apache-airflow-providers-google)",
    "abfs": "adlfs (pip install apache-airflow-providers-microsoft-azure)",
    "az": "adlfs (pip install apache-airflow-providers-microsoft-azure)",
}


class StorageFile(Protocol):
    """A file to read or write as UTF-8 text (CSV-safe newlines)."""

    def exists(self) -> bool: ...

    def make_parent(self) -> None: ...

    def open_text(self, mode: str) -> IO[str]: ...

    def sibling(self, name: str) -> StorageFile:
        """The file called ``name`` in the same directory (bucket prefix)."""
        ...

    def move_to(self, target: StorageFile) -> None:
        """Put this file in ``target``'s place, replacing it."""
        ...

    def remove(self) -> None:
        """Delete the file; nothing happens when there is none."""
        ...


@dataclass(frozen=True)
class LocalFile:
    path: Path

    def exists(self) -> bool:
        return self.path.exists()

    def make_parent(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def open_text(self, mode: str) -> IO[str]:
        return self.path.open(mode, encoding="utf-8", newline="")

    def sibling(self, name: str) -> LocalFile:
        return LocalFile(self.path.with_name(name))

    def move_to(self, target: StorageFile) -> None:
        """Atomic (``os.replace`` within one directory): readers see the old file or the new one, never a mix."""
        if not isinstance(target, LocalFile):
            raise TypeError("a local file can only replace a local file")
        os.replace(self.path, target.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class ObjectStorageFile:
    """``path`` on ``fs``, the filesystem Airflow gives for the URL's scheme and connection."""

    fs: AbstractFileSystem
    path: str

    def exists(self) -> bool:
        return bool(self.fs.exists(self.path))

    def make_parent(self) -> None:
        parent = self.fs._parent(self.path)
        if parent and not self.fs.exists(parent):
            self.fs.makedirs(parent, exist_ok=True)

    def open_text(self, mode: str) -> IO[str]:
        handle: IO[str] = self.fs.open(self.path, mode, encoding="utf-8", newline="")
        return handle

    def sibling(self, name: str) -> ObjectStorageFile:
        parent, slash, _ = self.path.rpartition("/")
        return ObjectStorageFile(self.fs, f"{parent}{slash}{name}")

    def move_to(self, target: StorageFile) -> None:
        """The filesystem's move: on object storage a copy then a delete, so not atomic, but the target only
        ever receives a complete file (a reader sees the old object or the new one)."""
        if not isinstance(target, ObjectStorageFile) or target.fs is not self.fs:
            raise TypeError("an object can only replace an object on the same filesystem")
        self.fs.mv(self.path, target.path)

    def remove(self) -> None:
        if self.fs.exists(self.path):
            self.fs.rm(self.path)


def local_path(location: str) -> Path | None:
    """The local file ``location`` names (a plain path or a ``file://`` URL), else ``None``."""
    if "://" not in location:
        return Path(os.path.abspath(location))
    scheme, _, rest = location.partition("://")
    if scheme.lower() != "file":
        return None
    host, slash, tail = rest.partition("/")
    if host not in ("", "localhost"):
        raise DuneConfigurationError(f"{location!r} names a file on another host: use a local path or object storage")
    return Path(os.path.abspath(url2pathname(slash + tail)))


def storage_file(location: str) -> StorageFile:
    """The file at ``location``: a local path, a ``file://`` URL or an object-storage URL."""
    local = local_path(location)
    if local is not None:
        return LocalFile(local)
    scheme, _, rest = location.partition("://")
    netloc, slash, key = rest.partition("/")
    conn_id, _, bucket = netloc.rpartition("@")
    path = f"{bucket}{slash}{key}"  # "bucket/key"; "/dir/file" for a URL without a host (local:///dir/file)
    if not scheme or not path.strip("/"):
        raise DuneConfigurationError(f"{location!r} is not an object-storage URL such as s3://bucket/key.csv")
    try:
        fs = get_fs(scheme.lower(), conn_id or None)
    except ImportError as err:  # the provider is there, its filesystem package is not
        package = STORAGE_PACKAGES.get(scheme.lower(), f"the fsspec filesystem package for {scheme}://")
        raise DuneConfigurationError(
            f"cannot open {location!r}: {scheme}:// needs a package that is not installed ({err}); install "
            f"{package} where the task runs"
        ) from None
    except ValueError as err:  # "No filesystem registered for scheme ..."
        raise DuneConfigurationError(
            f"cannot open {location!r}: {err} (install the Airflow provider for that storage, e.g. "
            "apache-airflow-providers-amazon for s3://)"
        ) from None
    return ObjectStorageFile(fs, path)
