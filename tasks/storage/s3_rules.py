"""S3's rules, pure: object URIs, server-side encryption parameters, the download header, user metadata and the
redaction of presigned links in logs. ``tasks.storage.s3`` is the boto3 adapter that applies them."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from bulletin.errors import ConfigError, StorageError
from bulletin.models import is_bucket_name
from tasks.storage.base import check_key

MAX_METADATA_BYTES = 2048  # S3's limit on user metadata, keys plus values
_METADATA_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]*$")
_FALLBACK_SAFE = re.compile(r"[A-Za-z0-9 ._()-]")
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId)=)[^&#\s\"']*"
)


def format_s3_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; the bucket name and every key segment must be safe."""
    rest = uri.removeprefix("s3://")
    bucket, slash, key = rest.partition("/")
    if rest == uri or not slash or not is_bucket_name(bucket):
        raise StorageError(f"not an s3://bucket/key URI: {uri!r}")
    return bucket, check_key(key)


def sse_params(sse: str = "AES256", kms_key_id: str | None = None) -> dict[str, str]:
    """The PutObject / CreateMultipartUpload parameters requesting server-side encryption."""
    if sse == "AES256":
        if kms_key_id:
            raise ConfigError("a KMS key id is set but server-side encryption is AES256: set BULLETIN_S3_SSE=aws:kms")
        return {"ServerSideEncryption": "AES256"}
    if sse == "aws:kms":
        # Without a key id S3 uses the account's AWS-managed key (aws/s3).
        return {"ServerSideEncryption": "aws:kms", **({"SSEKMSKeyId": kms_key_id} if kms_key_id else {})}
    raise ConfigError(f"unsupported server-side encryption {sse!r}: use AES256 or aws:kms")


def refuse_line_breaks(value: str, what: str) -> None:
    # Cc covers CR, LF, NUL, DEL...; Zl/Zp are the Unicode line and paragraph separators.
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        raise StorageError(f"{what} contains a control character or line break: {value!r}")


def check_content_type(content_type: str) -> str:
    """A Content-Type header value: printable ASCII on one line."""
    refuse_line_breaks(content_type, "content type")
    if not content_type or not _PRINTABLE_ASCII.match(content_type):
        raise StorageError(f"invalid content type {content_type!r}")
    return content_type


def content_disposition(filename: str) -> str:
    """An RFC 6266 ``attachment`` header: an ASCII ``filename`` fallback plus ``filename*=UTF-8''...``."""
    if not filename.strip():
        raise StorageError("an attachment file name cannot be empty")
    refuse_line_breaks(filename, "attachment file name")
    fallback = "".join(
        c if _FALLBACK_SAFE.match(c) else "_"
        for c in unicodedata.normalize("NFKD", filename)
        if not unicodedata.combining(c)  # "é" decomposes to "e" + accent: keep the "e"
    )
    # RFC 5987 attr-chars stay as they are; everything else, "'" and "*" included, is percent-encoded UTF-8.
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='!#$&+^`|~')}"


def check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """User metadata S3 stores as headers: lowercase keys, printable ASCII values, at most 2 KB in all."""
    for name, value in metadata.items():
        if not _METADATA_KEY.match(name):
            raise StorageError(f"unsafe object metadata name {name!r}")
        if not isinstance(value, str) or not _PRINTABLE_ASCII.match(value):
            raise StorageError(f"object metadata {name!r} must be printable ASCII text")
    if sum(len(k) + len(v) for k, v in metadata.items()) > MAX_METADATA_BYTES:
        raise StorageError(f"object metadata is larger than {MAX_METADATA_BYTES} bytes")
    return dict(metadata)


def join_key(prefix: str, key: str) -> str:
    """``<prefix>/<key>``, every segment checked; an empty prefix adds nothing."""
    prefix = prefix.strip("/")
    return check_key(f"{check_key(prefix)}/{check_key(key)}" if prefix else key)


def redact_url(url: str) -> str:
    """``url`` with the values of signature, credential and session-token query parameters replaced, for logs."""
    return _SECRET_QUERY.sub(r"\1REDACTED", url)
