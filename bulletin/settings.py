"""Settings, read once at the edge (CLI, flow entry, API) and passed down as an argument.

Every field reads ``BULLETIN_<NAME>`` from the environment. Secrets are ``SecretStr`` and have no default.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    recipients_per_task: int = Field(
        default=25,
        ge=1,
        le=1_000,
        description="Recipients delivered by one Prefect task; larger audiences are split into batches.",
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

    @property
    def manifests_dir(self) -> Path:
        return self.home_dir / "manifests"
