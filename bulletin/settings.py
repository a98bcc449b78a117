"""Settings, read once at the edge (CLI, flow entry, API) and passed down as an argument.

Every field reads ``BULLETIN_<NAME>`` from the environment. Secrets are ``SecretStr`` and have no default.
A value out of bounds, or a combination that can never work (``bulletin.settings_checks``), is a ``ConfigError``
naming the variable, raised when the settings are read: before any run starts, not for every recipient of one.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidatorFunctionWrapHandler, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bulletin.errors import ConfigError
from bulletin.settings_checks import check_settings, env_name

#: The repository root when Bulletin runs from a checkout (the usual case: reports live in git beside the code).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Bulletin's configuration. Build it directly in tests; ``Settings()`` reads the environment."""

    model_config = SettingsConfigDict(env_prefix="BULLETIN_", extra="ignore", frozen=True)

    home: Path = Field(
        default=Path(".bulletin"),
        description="State folder: demo warehouse, keys, local bucket, manifests. Relative paths are from the "
        "working directory.",
    )
    warehouse_url: str | None = Field(
        default=None,
        description="A DuckDB file path or any SQLAlchemy URL. Default: the demo DuckDB file under the state folder.",
    )
    reports_dir: Path = Field(
        default=PROJECT_ROOT / "deployments" / "reports",
        description="Folder of report definitions, one YAML file per report.",
    )
    datasets_dir: Path = Field(
        default=PROJECT_ROOT / "deployments" / "datasets",
        description="Folder of dataset definitions (the query engine's registry), one YAML file per dataset.",
    )
    token_issuer: str = Field(default="bulletin", description="`iss` of data tokens minted and accepted.")
    token_audience: str = Field(default="bulletin-query", description="`aud` of data tokens minted and accepted.")
    token_ttl_minutes: int = Field(
        default=5, ge=1, le=60, description="Lifetime of a data token in minutes (at most 60)."
    )
    signing_keys: SecretStr | None = Field(
        default=None,
        description="The signing keyset as JSON (what `bulletin keys generate` writes). Overrides the keys file.",
    )
    keys_file: Path | None = Field(
        default=None, description="Path of the signing keyset JSON file. Default: <home>/keys/keyset.json."
    )
    signing_keys_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the signing keyset JSON."
    )
    storage_prefix: str = Field(default="reports", description="First segment of every stored object key.")
    bucket_dir: Path | None = Field(
        default=None, description="Folder used as the local bucket. Default: <home>/bucket."
    )
    csv_bom: bool = Field(default=False, description="Start CSV files with a UTF-8 BOM so Excel detects UTF-8.")
    query_batch_rows: int = Field(
        default=50_000, ge=1_000, le=1_000_000, description="Rows per batch streamed from the warehouse."
    )
    delivery_processes: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description=(
            "Worker processes a run of 500+ recipients uses beside the flow's own threads "
            "(unset: one per core beyond the first, at least one; 0: none)."
        ),
    )

    # --- S3 destination: set BULLETIN_S3_BUCKET to deliver to S3 (credentials: the standard AWS chain) ---
    s3_bucket: str | None = Field(default=None, description="S3 bucket for deliveries. Unset: the local bucket folder.")
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of any S3-compatible service (MinIO, moto...). Unset: AWS."
    )
    s3_region: str | None = Field(default=None, description="AWS region of the bucket. Unset: the AWS chain's.")
    s3_prefix: str = Field(default="", description="Key prefix inside the bucket, before the per-org prefix.")
    s3_sse: Literal["AES256", "aws:kms"] = Field(default="AES256", description="Server-side encryption requested.")
    s3_kms_key_id: str | None = Field(default=None, description="KMS key id when BULLETIN_S3_SSE=aws:kms.")
    s3_aws_credentials_block: str | None = Field(
        default=None, description="Name of a prefect-aws AwsCredentials block to use instead of the AWS chain."
    )
    s3_fast_put: bool = Field(
        default=True,
        description="Single PutObjects to BULLETIN_S3_ENDPOINT_URL through obstore (Rust) where proven to match "
        "boto3; off: boto3 for every request.",
    )
    link_expiry_seconds: int = Field(
        default=86_400, ge=1, le=604_800, description="Lifetime of presigned download links (at most 7 days)."
    )
    # --- Email destination: set BULLETIN_SMTP_HOST to send over SMTP; unset, messages go to the outbox folder ---
    smtp_host: str | None = Field(default=None, description="SMTP server. Unset: .eml files in <home>/outbox.")
    smtp_port: int | None = Field(default=None, ge=1, le=65_535, description="Default 587 (starttls), 465 (ssl).")
    smtp_security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls", description="starttls or ssl with certificate verification; none only for loopback."
    )
    smtp_username: str | None = Field(default=None, description="SMTP login.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password (a secret).")
    smtp_password_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the SMTP password."
    )
    smtp_from: str = Field(default="Bulletin <bulletin@localhost>", description="From address of report emails.")
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=300, description="SMTP connection timeout.")
    smtp_ca_file: Path | None = Field(default=None, description="Extra CA bundle to verify the SMTP server with.")
    public_url: str | None = Field(
        default=None,
        description="Where people reach this server's API from outside (https://bulletin.example.com, no trailing "
        "slash): the base of the one-click unsubscribe links in every email (List-Unsubscribe, RFC 8058, and a link in "
        "the footer). Unset: emails carry no unsubscribe link, and `bulletin serve` says so at start.",
    )
    unsubscribe_secret: SecretStr | None = Field(
        default=None,
        description="Secret (at least 32 characters) that signs unsubscribe links. Unset: derived from the signing "
        "keyset's keys, so a link keeps working while the key that signed it stays in the keyset.",
    )
    unsubscribe_ttl_days: int = Field(
        default=60, ge=1, le=366, description="How long an email's unsubscribe link works, in days from its send."
    )
    email_max_bytes: int = Field(
        default=10_000_000, ge=10_000, description="Largest message; over it, links replace attachments."
    )
    email_allowed_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Recipient email domains allowed (comma-separated). Empty: any domain."
    )
    outbox_dir: Path | None = Field(default=None, description="Folder of .eml files when no SMTP host is set.")
    # --- SFTP destination: set BULLETIN_SFTP_HOST to drop files on an SSH server (host keys always verified) ---
    sftp_host: str | None = Field(default=None, description="SSH server the sftp channel delivers to.")
    sftp_port: int = Field(default=22, ge=1, le=65_535, description="SSH port of the SFTP server.")
    sftp_username: str | None = Field(default=None, description="SSH login on the SFTP server.")
    sftp_private_key_file: Path | None = Field(
        default=None, description="Unencrypted private key file (ed25519, ECDSA or RSA) to log in with."
    )
    sftp_private_key_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the private key's text instead."
    )
    sftp_known_hosts_file: Path | None = Field(
        default=None,
        description="known_hosts file holding the server's host key (required: an unknown or changed key is "
        "refused, never added).",
    )
    sftp_directory: str | None = Field(
        default=None, description="Absolute folder on the server that files go under (made if missing)."
    )
    sftp_timeout_seconds: float = Field(
        default=30.0, gt=0, le=300, description="SSH connect, login and per-request timeout."
    )
    database_url: str | None = Field(
        default=None, description="State store SQLAlchemy URL. Default: SQLite file <home>/bulletin.db."
    )
    claim_lease_seconds: float = Field(
        default=90.0,
        ge=5,
        le=3_600,
        description="Lease of a delivery's ledger claim, renewed every third of it while the delivery works: how "
        "long the deliveries of a run that died stay blocked before another run may send them.",
    )
    shard_recipients: int = Field(
        default=2_000,
        ge=0,
        le=1_000_000,
        description="A run with more recipients than this splits its audience into shards of at most this many, "
        "each its own flow run of the deliver-shard deployment, taken by any worker of the pool; 0 never shards. "
        "Smaller runs deliver in their own flow run.",
    )
    shard_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Times a run starts a shard again when its flow run crashed (its worker died), failed, or "
        "left recipients unfinished; what the shard sent is not sent again.",
    )
    max_concurrent_runs: int = Field(
        default=5,
        ge=1,
        le=1_000,
        description="Report runs delivering at once across every process on one Prefect server (the Prefect "
        "global concurrency limit 'bulletin-report-runs'); the rest wait for a slot.",
    )

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def warehouse(self) -> str:
        return self.warehouse_url or str(self.home_dir / "warehouse.duckdb")

    @property
    def keyset_path(self) -> Path:
        return (self.keys_file or self.home_dir / "keys" / "keyset.json").expanduser()

    @property
    def bucket_path(self) -> Path:
        return (self.bucket_dir or self.home_dir / "bucket").expanduser().resolve()

    # --- Webhooks out (Standard Webhooks) ---
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        description="Seconds before each attempt, comma-separated (Svix-like: now, 5 s, 5 min, 30 min, 2 h, 5 h, "
        "10 h, 10 h); full jitter is applied to each delay.",
    )
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=30, description="Per-request timeout (max 30 s).")
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs the SSRF guard lets through although they are internal (e.g. 127.0.0.0/8 for tests).",
    )
    webhook_https_only: bool = Field(default=False, description="Refuse http:// webhook URLs.")
    webhook_disable_after_seconds: int = Field(
        default=5 * 86_400, ge=60, description="An endpoint failing without a break this long is disabled."
    )
    webhook_secret_grace_seconds: int = Field(
        default=86_400, ge=0, description="After a secret rotation, the old secret keeps signing this long."
    )
    webhook_concurrency: int = Field(default=8, ge=1, le=64, description="Webhook requests in flight at once.")
    # --- HTTP API ---
    api_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds to.")
    api_port: int = Field(default=8400, ge=1, le=65_535, description="Port of the HTTP API.")
    api_max_body_bytes: int = Field(
        default=1_048_576, ge=1_024, description="Largest request body the API reads; larger is a 413."
    )
    api_prefect_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Longest one call to the Prefect API may take while an API caller waits (no client retries): "
        "past it, or when Prefect refuses the connection, the answer is 503 with Retry-After.",
    )
    api_query_max_rows: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Most rows POST /v1/query returns; its `limit` may not exceed this, and it applies when none is "
        "given.",
    )
    triggers_dir: Path = Field(
        default=PROJECT_ROOT / "deployments" / "triggers",
        description="Folder of inbound webhook triggers, one YAML file per trigger.",
    )
    file_link_secret: SecretStr | None = Field(
        default=None,
        description="Secret (at least 32 characters) that signs the API's download links to local-bucket files "
        "(GET /v1/files/...). Unset: derived from the active signing key, so rotating keys ends older links.",
    )
    scheduled_events_sweep_seconds: float = Field(
        default=60.0,
        ge=1,
        le=3_600,
        description="Without the deliver-scheduled-events deployment, how often the API checks for scheduled events "
        "that are due but were not sent (its runs missed) and starts a run to send them.",
    )

    # --- Retention (docs/retention.md): what `bulletin prune` and the daily prune deployment delete ---
    retention_files_days: int = Field(
        default=90,
        ge=1,
        le=36_500,
        description="Days a delivered file is kept (local bucket; the S3 lifecycle rule "
        "`bulletin retention apply` writes). A report's `retention: {files_days: N}` overrides it.",
    )
    retention_manifests_days: int = Field(
        default=400, ge=1, le=36_500, description="Days a run's manifest file is kept."
    )
    retention_ledger_days: int = Field(
        default=400,
        ge=1,
        le=36_500,
        description="Days the delivery ledger (and so the audit) keeps a run key's rows after that run's last change.",
    )
    retention_webhooks_days: int = Field(
        default=30, ge=1, le=36_500, description="Days a finished webhook message and its attempts are kept."
    )
    retention_inbound_days: int = Field(
        default=7,
        ge=1,
        le=36_500,
        description="Days an inbound message id is kept for the replay check; never less than the longest replay "
        "window of the triggers (each trigger's timestamp tolerance or maximum age).",
    )
    retention_scheduled_events_days: int = Field(
        default=30, ge=1, le=36_500, description="Days a processed scheduled event and its invocations are kept."
    )
    prune_batch_rows: int = Field(
        default=1_000, ge=1, le=100_000, description="Rows `bulletin prune` deletes per transaction."
    )

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_what_cannot_work(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            settings: Settings = handler(data)
        except ValidationError as exc:
            raise ConfigError(_first_error(exc), field=_error_field(exc)) from None
        check_settings(settings)
        return settings

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(v) for v in value.split(",") if v.strip()]
        return value

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("email_allowed_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: object) -> object:
        if isinstance(value, str):
            return [d.strip().lower() for d in value.split(",") if d.strip()]
        return value

    @property
    def outbox_path(self) -> Path:
        return (self.outbox_dir or self.home_dir / "outbox").expanduser().resolve()

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'bulletin.db'}"

    @property
    def manifests_dir(self) -> Path:
        return self.home_dir / "manifests"


def _error_field(exc: ValidationError) -> str | None:
    loc = exc.errors()[0]["loc"]
    return str(loc[0]) if loc else None


def _first_error(exc: ValidationError) -> str:
    """One line naming the variable: ``BULLETIN_TOKEN_TTL_MINUTES: Input should be less than or equal to 60``."""
    error = exc.errors()[0]
    field = _error_field(exc)
    where = env_name(field) if field else "settings"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    info = Settings.model_fields.get(field or "")
    secret = info is None or info.annotation in (SecretStr, SecretStr | None)  # never echo a secret's value
    if not secret and isinstance(value, str | int | float) and not isinstance(value, bool) and len(str(value)) <= 80:
        message = f"{message} (got {value!r})"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {message}{more}"
