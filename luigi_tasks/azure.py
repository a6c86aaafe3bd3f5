"""Azure Blob Storage: the account and its credentials, and uploads with the official client, verified.

Credentials come only from Azure's standard chain, in this order: AZURE_STORAGE_CONNECTION_STRING (which also
names the account and, for an emulator such as Azurite, the blob endpoint); an account key
(AZURE_STORAGE_KEY) or a SAS token (AZURE_STORAGE_SAS_TOKEN) with AZURE_STORAGE_ACCOUNT_NAME; otherwise
azure-identity's DefaultAzureCredential (environment, workload or managed identity, the az CLI's login).
None of them is ever read from the config file or shown in a message.

A file is uploaded as blocks staged under ids unique to this upload, each checked by the service against
its MD5 on arrival, and committed in one request only when all are there, with the whole file's MD5 as the
blob's Content-MD5 (and its crc32c in the metadata). Until the commit the blob is unchanged; blocks of an
upload that never committed are invisible, and Azure drops them when the blob is next committed (or after
a week). A blob is the lake's file when its size and Content-MD5 are the ones the manifest recorded.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from azure.core import exceptions as aexc
from azure.storage.blob import BlobServiceClient, ContentSettings

from luigi_tasks.download import redact_urls
from luigi_tasks.errors import PipelineError
from luigi_tasks.files import Fingerprints, fingerprints_of

BLOCK_BYTES = 8 << 20  # a retry resends one block, not the file
CONTENT_TYPE = "application/vnd.apache.parquet"


Progress = Callable[[int, "int | None"], None]


@dataclasses.dataclass(frozen=True)
class Account:
    """A storage account, where its blob service is, and the credential found for it (never shown)."""

    name: str
    endpoint: str  # the blob service's URL, e.g. https://NAME.blob.core.windows.net
    source: str  # where the credential came from, to say so: a variable's name or DefaultAzureCredential
    key: str = dataclasses.field(default="", repr=False)
    sas: str = dataclasses.field(default="", repr=False)


class AccountError(PipelineError):
    """No account name or no usable setting of Azure's standard variables."""


def _connection_string(text: str) -> dict[str, str]:
    fields = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


def account(name: str = "") -> Account:
    """The account (`name`, or the one Azure's variables name) with the credential of the standard chain."""
    fields = _connection_string(os.environ.get("AZURE_STORAGE_CONNECTION_STRING", ""))
    if fields and (not name or fields.get("accountname") == name):
        name = fields.get("accountname", name)
        endpoint = fields.get("blobendpoint") or (
            f"{fields.get('defaultendpointsprotocol', 'https')}://{name}.blob."
            f"{fields.get('endpointsuffix', 'core.windows.net')}"
        )
        if not name or not (fields.get("accountkey") or fields.get("sharedaccesssignature")):
            raise AccountError(
                "AZURE_STORAGE_CONNECTION_STRING lacks AccountName and AccountKey or SharedAccessSignature "
                "(its value is not shown)"
            )
        return Account(name, endpoint.rstrip("/"), "AZURE_STORAGE_CONNECTION_STRING",
                       key=fields.get("accountkey", ""), sas=fields.get("sharedaccesssignature", ""))  # fmt: skip
    name = name or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "") or os.environ.get("AZURE_STORAGE_ACCOUNT", "")
    if not name:
        raise AccountError(
            "no Azure storage account: set AZURE_STORAGE_ACCOUNT_NAME (or AZURE_STORAGE_CONNECTION_STRING), "
            "[azure] account, or name it in the root as abfss://container@ACCOUNT.dfs.core.windows.net/prefix"
        )
    endpoint = f"https://{name}.blob.core.windows.net"
    for variable in ("AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY"):
        if os.environ.get(variable):
            return Account(name, endpoint, variable, key=os.environ[variable])
    if os.environ.get("AZURE_STORAGE_SAS_TOKEN"):
        return Account(name, endpoint, "AZURE_STORAGE_SAS_TOKEN", sas=os.environ["AZURE_STORAGE_SAS_TOKEN"].lstrip("?"))
    return Account(name, endpoint, "DefaultAzureCredential")


def client(found: Account) -> BlobServiceClient:
    """The official client of the account's blob service."""
    if found.key:
        credential: object = {"account_name": found.name, "account_key": found.key}
    elif found.sas:
        credential = found.sas
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return BlobServiceClient(found.endpoint, credential=credential)


def describe(exc: Exception) -> str:
    """The client's error in one line: its code and status, URLs without their query (a SAS is a secret)."""
    if isinstance(exc, aexc.HttpResponseError) and exc.status_code:
        code = getattr(exc.error_code, "value", exc.error_code) or exc.reason or "error"
        return f"{code} (HTTP {exc.status_code})"
    return redact_urls(" ".join(str(exc).split()) or type(exc).__name__)


def check_container(service: BlobServiceClient, container: str) -> None:
    try:
        exists = service.get_container_client(container).exists()
    except aexc.AzureError as exc:
        raise PipelineError(f"Azure container {container}: {describe(exc)}") from None
    if not exists:
        raise PipelineError(
            f"Azure container {container} does not exist (or this account cannot see it): create it first"
        )


@dataclasses.dataclass(frozen=True)
class Stored:
    """What a listing says of a blob: its size, Content-MD5 and the crc32c recorded when it was uploaded here."""

    size: int
    md5: str
    crc32c: str

    def holds(self, file: Fingerprints) -> bool:
        """Whether the blob has these bytes: by MD5, or by crc32c for a manifest older than its MD5."""
        if file.md5:
            return (self.size, self.md5) == (file.size, file.md5)
        return (self.size, self.crc32c) == (file.size, file.crc32c)


def _stored(props) -> Stored:
    md5 = props.content_settings.content_md5
    return Stored(
        props.size, base64.b64encode(bytes(md5)).decode() if md5 else "", (props.metadata or {}).get("crc32c", "")
    )


def stored_fingerprints(service: BlobServiceClient, container: str, prefix: str) -> dict[str, Stored]:
    """Every blob under a prefix with its size and checksums: one listing (paged by the client)."""
    check_container(service, container)
    try:
        listed = service.get_container_client(container).list_blobs(name_starts_with=prefix, include=["metadata"])
        return {props.name: _stored(props) for props in listed}
    except aexc.AzureError as exc:
        raise PipelineError(f"listing {container}/{prefix}: {describe(exc)}") from None


def stored_blob(service: BlobServiceClient, container: str, name: str) -> Stored | None:
    try:
        return _stored(service.get_blob_client(container, name).get_blob_properties())
    except aexc.ResourceNotFoundError:
        return None
    except aexc.AzureError as exc:
        raise PipelineError(f"reading {container}/{name}: {describe(exc)}") from None


def _block_ids() -> Callable[[int], str]:
    """Ids of one upload's blocks: unique to it, all of one length (Azure requires that within a blob)."""
    upload = os.urandom(8).hex()
    return lambda number: base64.b64encode(f"{upload}-{number:08d}".encode()).decode()


def upload_file(service: BlobServiceClient, path: Path, container: str, name: str, *,
                progress: Progress | None = None) -> bool:  # fmt: skip
    """Put `path` at container/name unless it already holds the same bytes; returns True if it uploaded."""
    local = fingerprints_of(path)
    if (existing := stored_blob(service, container, name)) is not None and existing.holds(local):
        return False
    check_container(service, container)
    blob = service.get_blob_client(container, name)
    block_id, blocks, sent = _block_ids(), [], 0
    if progress:
        progress(0, local.size)
    try:
        with open(path, "rb") as source:
            while chunk := source.read(BLOCK_BYTES):
                blocks.append(block_id(len(blocks)))
                # validate_content: the service checks the block's MD5 and refuses it if the bytes changed on the way.
                blob.stage_block(blocks[-1], chunk, validate_content=True)
                sent += len(chunk)
                if progress:
                    progress(sent, local.size)
        settings = ContentSettings(content_type=CONTENT_TYPE, content_md5=bytearray(base64.b64decode(local.md5)))
        blob.commit_block_list(blocks, content_settings=settings, metadata={"crc32c": local.crc32c})
    except aexc.AzureError as exc:
        raise PipelineError(f"uploading {path} to {container}/{name}: {describe(exc)}") from None
    stored = stored_blob(service, container, name)
    if stored is None or not stored.holds(local):
        raise PipelineError(
            f"{container}/{name} holds {stored.size if stored else 0:,} bytes with MD5 {stored.md5 if stored else '-'}"
            f" after the upload; {path} has {local.size:,} bytes with MD5 {local.md5}"
        )
    return True
