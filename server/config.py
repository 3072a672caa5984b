"""Settings: defaults embedded here, a TOML file, then FORECOURT_<SECTION>__<KEY> environment variables."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


def _empty_is_none(value: Any) -> Any:
    """An empty string (in the TOML file or the environment) means not set: the setting's None default."""
    return None if value == "" else value


# A folder setting whose empty value means the default named in its help
OptionalPath = Annotated[Path | None, BeforeValidator(_empty_is_none)]


class Section(BaseModel):
    """A config section: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerSettings(Section):
    """HTTP server and gunicorn."""

    host: str = Field("127.0.0.1", description="Address gunicorn binds to.")
    port: int = Field(8080, ge=1, le=65535, description="Port gunicorn binds to.")
    workers: int = Field(2, ge=1, le=64, description="Gunicorn worker processes.")
    threads: int = Field(4, ge=1, le=256, description="Threads per worker.")
    worker_memory_mb: int = Field(
        1400, ge=0,
        description="Memory counted for an idle worker with its model; gunicorn starts only the workers that fit. 0: no check.")
    request_memory_mb: int = Field(
        1100, ge=0,
        description="Memory counted for one request on a 50-megapixel image, per thread of a worker.")
    timeout: int = Field(180, ge=120, description="Seconds before a silent worker is restarted (at least 120).")
    graceful_timeout: int = Field(30, ge=1, description="Seconds a worker gets to finish requests on shutdown.")
    max_request_mb: int = Field(40, ge=1, le=1024, description="Largest request body in MB; larger gets 413.")
    max_request_megapixels: float = Field(
        400.0, ge=1, le=100_000,
        description="Decoded pixels all the images of one request may have together (read from headers); more gets 413.")
    secret_key: str = Field(
        "", description="Signs session cookies. Empty: a random key is made once and kept in the data folder."
    )
    public_url: str = Field("", description="Base URL used in e-mailed links, e.g. https://forecourt.example.")
    session_cookie_secure: bool = Field(False, description="Send the session cookie over HTTPS only.")
    trusted_proxies: int = Field(
        0, ge=0, le=10,
        description="Reverse proxies in front that set X-Forwarded-For/-Proto; 0 ignores those headers (clients can forge them).")


class StorageSettings(Section):
    """Where data lives."""

    data_dir: Path = Field(Path("var"), description="Holds the database, images, indexes and models.")
    busy_timeout_ms: int = Field(10000, ge=0, description="SQLite busy timeout in milliseconds.")
    backup_before_migrate: bool = Field(
        True, description="An upgrade that brings schema changes first writes `forecourt backup` of the data "
        "folder to backup_dir.")
    backup_dir: OptionalPath = Field(
        None, description="Where the automatic pre-upgrade backups go; empty means <data_dir>/backups (which "
        "backups themselves skip).")


class AuthSettings(Section):
    """Accounts, passwords and API keys."""

    min_password_length: int = Field(10, ge=8, le=128, description="Shortest password accepted.")
    reset_token_minutes: int = Field(60, ge=5, le=1440, description="Lifetime of a password-reset link.")
    session_hours: int = Field(12, ge=1, le=720, description="Dashboard session lifetime in hours.")
    sign_in_attempts: int = Field(
        5, ge=1, le=100, description="Wrong passwords for one account before its sign-in pauses (dashboard, password "
                                     "and e-mail changes)."
    )
    sign_in_address_attempts: int = Field(
        20, ge=1, le=1000,
        description="Wrong passwords from one client address, for any accounts, before sign-in from it pauses."
    )
    sign_in_delay_seconds: int = Field(
        30, ge=1, le=3600, description="First pause in seconds; each further wrong password doubles it."
    )
    sign_in_max_delay_seconds: int = Field(900, ge=1, le=86400, description="Longest pause in seconds.")
    sign_in_forget_minutes: int = Field(
        60, ge=1, le=10080, description="Minutes without a wrong password after which the count starts afresh."
    )
    failed_sign_ins_kept_days: int = Field(
        90, ge=1, le=3650, description="Days the failed sign-ins shown on the Users page are kept."
    )


class RateLimitSettings(Section):
    """Per-API-key rate limits."""

    enabled: bool = Field(True, description="Apply per-key rate limits.")
    default: str = Field("600 per minute", description="Limit per API key (flask-limiter syntax).")
    storage_uri: str = Field(
        "", description="flask-limiter storage URI; empty uses a file shared by all workers in the data folder."
    )


class ModelsSettings(Section):
    """Model weights and inference."""

    dir: OptionalPath = Field(None, description="Model files; empty means <data_dir>/models.")
    cache_dir: Path = Field(
        Path("~/.cache/forecourt"), description="Download cache outside the data folder (npm packs, chunks)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto uses CUDA when present.")
    threads: int = Field(0, ge=0, le=256, description="Inference threads per worker; 0 picks the core count.")
    segmenter: str = Field("isnet-general", description="Default background-removal model.")
    batch_size: int = Field(
        0, ge=0, le=64,
        description="Most images in one segmenter run shared by concurrent requests; 0 = auto (8 on CUDA, 1 on the CPU).")
    batch_wait_ms: float = Field(
        5.0, ge=0, le=100, description="How long the first request of a batch waits for others to join, in ms.")
    sam_model: str = Field("sam-vit-b", description="Segment Anything checkpoint used for prompts and refine=sam.")
    require: bool = Field(
        True, description="readyz reports 503 while the default segmenter is missing or fails its checksum."
    )


class RemovebgSettings(Section):
    """Background removal (the remove.bg-compatible endpoint)."""

    max_file_mb: int = Field(22, ge=1, le=200, description="Largest input image file in MB (file_too_large above).")
    url_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts image_url / bg_image_url may fetch from (`*.example.com` too); empty turns URL inputs off.",
    )
    url_timeout_seconds: int = Field(15, ge=1, le=120, description="Time limit for fetching an image_url.")
    batch_workers: int = Field(
        2, ge=1, le=64, description="Images in parallel for `forecourt removebg` (its --workers overrides).")
    car_mirror_pass: bool = Field(
        True,
        description="type=car also segments the mirrored photo and keeps the union (about twice the model time).",
    )
    see_through_glass: bool = Field(
        False,
        description="Experimental: type=car with semitransparency makes the windows it finds see-through (glass IoU ~0.65).",
    )


class RecognitionSettings(Section):
    """Reference collections and recognition scans."""

    max_keypoints: int = Field(1000, ge=50, le=4000, description="RootSIFT keypoints kept per image.")
    max_side: int = Field(800, ge=200, le=4000, description="Images are resized to this long side before features.")
    sharpen_blurred: bool = Field(
        False, description="Sharpen a blurred image back to a studio photo's blur before features (measured, off: "
        "docs/decisions/0008).")
    shortlist: int = Field(10, ge=1, le=200, description="Reference images verified with RANSAC per scan.")
    min_score: float = Field(0.5, ge=0, le=1, description="Default min_score of a scan (0.5 is inlier_midpoint "
                             "inliers, or car_inlier_midpoint in a car collection).")
    inlier_midpoint: float = Field(
        18.0, ge=8, le=200,
        description="Inliers that score 0.5 in a generic collection (the score is a logistic in the inliers, scale 3).")
    car_inlier_midpoint: float = Field(
        17.0, ge=8, le=200,
        description="Inliers that score 0.5 in a car collection (features from the car mask).")
    stop_score: float = Field(
        0.95, ge=0, le=1,
        description="A mode=single scan stops verifying at the first match scoring this; 0 verifies the whole shortlist.")
    duplicate_score: float = Field(
        0.95, ge=0, le=1,
        description="An upload matching another object at this score or more is refused as a duplicate (force=true adds it).")
    twin_ratio: float = Field(
        0.5, gt=0, le=1,
        description="A runner-up this close in inliers (same photo region, min_score met) is a look-alike: ambiguous.")
    twin_checks: int = Field(
        3, ge=0, le=50, description="Images a mode=single scan still verifies after its first decisive match.")
    min_query_side: int = Field(64, ge=16, le=4096, description="Queries with a shorter side answer no match.")
    max_query_megapixels: float = Field(25.0, gt=0, le=100, description="Largest query or reference image.")
    max_file_mb: int = Field(22, ge=1, le=200, description="Largest query or reference image file in MB.")
    ivf_threshold: int = Field(
        20_000, ge=1000,
        description="Descriptors past which a collection's index becomes IVF-PQ instead of exact flat (a rebuild is queued).")
    background_rebuild: bool = Field(
        True,
        description="Index rebuild jobs run on the job queue's workers; false holds them for `forecourt index rebuild --pending`.")
    nprobe: int = Field(16, ge=1, le=1024, description="IVF lists searched per query vector (speed vs recall).")
    pq_m: Literal[16, 32, 64] = Field(
        64, description="Product-quantizer parts of an IVF-PQ descriptor (4 bits each: 64 = 32 bytes).")
    index_keypoints: int = Field(
        300, ge=0, le=4000,
        description="Strongest keypoints of each reference image put in the index (0: all); RANSAC uses every one.")
    vote_keypoints: int = Field(
        300, ge=0, le=4000, description="Strongest query keypoints that vote for the shortlist (0: all).")
    embedding: str = Field(
        "",
        description="Global-embedding model under <models_dir>/recognition for the shortlist; empty: descriptor votes.")
    global_ivf_threshold: int = Field(
        200_000, ge=1000, description="Past this many images a rebuild makes the embedding index IVF (8-bit).")
    car_embedding: bool = Field(
        True, description="Car collections: store each reference's car embedding (Lite0, 640 bytes) for the margin.")
    car_margin: bool = Field(
        True, description="Car collections: weigh the embedding margin to the nearest other car in the score.")


class CatalogSettings(Section):
    """Vehicle image catalog: renders, delivery and signed URLs (renders run on the job queue, see [queue])."""

    render_size: Literal["auto", "preview", "medium", "hd", "full"] = Field(
        "auto",
        description="Working size of renders (preview, medium, hd, full); auto: the smallest with 2x the canvas's pixels.")
    plate_cascade: str = Field(
        "",
        description="OpenCV plate cascade XML for detect_plates (needs OpenCV 4.x); empty looks in OpenCV's data folders.")
    max_photo_mb: int = Field(30, ge=1, le=200, description="Largest uploaded photo in MB.")
    duplicate_distance: int = Field(
        4, ge=0, le=32, description="Perceptual-hash bits two photos of one vehicle may differ by and be duplicates.")
    max_served_pixels: int = Field(4096, ge=64, le=16384, description="Largest width or height GET /v1/images serves.")
    cache_max_age: int = Field(86400, ge=0, description="Cache-Control max-age (seconds) for served images.")
    signed_url_ttl_seconds: int = Field(
        604800, ge=60, le=31536000, description="Default lifetime of a signed public image URL.")
    keep_old_renders_days: int = Field(
        30, ge=0, le=3650,
        description="Days a render replaced by a newer one stays served (old links keep working), then it is deleted.")


class QueueSettings(Section):
    """The job queue (huey) that runs background work: catalog renders, index rebuilds, prunes."""

    url: str = Field(
        "",
        description="Where the queue's messages live: empty is SQLite in the data folder; redis://host:6379/0 to share.")
    workers_in_server: bool = Field(
        True, description="Each gunicorn worker runs `threads` queue threads; false leaves the jobs to `forecourt "
        "worker` processes.")
    threads: int = Field(1, ge=0, le=64,
        description="Queue threads per gunicorn worker (and `forecourt worker --threads`'s default); 0 runs none in the server.")
    poll_seconds: float = Field(1.0, gt=0, le=60, description="Longest wait of an idle thread before it looks at "
                                "the SQLite queue again (Redis wakes it at once).")
    lease_seconds: float = Field(60.0, ge=5, le=3600,
        description="A running job renews its lease every quarter of this; a lapsed lease means its worker is gone.")
    reap_seconds: float = Field(5.0, gt=0, le=600,
        description="How often each consumer looks for jobs whose worker died.")
    retry_delay_seconds: float = Field(10.0, ge=0, le=86400,
        description="A failed job is tried again after this, then 2x, 4x... until its attempts are spent (then dead).")
    resend_seconds: float = Field(1800.0, ge=60,
        description="A queued job whose message is older than this is sent again (duplicates are harmless).")


class SmtpSettings(Section):
    """Outgoing e-mail (password resets, notices). Empty host: no e-mail, links go to the admin."""

    host: str = Field("", description="SMTP server; empty disables e-mail.")
    port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    username: str = Field("", description="SMTP user.")
    password: str = Field("", description="SMTP password.")
    starttls: bool = Field(True, description="Use STARTTLS.")
    sender: str = Field("forecourt@localhost", description="From address.")


class LoggingSettings(Section):
    """Logs."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["json", "text"] = Field("json", description="json: one JSON object per line on stdout.")


class MetricsSettings(Section):
    """Prometheus metrics at /metrics."""

    public: bool = Field(
        False,
        description="Anyone may read /metrics; false: only with an admin's API key or from this machine itself.")


class LicensingSettings(Section):
    """Offline licensing (see licensing/)."""

    public_keys: list[str] = Field(
        default_factory=list, description="Extra vendor Ed25519 public keys (base64), for key rotation and tests."
    )
    state_dir: Path = Field(
        Path("~/.local/share/forecourt"),
        description="A folder outside the data folder, on persistent storage: trial record, sealing secret, pack ids.",
    )
    clock_tolerance_minutes: int = Field(
        60, ge=1, le=1440, description="How far the clock may go back before the box is restricted."
    )
    reservation_ttl_seconds: int = Field(
        600, ge=180, le=86400, description="A metered request not settled after this long is refunded."
    )
    notice_webhook: str = Field("", description="URL that gets each licensing notice as a JSON POST; empty: none.")
    scheduler: Literal["auto", "on", "off"] = Field(
        "auto", description="Purge and notice jobs: auto runs them under gunicorn (one worker per box holds a lock)."
    )


class Settings(BaseModel):
    """All of Forecourt's settings."""

    model_config = ConfigDict(extra="forbid")

    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    removebg: RemovebgSettings = Field(default_factory=RemovebgSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    recognition: RecognitionSettings = Field(default_factory=RecognitionSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    licensing: LicensingSettings = Field(default_factory=LicensingSettings)

    @property
    def data_dir(self) -> Path:
        """The data folder, absolute."""
        return self.storage.data_dir.expanduser().resolve()

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.data_dir / "forecourt.db"

    @property
    def models_dir(self) -> Path:
        """Where model files live."""
        return (self.models.dir or self.data_dir / "models").expanduser().resolve()

    @property
    def cache_dir(self) -> Path:
        """Download cache, outside the data folder."""
        return self.models.cache_dir.expanduser().resolve()


class ConfigError(Exception):
    """A setting has a bad value; the message names the key."""


ENV_PREFIX = "FORECOURT_"


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Collect FORECOURT_<SECTION>__<KEY> variables into nested dicts (values parsed as TOML when they parse)."""
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(section, {})[key] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    return merged


def load_settings(path: Path | str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load settings from a TOML file (or FORECOURT_CONFIG) and the environment; raise ConfigError naming the key."""
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get("FORECOURT_CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        p = Path(path).expanduser()
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {p}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
    data = _merge(data, _env_overrides(environ))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            problems.append(f"{key}: {err['msg']}")
        raise ConfigError("invalid setting " + "; ".join(problems)) from exc


def iter_settings(model: type[BaseModel] = Settings, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every leaf setting as (dotted name, default, help), for docs and the config test."""
    rows: list[tuple[str, Any, str]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(iter_settings(ann, f"{prefix}{name}."))
        else:
            default = field.get_default(call_default_factory=True)
            rows.append((f"{prefix}{name}", default, field.description or ""))
    return rows


def get_settings() -> Settings:
    """The running app's settings (inside a Flask app context)."""
    from flask import current_app

    return current_app.extensions["forecourt.settings"]
