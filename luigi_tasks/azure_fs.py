"""The lake's listing and reading on Azure Blob Storage: a pyarrow FileSystem over the official client.

pyarrow's own AzureFileSystem lists and reads Azurite and Azure well, but its HTTP connections live in one
pool per process that a forked process shares with its parent: luigi's worker processes (`--workers 2`)
then send requests on each other's connections and get `400 Bad Request` or abort. The official Python
client keeps its connections in the client object, and the lake makes one client per process, so each
worker has its own. Paths are `container/blob name`, as pyarrow's are.

Only what the lake asks of a file system is here: file info, listings, reading (streamed, or by ranges
for Parquet), server-side copy and delete. Writing goes through `azure.upload_file` (staged blocks).
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.fs as pafs
from azure.core import MatchConditions
from azure.core import exceptions as aexc
from azure.storage.blob import BlobServiceClient

from luigi_tasks.azure import describe

COPY_WAIT_SECONDS = 300  # a server-side copy within an account is usually done at once; a large one may take a while


def _split(path: str) -> tuple[str, str]:
    container, _, name = path.strip("/").partition("/")
    return container, name


def _os_error(path: str, exc: aexc.AzureError) -> OSError:
    if isinstance(exc, aexc.ResourceNotFoundError):
        return FileNotFoundError(f"{path}: not found")
    return OSError(f"{path}: {describe(exc)}")


class _RangeReader:
    """A seekable reader of one version (ETag) of a blob, each read one ranged GET: Parquet reads its footer
    and the columns it needs, never the whole blob."""

    def __init__(self, blob, size: int, etag: str) -> None:
        self.blob, self.length, self.etag, self.position, self.closed = blob, size, etag, 0, False

    def read(self, size: int = -1) -> bytes:
        end = self.length if size is None or size < 0 else min(self.length, self.position + size)
        if end <= self.position:
            return b""
        try:
            data = self.blob.download_blob(offset=self.position, length=end - self.position, etag=self.etag,
                                           match_condition=MatchConditions.IfNotModified).readall()  # fmt: skip
        except aexc.AzureError as exc:
            raise _os_error(self.blob.blob_name, exc) from None
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: offset, 1: self.position + offset, 2: self.length + offset}[whence]
        return self.position

    def tell(self) -> int:
        return self.position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class _StreamReader:
    """The blob read front to back, in the client's chunks (one GET each): memory stays one chunk."""

    def __init__(self, downloader) -> None:
        self.downloader, self.closed = downloader, False

    def read(self, size: int = -1) -> bytes:
        return self.downloader.read(size if size is not None and size >= 0 else -1)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class BlobFileSystemHandler(pafs.FileSystemHandler):
    def __init__(self, service: BlobServiceClient) -> None:
        self.service = service

    def get_type_name(self) -> str:
        return "azure-blob"

    def normalize_path(self, path: str) -> str:
        return path

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def _info(self, path: str) -> pafs.FileInfo:
        container, name = _split(path)
        try:
            if not name:
                exists = self.service.get_container_client(container).exists()
                return pafs.FileInfo(path, pafs.FileType.Directory if exists else pafs.FileType.NotFound)
            props = self.service.get_blob_client(container, name).get_blob_properties()
            return pafs.FileInfo(path, pafs.FileType.File, size=props.size, mtime=props.last_modified)
        except aexc.ResourceNotFoundError:
            pass
        except aexc.AzureError as exc:
            raise _os_error(path, exc) from None
        folder = self.service.get_container_client(container).list_blobs(name_starts_with=name.rstrip("/") + "/")
        try:
            found = next(iter(folder.by_page()), [])
            return pafs.FileInfo(path, pafs.FileType.Directory if list(found) else pafs.FileType.NotFound)
        except aexc.ResourceNotFoundError:
            return pafs.FileInfo(path, pafs.FileType.NotFound)
        except aexc.AzureError as exc:
            raise _os_error(path, exc) from None

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [self._info(path) for path in paths]

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        """Every blob below the folder (one listing, paged by the client): files only, the way the lake asks."""
        container, name = _split(selector.base_dir)
        prefix = name.rstrip("/") + "/" if name else ""
        try:
            listed = self.service.get_container_client(container).list_blobs(name_starts_with=prefix)
            infos = [
                pafs.FileInfo(f"{container}/{blob.name}", pafs.FileType.File, size=blob.size, mtime=blob.last_modified)
                for blob in listed
                if selector.recursive or "/" not in blob.name[len(prefix) :]
            ]
        except aexc.ResourceNotFoundError:
            infos = []
            if not selector.allow_not_found:
                raise FileNotFoundError(f"{selector.base_dir}: container {container} not found") from None
        except aexc.AzureError as exc:
            raise _os_error(selector.base_dir, exc) from None
        if not infos and not selector.allow_not_found and self._info(selector.base_dir).type != pafs.FileType.Directory:
            raise FileNotFoundError(f"{selector.base_dir}: not found")
        return infos

    def open_input_file(self, path: str) -> pa.NativeFile:
        blob = self.service.get_blob_client(*_split(path))
        try:
            props = blob.get_blob_properties()
        except aexc.AzureError as exc:
            raise _os_error(path, exc) from None
        return pa.PythonFile(_RangeReader(blob, props.size, props.etag), mode="r")

    def open_input_stream(self, path: str) -> pa.NativeFile:
        try:
            downloader = self.service.get_blob_client(*_split(path)).download_blob()
        except aexc.AzureError as exc:
            raise _os_error(path, exc) from None
        return pa.PythonFile(_StreamReader(downloader), mode="r")

    def copy_file(self, src: str, dest: str) -> None:
        """A server-side copy within the account, waited for."""
        source = self.service.get_blob_client(*_split(src))
        target = self.service.get_blob_client(*_split(dest))
        try:
            target.start_copy_from_url(source.url)
            deadline = time.monotonic() + COPY_WAIT_SECONDS
            while (status := target.get_blob_properties().copy.status) == "pending":
                if time.monotonic() > deadline:
                    target.abort_copy(target.get_blob_properties().copy.id)
                    raise OSError(f"copying {src} to {dest}: not done after {COPY_WAIT_SECONDS} s")
                time.sleep(0.5)
        except aexc.AzureError as exc:
            raise _os_error(src, exc) from None
        if status != "success":
            raise OSError(f"copying {src} to {dest}: the copy ended {status}")

    def delete_file(self, path: str) -> None:
        try:
            self.service.get_blob_client(*_split(path)).delete_blob()
        except aexc.AzureError as exc:
            raise _os_error(path, exc) from None

    def _unsupported(self, *args, **kwargs):
        raise NotImplementedError("the lake writes to Azure with azure.upload_file, never through the file system")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = move = _unsupported
    open_output_stream = open_append_stream = _unsupported


def filesystem(service: BlobServiceClient) -> pafs.PyFileSystem:
    return pafs.PyFileSystem(BlobFileSystemHandler(service))
