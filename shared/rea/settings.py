"""One settings object for every REA process, read from ``REA_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_FILES = {
    "mongo_password": "mongo_password_file",
    "redis_password": "redis_password_file",
    "kafka_sasl_password": "kafka_sasl_password_file",
    "llm_api_key": "llm_api_key_file",
}
"""Each secret, and the setting naming a file that may hold it instead (a mounted Secret)."""


def read_secret(path: Path) -> str:
    """A secret kept in a file: its text without the trailing newline an editor or a Secret adds."""
    return path.read_text().rstrip("\r\n")


class Settings(BaseSettings):
    """Where the parts live and how services behave.

    Leave ``kafka_bootstrap``, ``mongo_uri`` or ``redis_url`` unset and ``rea up`` starts the
    embedded part (Tansu, SecantusDB, redis-server) under ``home``; set one and the same code
    talks to that external server instead.
    """

    model_config = SettingsConfigDict(env_prefix="REA_", extra="ignore")

    home: Path = Field(default=Path(".rea"), description="Data, logs and the running stack's state file.")
    kafka_bootstrap: str | None = None
    mongo_uri: str | None = None
    redis_url: str | None = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_tls_ca_file: Path | None = Field(
        default=None, description="CA bundle that signed the brokers' certificates; unset: the system's."
    )
    kafka_tls_cert_file: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    kafka_tls_key_file: Path | None = None
    mongo_username: str | None = None
    mongo_password: SecretStr | None = None
    mongo_password_file: Path | None = None
    mongo_auth_source: str = "admin"
    mongo_tls: bool = False
    mongo_tls_ca_file: Path | None = None
    mongo_tls_certificate_key_file: Path | None = Field(
        default=None, description="Client certificate and key in one PEM file (mutual TLS)."
    )
    mongo_max_idle_ms: int = Field(
        default=60_000,
        gt=0,
        description="A pooled MongoDB connection idle this long is retired by the client, before the "
        "server or a proxy closes it (SecantusDB closes one idle for 300 s): a client must never pick "
        "a connection the server is closing, whose operation then fails with AutoReconnect.",
    )
    redis_username: str | None = Field(default=None, description="An ACL user; unset: the default user.")
    redis_password: SecretStr | None = None
    redis_password_file: Path | None = None
    redis_tls_ca_file: Path | None = Field(
        default=None, description="CA for a rediss:// URL (TLS is the URL's scheme); unset: the system's."
    )
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None
    embedded_auth: bool = Field(
        default=True,
        description="The embedded SecantusDB requires a SCRAM user and redis-server a password, both "
        "generated into <home>/secrets (mode 0600); off: they accept anyone on 127.0.0.1.",
    )
    kafka_idempotence: bool = Field(
        default=False, description="Idempotent producer: on for Apache Kafka, off for Tansu (unsupported)."
    )
    topic_prefix: str = "rea"
    topic_partitions: int = 6
    kafka_metadata_max_age_ms: int = 10_000
    kafka_fetch_max_wait_ms: int = Field(
        default=20,
        description="How long a consumer's fetch may wait for data. Tansu does not answer a waiting fetch "
        "when data arrives (it re-checks after half the wait), so this bounds the latency of every hop.",
    )
    kafka_doorbell: bool = Field(
        default=True,
        description="Idle consumers pause and wake on a Redis doorbell that every REA publisher rings "
        "(rea.doorbell), so an idle stack does not poll the broker. Off: consumers always fetch.",
    )
    kafka_awake_s: float = Field(
        default=1.0, description="How long a consumer keeps fetching after its last event or ring."
    )
    kafka_idle_poll_s: float = Field(
        default=5.0,
        description="How often a sleeping consumer glances at the broker anyway: the longest an event "
        "from a publisher that does not ring (a plain Kafka client) waits.",
    )
    mongo_db: str = "rea"
    workers: int = Field(default=2, description="Job workers `rea up` and `rea demo` start.")
    job_timeout_s: float = Field(default=1800.0, description="The longest a worker lets any job run.")
    job_memory_mb: int = Field(default=4096, description="The most memory a worker lets any job use.")
    job_file_mb: int = Field(default=2048, ge=1, description="The largest file a job may write.")
    job_env_passthrough: list[str] = Field(
        default_factory=list,
        description="Variables a job's process inherits besides the job contract's own (PATH, HOME, "
        "locale, thread counts, GPUs...); never a REA_ setting: a job sees no service credentials.",
    )
    max_event_kib: int = Field(
        default=1024, ge=1, description="The largest message a consumer accepts; larger: a dead letter."
    )
    max_person_event_kib: int = Field(
        default=64,
        ge=1,
        description="The largest event a person publishes (a campaign request, a decision, a kernel search).",
    )
    require_signed_decisions: bool = Field(
        default=True,
        description="Act on a person's decision (approve, pause, resume, cancel, extend, accept) only "
        "with a valid signature (rea.signing); off: unsigned decisions are acted on, and audited.",
    )
    decision_keys_file: Path | None = Field(
        default=None,
        description="The decision keyring (JSON, mode 0600): services verify with every key in it, the "
        "CLI signs with one; unset: <home>/keys/decisions.json, which `rea up` creates.",
    )
    signing_key_id: str | None = Field(
        default=None, description="The key the CLI signs with; unset: the keyring's only key."
    )
    signing_identity: str | None = Field(
        default=None, description="Who the CLI signs as with a shared key; unset: the OS user."
    )
    decision_ttl_s: float = Field(
        default=300.0, gt=0, description="How long a decision the CLI signs is valid."
    )
    decision_max_ttl_s: float = Field(
        default=900.0, gt=0, description="The longest validity a service accepts on a signed decision."
    )
    decision_clock_skew_s: float = Field(
        default=30.0, ge=0, description="How far clocks may disagree when judging a signature's times."
    )
    data_roots: list[Path] = Field(
        default_factory=list,
        description="Folders whose files campaigns may train on (JSON list); empty: <home>/data. A dataset "
        "file outside them (after following symlinks and '..'), or not a regular file, is refused.",
    )
    job_backend: Literal["local", "ray", "kubernetes"] = Field(
        default="local",
        description="Where a campaign's jobs run when the campaign names no backend: the local job "
        "workers, a Ray cluster (Ray Jobs) or Kubernetes (a batch/v1 Job per training job).",
    )
    launcher_backend: Literal["ray", "kubernetes"] = Field(
        default="ray", description="The backend a launcher service (`rea service launcher`) hands jobs to."
    )
    job_python: str = Field(
        default="python",
        description="The interpreter a remote backend starts the job side with (on the Ray nodes, or in "
        "the job image).",
    )
    ray_address: str = Field(
        default="http://127.0.0.1:8265", description="The Ray cluster's job submission (dashboard) address."
    )
    kubernetes_namespace: str = "rea"
    kubernetes_image: str = Field(
        default="rea:latest", description="The image a Kubernetes training Job runs (REA and the workloads)."
    )
    kubernetes_secret: str | None = Field(
        default="rea-credentials",
        description="A Secret whose keys become the job's environment (REA_MONGO_URI, REA_KAFKA_BOOTSTRAP, "
        "...): credentials never travel in the Job object.",
    )
    kubernetes_queue: str | None = Field(
        default=None,
        description="A Kueue LocalQueue for training Jobs (label kueue.x-k8s.io/queue-name), so the "
        "cluster's quota bounds what REA may run as well.",
    )
    kubernetes_service_account: str | None = None
    warm_starts: bool = Field(
        default=True,
        description="Fork jobs from a process that imported the workload's preload modules.",
    )
    relay_interval_s: float = Field(
        default=5.0,
        description="How often the outbox relay sweeps for stragglers (a commit kicks it at once; a "
        "failed send is retried within a second).",
    )
    lease_ttl_s: float = 15.0
    broker_check_interval_s: float = Field(
        default=5.0, description="How often to check the broker kept its log (one admin request pair)."
    )
    metrics_port: int = Field(default=0, description="Prometheus port for this process; 0 disables it.")
    metrics_host: str = "127.0.0.1"
    inject_faults: dict[str, float] = Field(
        default_factory=dict,
        description='Resilience drills: chance per job that a worker injects a fault, e.g. {"oom": 0.1, '
        '"nan": 0.1, "kill": 0.1} (REA_INJECT_FAULTS as JSON). Never set this in production.',
    )
    llm_base_url: str | None = Field(
        default=None,
        description="An OpenAI-compatible endpoint (e.g. http://localhost:8000/v1) the hypothesis service "
        "asks for extra hypotheses; unset, it uses only the catalogue and history.",
    )
    llm_model: str = "gpt-4o-mini"
    llm_api_key: SecretStr | None = None
    llm_api_key_file: Path | None = None
    llm_timeout_s: float = 30.0
    llm_max_hypotheses: int = Field(default=5, ge=1, le=20)
    kernel_llm_model: str | None = Field(
        default=None, description="The model KernelEvolve asks to write kernels; unset: REA_LLM_MODEL."
    )
    kernel_llm_timeout_s: float = Field(
        default=180.0,
        gt=0,
        description="How long KernelEvolve waits for a model to write a round of kernels.",
    )
    kernel_repeats: int = Field(default=20, ge=1, description="Timed runs per shape in a kernel evaluation.")
    kernel_flush_mb: int | None = Field(
        default=None, ge=1, description="MiB written before each timed run; unset: 1.5x the last-level cache."
    )
    kernel_threads: int | None = Field(
        default=None, ge=1, description="Threads kernels and their baselines run with; unset: every core."
    )
    kernel_huge_pages: bool = Field(
        default=False,
        description="Time kernels and their baselines with large tensors on transparent huge pages.",
    )
    kernel_confine: bool = Field(
        default=True,
        description="Confine every process that builds or runs a candidate kernel with Landlock, where the "
        "kernel has it (no file beyond what it needs, no TCP, no signal outside); off only where it gets "
        "in the way.",
    )
    kernel_fork_server: bool = Field(
        default=True,
        description="Fork the processes that check and time kernels from one that has imported PyTorch "
        "already, rather than start each afresh (one to two seconds of CPU each).",
    )
    log_level: str = "INFO"
    service_name: str = "rea"

    def decision_keys_path(self) -> Path:
        """Where the decision keyring is: the configured file, else under ``home``."""
        return self.decision_keys_file or self.home / "keys" / "decisions.json"

    def allowed_data_roots(self) -> list[Path]:
        """The data roots in force, absolute: those configured, else ``<home>/data``."""
        return [root.resolve() for root in self.data_roots or [self.home / "data"]]

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Settings:
        """Fill each unset secret from its ``*_FILE`` setting, so a Kubernetes Secret or the
        embedded stack's generated files can hold it instead of the environment."""
        for secret, file_setting in SECRET_FILES.items():
            path = getattr(self, file_setting)
            if getattr(self, secret) is None and path is not None:
                try:
                    setattr(self, secret, SecretStr(read_secret(path)))
                except OSError as exc:
                    setting = f"REA_{file_setting.upper()}"
                    raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from None
        if (self.mongo_username is None) != (self.mongo_password is None):
            raise ValueError("set both REA_MONGO_USERNAME and REA_MONGO_PASSWORD(_FILE), or neither")
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"REA_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs REA_KAFKA_SASL_USERNAME "
                "and REA_KAFKA_SASL_PASSWORD(_FILE)"
            )
        return self

    @field_validator("inject_faults")
    @classmethod
    def _known_faults(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - {"oom", "nan", "kill"}
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}: use oom, nan, kill")
        if any(not 0 <= p <= 1 for p in value.values()) or sum(value.values()) > 1:
            raise ValueError("fault chances must be in [0, 1] and sum to at most 1")
        return value
