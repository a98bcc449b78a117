"""One error tree for Bulletin.

Every error Bulletin raises on purpose derives from ``BulletinError``. The subclasses say whether trying again can
help, so the flow retries only what is transient, the CLI maps each to one exit code, and the API to one status::

    BulletinError                      exit 1
    ├── ConfigError                    exit 2    a setting or a key is missing or wrong
    │   ├── TriggerNotConfiguredError  exit 2    a trigger's secret or public key is not set (HTTP 503)
    │   └── HostKeyError               exit 2    an SSH server's host key is unknown or not the one known: refused
    ├── DefinitionError (ValueError)   exit 2    a report, dataset or trigger file is invalid
    ├── NotFoundError (LookupError)    exit 3    no such report, recipient, dataset or key id
    ├── TokenError                     exit 4    a data token is malformed, expired or not ours
    │   ├── SignatureError             exit 4    a webhook signature or its timestamp does not verify
    │   └── UnauthorizedError          exit 4    an API request without a valid credential (HTTP 401)
    ├── ForbiddenError                 exit 4    a valid API key without the role the request needs (HTTP 403)
    ├── RequestError (ValueError)      exit 2    a malformed request: header, body, URL (HTTP 400)
    │   ├── PayloadTooLargeError       exit 2    a request body over the cap (HTTP 413)
    │   ├── NotAcceptableError         exit 2    an Accept header asking for a format not offered (HTTP 406)
    │   └── UnsafeTargetError          exit 2    a webhook URL the SSRF guard refuses
    ├── QueryError (ValueError)        exit 5    a query names something the dataset does not allow
    │   └── ScopeError                 exit 5    the token grants no scope for the dataset
    ├── StorageError                   exit 6    a key is unsafe, or a file would be overwritten
    │   └── ConflictError              exit 6    a request clashes with what exists (an idempotency key reused)
    │       └── ClaimLostError         exit 6    a ledger claim's lease lapsed and another run took the delivery
    ├── GoneError                      exit 4    a signed link that has expired (HTTP 410)
    └── TransientError                 exit 7    the warehouse or a destination failed; a retry may help
"""

from __future__ import annotations


class BulletinError(Exception):
    """Root of every error Bulletin raises on purpose."""

    exit_code = 1
    #: HTTP status the API answers with.
    status_code = 500
    retryable = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class ConfigError(BulletinError):
    """A setting, key or secret is missing or invalid."""

    exit_code = 2
    status_code = 500


class TriggerNotConfiguredError(ConfigError):
    """An inbound trigger whose secret or public key is not configured: its requests cannot be verified until the
    operator sets it, so they are answered 503 (the sender retries) rather than 500."""

    status_code = 503


class HostKeyError(ConfigError):
    """An SSH server (the SFTP channel's) whose host key is not in the known_hosts file, or differs from the one
    there: refused, never added. Names the host, port and the SHA256 fingerprint the server showed, so an operator
    can compare it with the one its administrator publishes. Not retryable: only a person can decide."""

    def __init__(self, message: str, *, host: str, port: int, fingerprint: str) -> None:
        super().__init__(message, field="sftp_known_hosts_file")
        self.host = host
        self.port = port
        self.fingerprint = fingerprint


class DefinitionError(BulletinError, ValueError):
    """A report, dataset or trigger definition is invalid."""

    exit_code = 2
    status_code = 422


class NotFoundError(BulletinError, LookupError):
    """A named report, recipient, dataset or key does not exist."""

    exit_code = 3
    status_code = 404


class TokenError(BulletinError):
    """A data token failed verification. The message never contains the token."""

    exit_code = 4
    status_code = 401


class SignatureError(TokenError):
    """A webhook signature, or its timestamp, does not verify. The message never contains a secret."""


class UnauthorizedError(TokenError):
    """An API request carries no credential, or an unknown, revoked or invalid one. Answered with a
    ``WWW-Authenticate`` challenge; the message never contains the credential."""

    def __init__(self, message: str, *, field: str | None = None, challenge: str = 'Bearer realm="bulletin"') -> None:
        super().__init__(message, field=field)
        self.headers = {"WWW-Authenticate": challenge}


class ForbiddenError(BulletinError):
    """A valid API key whose role does not allow the request (an admin or cluster-admin action)."""

    exit_code = 4
    status_code = 403


class RequestError(BulletinError, ValueError):
    """A malformed request: a header, a body or a URL that cannot be used as given."""

    exit_code = 2
    status_code = 400


class PayloadTooLargeError(RequestError):
    """A request body over the configured cap; refused before any other work."""

    status_code = 413


class NotAcceptableError(RequestError):
    """The ``Accept`` header asks only for formats the route does not produce."""

    status_code = 406


class UnsafeTargetError(RequestError):
    """A webhook URL the SSRF guard refuses: a private, loopback, link-local or otherwise internal address."""


class QueryError(BulletinError, ValueError):
    """A query asks for a column, field, operator or value the dataset does not allow."""

    exit_code = 5
    status_code = 400


class ScopeError(QueryError):
    """The token carries no secure filter for a dataset that requires one: empty scope means deny."""

    status_code = 403


class StorageError(BulletinError):
    """An object key is unsafe, or storing would overwrite an existing object."""

    exit_code = 6
    status_code = 409


class TransientError(BulletinError):
    """The warehouse or a destination failed in a way that a retry may fix."""

    exit_code = 7
    status_code = 503
    retryable = True


class ConflictError(StorageError):
    """A request that clashes with what already exists, e.g. an idempotency key reused with another body (409)."""


class ClaimLostError(ConflictError):
    """A delivery's ledger claim lapsed and another run took it over: this claimer may no longer finish it."""


class GoneError(BulletinError):
    """A signed link that was valid once and has expired (HTTP 410)."""

    exit_code = 4
    status_code = 410
