"""Where rendered files go: object keys and the destination interface with the local bucket (``base``),
and the remote stores (``s3``, ``sftp``).

This ``__init__`` lists what other packages use. Modules that import Prefect, boto3 or paramiko are
imported from their own module, so importing this package stays cheap.
"""

from __future__ import annotations

from tasks.storage.base import (
    MAX_LINK_SECONDS,
    PREFIX_MAX_BYTES,
    Destination,
    LocalBucket,
    LocalLinks,
    ObjectFinder,
    StoredObject,
    UriLink,
    build_key,
    check_key,
    check_prefix,
    parse_duration,
    sha256_file,
)

__all__ = [
    "MAX_LINK_SECONDS",
    "PREFIX_MAX_BYTES",
    "Destination",
    "LocalBucket",
    "LocalLinks",
    "ObjectFinder",
    "StoredObject",
    "UriLink",
    "build_key",
    "check_key",
    "check_prefix",
    "parse_duration",
    "sha256_file",
]
