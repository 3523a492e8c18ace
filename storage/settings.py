"""One validated settings class, read from the environment (prefix-free names, `.env` optional).

`get_settings()` is cached; tests call `get_settings.cache_clear()` after changing the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("data")


class Settings(BaseSettings):
    """Everything the UI and the runner read from their environment."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Field(default=DEFAULT_DATA_DIR, alias="ML_CONNECTOR_DATA_DIR")
    database_url: str = Field(default="", alias="DATABASE_URL")
    # Comma-separated Fernet keys, newest first; empty means "use (or create) the key file".
    keys: str = Field(default="", alias="ML_CONNECTOR_KEYS")
    # Sandbox mode lets connections point at emulators on loopback instead of the vendors' hosts.
    sandbox: bool = Field(default=False, alias="ML_CONNECTOR_SANDBOX")
    runner_host: str = Field(default="127.0.0.1", alias="ML_CONNECTOR_RUNNER_HOST")
    runner_port: int = Field(default=8700, alias="ML_CONNECTOR_RUNNER_PORT")
    # The URL NetSuite and Zuora reach the runner at; shown to users when they set up webhooks.
    public_url: str = Field(default="", alias="ML_CONNECTOR_PUBLIC_URL")
    # Jobs are I/O-bound (they wait on remote systems), so many run at once; each integration's lane
    # and each connection's cap keep any one system from taking them all.
    workers: int = Field(default=64, ge=1, le=512, alias="ML_CONNECTOR_WORKERS")
    job_lease: float = Field(default=60.0, gt=0, alias="ML_CONNECTOR_JOB_LEASE")  # seconds
    job_max_attempts: int = Field(default=8, ge=1, alias="ML_CONNECTOR_JOB_MAX_ATTEMPTS")
    poll_interval: float = Field(default=2.0, gt=0, alias="ML_CONNECTOR_POLL_INTERVAL")  # seconds
    heartbeat_interval: float = Field(default=10.0, gt=0, alias="ML_CONNECTOR_HEARTBEAT_INTERVAL")  # seconds
    token_check_interval: float = Field(default=300.0, gt=0, alias="ML_CONNECTOR_TOKEN_CHECK_INTERVAL")  # s
    payments_interval: float = Field(default=900.0, gt=0, alias="ML_CONNECTOR_PAYMENTS_INTERVAL")  # seconds
    netsuite_poll_interval: float = Field(
        default=300.0, gt=0, alias="ML_CONNECTOR_NETSUITE_POLL_INTERVAL"
    )  # s
    channel_check_interval: float = Field(
        default=900.0, gt=0, alias="ML_CONNECTOR_CHANNEL_CHECK_INTERVAL"
    )  # s
    retention_days: int = Field(default=90, ge=1, alias="ML_CONNECTOR_RETENTION_DAYS")
    # How often each integration is reconciled (an integration's `reconcile_interval` setting overrides
    # it; 0 there turns the schedule off), and the lease a runner holds on a run while it works on it.
    reconcile_interval: float = Field(default=86400.0, gt=0, alias="ML_CONNECTOR_RECONCILE_INTERVAL")  # s
    reconcile_lease: float = Field(default=120.0, gt=0, alias="ML_CONNECTOR_RECONCILE_LEASE")  # seconds

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                "DATABASE_URL must start with sqlite:/// or postgresql+psycopg:// "
                f"(got a URL starting with {value.split(':', 1)[0]!r})"
            )
        return value

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or a SQLite file under the data directory."""
        if self.database_url:
            url = self.database_url
            # psycopg 3 is the driver we ship; accept the bare scheme people paste.
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{(self.data_dir / 'ml-connector.db').resolve()}"

    @property
    def runner_url(self) -> str:
        """Where webhooks should be sent, as the operator configured it or the local listener."""
        return self.public_url.rstrip("/") or f"http://{self.runner_host}:{self.runner_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
