"""A file's single PutObject through obstore (Rust's ``object_store``, the S3 client of Arrow, Polars and DataFusion),
where it is proven to send what boto3 sends. boto3 keeps everything else: multipart uploads, HeadObject, deletes,
presigned links, and every put this path declines or fails.

Why: a boto3 PutObject of a 75 KB file costs about 1.4 ms of a core in Python (building, signing, parsing) and holds
the GIL the delivery lanes share; obstore's costs about 0.6 ms, the body's SHA-256 check included, and signs and
sends outside it. A 1,000-recipient run ends about 1 s sooner (docs/benchmarks.md, "A file's PutObject through
obstore").

What it sends is what ``S3Destination`` asks boto3 for: the same key (``object_store`` refuses a key it would change,
and we then use boto3), ``If-None-Match: *`` (``mode="create"``), the content type, the download header, the user
metadata, server-side encryption (AES256, or aws:kms with its key), and an ``x-amz-checksum-sha256`` S3 checks the
body against. object_store computes that checksum from the body, so the body is first checked here against the
render's digest: a file that changed since it was rendered goes to boto3, which sends the render's digest and is
refused (BadDigest), as before.

When it is used (``fast_put_for``), all of:
- ``BULLETIN_S3_FAST_PUT`` is on (the default) and ``BULLETIN_S3_ENDPOINT_URL`` is set: an S3-compatible service
  addressed path-style, as our boto3 client addresses it. On AWS itself (no endpoint) boto3 puts: object_store's
  virtual-hosted addressing is not proven against AWS here;
- no proxy is configured (boto3 takes proxies from the environment; object_store would not use them alike) and, on
  an https endpoint, no CA bundle (``AWS_CA_BUNDLE`` or the profile's ``ca_bundle``, which boto3 trusts alone).
  Without one, boto3 trusts certifi's roots and object_store the system's: both Mozilla's list on most systems;
  a private CA installed system-wide is trusted by object_store only;
- the credentials come from the same boto3 session as the client's, so both sign with the same keys, refreshed the
  same way (obstore's ``Boto3CredentialProvider``);
- the process is the one that first used obstore's runtime, or none did yet: its Tokio threads do not survive a fork.

Errors: an existing key is a conflict (the next free key, as with boto3). Any other failure of this path (refused,
unreachable, timed out, credentials) sends the same put through boto3, whose errors ``classify_error`` maps to our
tree. Only when boto3 then succeeds is obstore's failure worth a warning (by its class only: object_store's messages
are long and may carry URLs): when both fail, the endpoint is at fault and boto3's error says so, once. This path
makes one attempt (boto3 then makes its own three), with boto3's connect and read timeouts. If that one attempt
stored the object and only its answer was lost, boto3 finds the key taken: ``S3Destination`` then checks the
object's digest, and an object with ours is this very file, stored once, not a conflict.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from bulletin.settings import Settings

if TYPE_CHECKING:
    from obstore.store import S3Config

logger = logging.getLogger(__name__)

#: Metadata names object_store would take as an object's headers, not as user metadata (compared in lower case).
_HEADER_NAMES = frozenset(
    name.replace("-", x)
    for name in (
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-type",
        "cache-control",
        "storage-class",
    )
    for x in ("-", "")
)
#: How long obstore keeps credentials before it asks the boto3 session again, which refreshes them 10-15 minutes
#: before they expire: so obstore never signs with expired ones.
CREDENTIALS_TTL = timedelta(minutes=5)

_runtime_pid: int | None = None  # the process that built the first store (obstore's Tokio runtime is per process)


@dataclass(frozen=True)
class Failed:
    """``FastPut.put`` sent the body and failed; ``error`` is the exception's class name (its message is not kept:
    object_store's are long and may carry URLs)."""

    error: str


#: What ``FastPut.put`` did: stored the body; declined it (nothing sent); or sent it and failed.
Outcome = Literal["stored", "declined"] | Failed


class KeyTaken(Exception):
    """The key already holds an object: S3 refused the put (``If-None-Match: *``)."""


class FastPut:
    """PutObject of whole bodies into one bucket, through one obstore ``S3Store`` (one connection pool)."""

    def __init__(self, store: Any, bucket: str) -> None:
        self.store = store
        self.bucket = bucket

    def put(self, args: dict[str, Any], body: bytes, digest: str) -> Outcome:
        """Create ``args["Key"]`` with ``body``. Unless "stored", the caller puts through boto3. Raises ``KeyTaken``
        when the key holds an object."""
        global _runtime_pid
        if not _accepts(args, self.bucket) or hashlib.sha256(body).hexdigest() != digest:
            return "declined"
        if _runtime_pid not in (None, os.getpid()):
            return "declined"
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        attributes = {
            "Content-Type": args["ContentType"],
            "Content-Disposition": args["ContentDisposition"],
            **args["Metadata"],
        }
        _runtime_pid = os.getpid()
        try:
            obstore.put(self.store, args["Key"], body, attributes=attributes, mode="create", use_multipart=False)
        except (AlreadyExistsError, PreconditionError) as exc:
            raise KeyTaken(args["Key"]) from exc
        except Exception as exc:  # noqa: BLE001 - any failure here is retried through boto3, which reports it
            return Failed(type(exc).__name__)
        return "stored"


def _accepts(args: dict[str, Any], bucket: str) -> bool:
    """Only what this path sends as boto3 would: our bucket, no metadata name object_store takes as a header."""
    return args["Bucket"] == bucket and not any(name.lower() in _HEADER_NAMES for name in args["Metadata"])


def declines(settings: Settings, session: Any) -> str | None:
    """Why the fast path is off for ``settings`` and the boto3 ``session`` (None when it is on)."""
    if not settings.s3_fast_put:
        return "BULLETIN_S3_FAST_PUT is off"
    if not settings.s3_endpoint_url:
        return "no BULLETIN_S3_ENDPOINT_URL (AWS itself)"
    scheme = urlsplit(settings.s3_endpoint_url).scheme
    if scheme not in ("http", "https"):
        return "the endpoint is not an http(s) URL"
    if _proxied(settings.s3_endpoint_url):
        return "a proxy is configured"
    botocore_session = getattr(session, "_session", session)  # boto3.Session wraps botocore's, which reads config
    if scheme == "https" and botocore_session.get_config_variable("ca_bundle"):
        return "a CA bundle is configured for an https endpoint"
    return None


def _proxied(url: str) -> bool:
    """Whether boto3 would send requests to ``url`` through a proxy: one is set in the environment (botocore reads
    it with urllib's ``getproxies``) and ``NO_PROXY`` does not exempt the host."""
    proxies = {scheme: proxy for scheme, proxy in urllib.request.getproxies().items() if scheme != "no"}
    return bool(proxies) and not urllib.request.proxy_bypass(urlsplit(url).hostname or "")


def make_fast_put(
    settings: Settings, session: Any, bucket: str, encryption: dict[str, str], *, region: str | None = None
) -> FastPut | None:
    """An obstore store over ``session``'s credentials for ``bucket``, or None where the fast path is off.
    ``region``: the one boto3's client signs for (``client.meta.region_name``); by default the settings' or the
    session's."""
    why = declines(settings, session)
    if why is not None:
        quiet = not settings.s3_fast_put or not settings.s3_endpoint_url  # the expected cases
        logger.log(logging.DEBUG if quiet else logging.INFO, "S3 PutObjects go through boto3: %s", why)
        return None
    try:
        store = _s3_store(settings, session, bucket, encryption, region)
    except Exception as exc:  # noqa: BLE001 - no credentials, or a configuration obstore refuses: boto3 puts
        logger.info("S3 PutObjects go through boto3: obstore cannot be set up (%s)", type(exc).__name__)
        return None
    global _runtime_pid
    _runtime_pid = _runtime_pid or os.getpid()  # a child forked from here on must not use this process's runtime
    return FastPut(store, bucket)


def _s3_store(settings: Settings, session: Any, bucket: str, encryption: dict[str, str], region: str | None) -> Any:
    from obstore.auth.boto3 import Boto3CredentialProvider
    from obstore.store import S3Store

    endpoint = str(settings.s3_endpoint_url)
    kms: S3Config = {"sse_kms_key_id": encryption["SSEKMSKeyId"]} if "SSEKMSKeyId" in encryption else {}
    return S3Store(
        bucket,
        endpoint=endpoint,
        region=region or settings.s3_region or session.region_name or "us-east-1",
        virtual_hosted_style_request=False,
        checksum_algorithm="sha256",
        server_side_encryption=encryption["ServerSideEncryption"],
        credential_provider=Boto3CredentialProvider(session, ttl=CREDENTIALS_TTL),  # ValueError without credentials
        client_options={
            "allow_http": endpoint.startswith("http://"),
            "connect_timeout": timedelta(seconds=10),
            "timeout": timedelta(seconds=60),
        },
        retry_config={"max_retries": 0},
        config=kms,
    )


_Key = tuple[int, bool, str | None, str | None, str | None, str, tuple[tuple[str, str], ...]]
_puts: dict[_Key, FastPut | None] = {}
_lock = threading.Lock()


def shared_fast_put(
    settings: Settings, session: Any, bucket: str, encryption: dict[str, str], *, region: str | None = None
) -> FastPut | None:
    """This process's fast path for the bucket and encryption under ``settings`` (built on first use), or None."""
    key = (
        os.getpid(),
        settings.s3_fast_put,
        settings.s3_endpoint_url,
        settings.s3_region,
        settings.s3_aws_credentials_block,
        bucket,
        tuple(sorted(encryption.items())),
    )
    with _lock:
        if key not in _puts:
            _puts[key] = make_fast_put(settings, session, bucket, encryption, region=region)
        return _puts[key]


def forget_fast_puts() -> None:
    """Drop every shared store; the next use builds new ones."""
    with _lock:
        _puts.clear()
