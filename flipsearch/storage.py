"""Where results and reference models live: a local path, NFS, or an object-store URI.

Everything that writes under an output directory goes through `Storage`, which speaks
pyarrow's filesystems (`LocalFileSystem`, `S3FileSystem`, `GcsFileSystem`, fsspec ones), so
a sweep on a multi-node cluster never relies on a worker's local disk. Writes are atomic:
readers see a whole file or none.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

from .errors import UsageError


@dataclass(frozen=True)
class Storage:
    """A directory on a local path, NFS or an object store (see the module docstring); `open(uri)` makes one."""
    uri: str
    fs: pafs.FileSystem
    root: str

    @classmethod
    def open(cls, uri: str | os.PathLike) -> "Storage":
        uri = os.fspath(uri)
        try:
            if "://" in uri:
                fs, root = pafs.FileSystem.from_uri(uri)
            else:  # absolute, so Ray workers (whose working directory is elsewhere) see the same place
                fs, root = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
                uri = root
        except (pafs.ArrowInvalid if hasattr(pafs, "ArrowInvalid") else ValueError, ValueError, OSError) as e:
            raise UsageError(f"cannot open storage {uri!r}: {str(e).splitlines()[0]}") from None
        return cls(uri, fs, root.rstrip("/") or "/")

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        for p in parts:
            if p.startswith("/") or ".." in p.split("/"):
                raise UsageError(f"refusing path component {p!r}: names must not be absolute or contain '..'")
        return posixpath.join(self.root, *parts)

    def sub(self, *parts: str) -> "Storage":
        return Storage(self.child_uri(*parts), self.fs, self.path(*parts))

    def child_uri(self, *parts: str) -> str:
        """The URI of a path under this one. Parts go before a query string, so options such
        as `s3://bucket/out?endpoint_override=host:9000&scheme=http` (MinIO, a test server)
        carry over to every file under the output."""
        self.path(*parts)  # same checks on the names
        base, sep, query = self.uri.partition("?")
        return base.rstrip("/") + "/" + "/".join(parts) + sep + query

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write atomically: to a unique temporary name, then rename over the target. On
        object stores a single PUT is already all-or-nothing, so it writes in place."""
        target = self.path(*parts)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        if not self.is_local:
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def list(self, *parts: str, suffix: str = "") -> list[str]:
        """Names (not paths) of files directly under a directory, sorted; [] if absent."""
        base = self.path(*parts)
        info = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in info
                      if i.type == pafs.FileType.File and i.path.endswith(suffix) and ".tmp-" not in i.path)

    def move(self, src: str, dst: str) -> None:
        """Rename the file `src` to `dst` (names under this directory), replacing `dst`."""
        if self.is_local:
            os.replace(self.path(src), self.path(dst))
        else:
            self.fs.move(self.path(src), self.path(dst))

    def delete(self, *parts: str) -> None:
        try:
            self.fs.delete_file(self.path(*parts))
        except FileNotFoundError:
            pass
