"""The S3 destination: the boto3 adapter over the pure rules of ``tasks.storage.s3_rules`` (URIs, encryption,
headers, metadata, redaction).

Objects are created only if absent (``If-None-Match: *`` on PutObject and CompleteMultipartUpload, honoured by AWS
S3 since August 2024); on a conflict the file goes under ``conflict_key(key, n)``, never over the existing object.
Presigned links are SigV4 and live at most 7 days. Error messages and our logs never carry credentials or link
signatures; boto3 and botocore log at DEBUG only (their DEBUG output does contain signatures: keep it off in
production).
"""

from __future__ import annotations

import base64
import itertools
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from bulletin.clock import Clock, utc_now
from bulletin.errors import BulletinError, ConfigError, StorageError, TransientError
from bulletin.models import is_bucket_name
from bulletin.settings import Settings
from tasks.storage.base import (
    MAX_LINK_SECONDS,
    StoredObject,
    check_key,
    clamp_expiry,
    conflict_key,
    sha256_file,
    uri_of,
)
from tasks.storage.s3_clients import S3Client, make_s3_client, shared_s3
from tasks.storage.s3_fast import Failed, FastPut, KeyTaken, shared_fast_put
from tasks.storage.s3_rules import (
    check_content_type,
    check_metadata,
    content_disposition,
    format_s3_uri,
    join_key,
    parse_s3_uri,
    redact_url,
    refuse_line_breaks,
    sse_params,
)

__all__ = ["PresignedLink", "S3Client", "S3Destination", "classify_error", "make_s3_client", "presign_download"]

logger = logging.getLogger(__name__)

MAX_EXPIRY_SECONDS = MAX_LINK_SECONDS  # the SigV4 limit for presigned URLs
MIN_PART_SIZE = 5 * 1024 * 1024  # S3 refuses smaller parts, except the last one
MAX_PUT_BYTES = 5 * 1024**3  # the largest single PutObject, and the largest part
MAX_PARTS = 10_000
_MAX_CONFLICTS = 100
#: A single PutObject body up to this size is sent from memory, read once.
IN_MEMORY_BYTES = 8 * 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_THROTTLING_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}
)
_TRANSIENT_CODES = _THROTTLING_CODES | {"RequestTimeout", "InternalError", "ServiceUnavailable"}
_ACCESS_CODES = frozenset(
    {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
_REGION_CODES = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"})


@dataclass(frozen=True)
class PresignedLink:
    """A time-limited GET link. Its repr hides the signature, so logging the object leaks nothing."""

    url: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"PresignedLink(url={redact_url(self.url)!r}, expires_at={self.expires_at.isoformat()!r})"


# --- errors -------------------------------------------------------------------------------------------------------


def classify_error(exc: ClientError | BotoCoreError, *, uri: str) -> BulletinError:
    """Map a boto error to Bulletin's tree: retryable, configuration, or storage. Never includes credentials."""
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return TransientError(f"cannot reach S3 for {uri} ({type(exc).__name__}); a retry may help")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return ConfigError(
            f"no usable AWS credentials for {uri} ({type(exc).__name__}): configure the AWS credential chain "
            "or BULLETIN_S3_AWS_CREDENTIALS_BLOCK"
        )
    if not isinstance(exc, ClientError):
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return StorageError(f"S3 request for {uri} failed: {type(exc).__name__}: {redact_url(first_line)[:200]}")
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    operation = exc.operation_name
    if code in _TRANSIENT_CODES or status == 429 or status >= 500:
        return TransientError(f"S3 {operation} for {uri} failed with {code} (HTTP {status}); a retry may help")
    if code == "NoSuchBucket":
        return ConfigError(
            f"S3 bucket of {uri} does not exist: check BULLETIN_S3_BUCKET (and BULLETIN_S3_ENDPOINT_URL)"
        )
    if code in _ACCESS_CODES or status == 403:
        # AWS's own message names the caller's ARN: leave it out and say what to check instead.
        return ConfigError(
            f"S3 refused {operation} for {uri} ({code}): check the credentials and that they allow s3:PutObject, "
            "s3:GetObject and s3:AbortMultipartUpload (plus kms:GenerateDataKey and kms:Decrypt with SSE-KMS)"
        )
    if code in _REGION_CODES or code.startswith("KMS."):
        return ConfigError(f"S3 {operation} for {uri} failed with {code}: check BULLETIN_S3_REGION and the KMS key")
    message = redact_url(str(error.get("Message", "")))[:200]
    return StorageError(f"S3 {operation} for {uri} failed with {code} (HTTP {status}): {message}".rstrip(": "))


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# --- adapter ------------------------------------------------------------------------------------------------------


class S3Destination:
    """Stores files in one S3 bucket under an optional key prefix, creating each object only if absent."""

    name = "s3"

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        prefix: str = "",
        sse: str = "AES256",
        kms_key_id: str | None = None,
        multipart_threshold: int = 8 * 1024 * 1024,
        part_size: int = 8 * 1024 * 1024,
        clock: Clock = utc_now,
        fast: FastPut | None = None,
    ) -> None:
        if not is_bucket_name(bucket):
            raise ConfigError(f"invalid S3 bucket name {bucket!r}")
        if not MIN_PART_SIZE <= part_size <= MAX_PUT_BYTES or not 0 <= multipart_threshold <= MAX_PUT_BYTES:
            raise ConfigError("S3 parts must be 5 MiB to 5 GiB, and the multipart threshold at most 5 GiB")
        if prefix.strip("/"):
            check_key(prefix.strip("/"))
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.encryption = sse_params(sse, kms_key_id)
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.clock = clock
        self.fast = fast

    @classmethod
    def from_settings(
        cls, settings: Settings, client: S3Client | None = None, *, clock: Clock = utc_now
    ) -> S3Destination:
        """The destination ``settings`` describe, over ``client`` or else the process's shared client for them (and,
        where ``tasks.storage.s3_fast`` allows it, the process's obstore store for single PutObjects)."""
        if not settings.s3_bucket:
            raise ConfigError("BULLETIN_S3_BUCKET is not set")
        session = None
        if client is None:
            session, client = shared_s3(settings)
        destination = cls(
            client,
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            sse=settings.s3_sse,
            kms_key_id=settings.s3_kms_key_id,
            clock=clock,
        )
        if session is not None:
            region = client.meta.region_name
            destination.fast = shared_fast_put(
                settings, session, destination.bucket, destination.encryption, region=region
            )
        return destination

    def link(self, stored_or_uri: StoredObject | str, filename: str | None, expires_seconds: int) -> PresignedLink:
        """``presign_download``. ``filename`` is not signed in: each object has its Content-Disposition from put."""
        del filename
        return presign_download(self.client, uri_of(stored_or_uri), expires_seconds=expires_seconds, clock=self.clock)

    def delete(self, uri: str) -> None:
        """DeleteObject of an ``s3://bucket/key`` URI (checked first); S3 answers success for a missing key too."""
        bucket, key = parse_s3_uri(uri)
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise classify_error(exc, uri=uri) from exc

    def holds(self, uri: str) -> bool:
        try:
            parse_s3_uri(uri)
        except StorageError:
            return False
        return True

    def uri_for(self, key: str) -> str:
        return format_s3_uri(self.bucket, join_key(self.prefix, key))

    def find(self, uri: str, sha256: str) -> bool:
        """HeadObject: the object exists and its ``sha256`` metadata (written by ``put``) is ``sha256``."""
        bucket, key = parse_s3_uri(uri)
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise classify_error(exc, uri=uri) from exc
        except BotoCoreError as exc:
            raise classify_error(exc, uri=uri) from exc
        return bool(head.get("Metadata", {}).get("sha256") == sha256)

    def put(
        self, key: str, source: Path, *, content_type: str, metadata: dict[str, str], sha256: str | None = None
    ) -> StoredObject:
        """Upload ``source`` under ``<prefix>/<key>`` (or ``...-<n>.ext`` if taken); ``StoredObject.key`` is the full
        object key in the bucket. Unsafe keys, headers or metadata are refused before any request.

        ``sha256``: the file's hex digest when the caller has it (the render computed it), so it is not computed
        again. It becomes the ``sha256`` metadata and, on a single PutObject, ``x-amz-checksum-sha256``: S3 refuses a
        body that does not hash to it (BadDigest), so the metadata is the stored object's digest."""
        full_key = join_key(self.prefix, key)
        check_content_type(content_type)
        check_metadata(metadata)
        size = source.stat().st_size
        multipart = size > self.multipart_threshold
        digest = _file_digest(source, sha256, verify=multipart)
        fields = {"ContentType": content_type, "Metadata": check_metadata({**metadata, "sha256": digest})}
        body = None if multipart else _single_body(source, size)
        for attempt in range(_MAX_CONFLICTS + 1):
            candidate = full_key if attempt == 0 else conflict_key(full_key, attempt)
            uri = format_s3_uri(self.bucket, candidate)
            args = {
                "Bucket": self.bucket,
                "Key": candidate,
                "ContentDisposition": content_disposition(candidate.rpartition("/")[2]),
                **fields,
                **self.encryption,
            }
            try:
                if body is None:
                    self._put_multipart(args, source, size)
                else:
                    self._put_single(args, body, digest)
            except KeyTaken:
                logger.info("%s already exists; trying the next free key", uri)
                continue
            except ClientError as exc:
                if _error_code(exc) in _CONFLICT_CODES:
                    logger.info("%s already exists; trying the next free key", uri)
                    continue
                raise classify_error(exc, uri=uri) from exc
            except BotoCoreError as exc:
                raise classify_error(exc, uri=uri) from exc
            logger.info("stored %s (%d bytes)", uri, size)
            return StoredObject(uri=uri, key=candidate, bytes=size, sha256=digest)
        raise StorageError(f"object key {full_key!r} and {_MAX_CONFLICTS} alternatives already exist")

    def _put_single(self, args: dict[str, Any], body: bytes | Path, digest: str) -> None:
        # Our SHA-256 as the checksum: botocore then computes no CRC32 of its own (over HTTPS it would also wrap the
        # body in aws-chunked encoding with a trailer), and S3 checks the body against the render's digest.
        checksum = base64.b64encode(bytes.fromhex(digest)).decode("ascii")
        checks = {"IfNoneMatch": "*", "ChecksumAlgorithm": "SHA256", "ChecksumSHA256": checksum}
        if isinstance(body, bytes):
            outcome = "declined" if self.fast is None else self.fast.put(args, body, digest)  # KeyTaken: a conflict
            if outcome == "stored":
                return
            uri = format_s3_uri(self.bucket, args["Key"])
            try:
                self.client.put_object(**args, Body=body, **checks)
            except ClientError as exc:
                # obstore's failed attempt may have stored the object and lost only the answer: the key then holds
                # this very file, by its digest, stored once. Anything else under the key is a conflict.
                if not (isinstance(outcome, Failed) and _error_code(exc) in _CONFLICT_CODES and self.find(uri, digest)):
                    raise
                logger.warning("PutObject of %s failed through obstore (%s) but stored the file", uri, outcome.error)
                return
            if isinstance(outcome, Failed):  # boto3 stored it: obstore alone failed, worth a look
                logger.warning("PutObject of %s failed through obstore (%s); boto3 stored it", uri, outcome.error)
            return
        with body.open("rb") as handle:
            self.client.put_object(**args, Body=handle, **checks)

    def _put_multipart(self, args: dict[str, Any], source: Path, size: int) -> None:
        # Parts grow past part_size only for files that would otherwise need more than 10,000 of them.
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        where = {"Bucket": args["Bucket"], "Key": args["Key"]}
        # CRC32 per part, declared up front, as s3transfer does: S3 then verifies every part and the whole.
        upload_id = self.client.create_multipart_upload(**args, ChecksumAlgorithm="CRC32")["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            with source.open("rb") as handle:
                for number in itertools.count(1):
                    chunk = handle.read(part_size)
                    if not chunk:
                        break
                    answer = self.client.upload_part(
                        **where, UploadId=upload_id, PartNumber=number, Body=chunk, ChecksumAlgorithm="CRC32"
                    )
                    part = {"PartNumber": number, "ETag": answer["ETag"]}
                    if "ChecksumCRC32" in answer:
                        part["ChecksumCRC32"] = answer["ChecksumCRC32"]
                    parts.append(part)
            self.client.complete_multipart_upload(
                **where, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
            )
        except BaseException:
            # Whatever went wrong (a conflict included), uploaded parts must not linger and cost money.
            self._abort(where, upload_id)
            raise

    def _abort(self, where: dict[str, Any], upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(**where, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "could not abort the multipart upload of %s (%s); an AbortIncompleteMultipartUpload lifecycle "
                "rule will remove it",
                format_s3_uri(where["Bucket"], where["Key"]),
                type(exc).__name__,
            )


def _file_digest(source: Path, sha256: str | None, *, verify: bool) -> str:
    """``sha256`` if given (checked against the file when ``verify``: no server checks a multipart upload against
    it), else the file's SHA-256."""
    if sha256 is None:
        return sha256_file(source)
    if not _SHA256_HEX.fullmatch(sha256):
        raise StorageError("the SHA-256 given for an upload is not 64 lowercase hex digits")
    if verify and sha256_file(source) != sha256:
        raise StorageError(f"{source.name} does not match the SHA-256 it was rendered with: it changed since")
    return sha256


def _single_body(source: Path, size: int) -> bytes | Path:
    """A small file's bytes, read once (botocore reads and seeks a file object again for each hash and the send);
    a larger one stays on disk and is streamed."""
    return source.read_bytes() if size <= IN_MEMORY_BYTES else source


def presign_download(
    client: S3Client,
    uri: str,
    *,
    expires_seconds: int,
    content_disposition: str | None = None,
    clock: Clock = utc_now,
) -> PresignedLink:
    """A SigV4 presigned GET link to ``uri``, valid for ``expires_seconds`` clamped to 1 s .. 7 days.

    With temporary credentials (STS, instance roles) the link dies with them, possibly sooner than ``expires_at``.
    """
    bucket, key = parse_s3_uri(uri)
    seconds = clamp_expiry(expires_seconds)
    params = {"Bucket": bucket, "Key": key}
    if content_disposition is not None:
        refuse_line_breaks(content_disposition, "content disposition")
        params["ResponseContentDisposition"] = content_disposition
    issued = clock()
    try:
        url = str(client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds, HttpMethod="GET"))
    except (ClientError, BotoCoreError) as exc:
        raise classify_error(exc, uri=uri) from exc
    if "X-Amz-Algorithm=AWS4-HMAC-SHA256" not in url:
        raise ConfigError("the S3 client does not sign with SigV4: build it with make_s3_client")
    return PresignedLink(url=url, expires_at=issued + timedelta(seconds=seconds))
