"""The service's operational settings, read and checked from DIGITS_* environment variables.

Reads the environment; writes nothing. DIGITS_<FIELD> sets each field below (DIGITS_MODEL,
DIGITS_MAX_QUEUE, ...). Kept apart from bento.py, which reads them once at import, so `digits
serve` can check them (one-line error) before it starts BentoML, without importing BentoML.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from serving.session import PROVIDERS

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    """Operational settings, read from DIGITS_* environment variables."""

    model: str = "models/digits.onnx"
    provider: str = "auto"
    threads: int = 1  # per worker: batch-1 Gemms gain nothing from splitting; add workers instead
    workers: int = 1
    max_images: int = 1024
    max_body_bytes: int = 16 * 1024 * 1024
    # Decoding costs about 20 ns and 7 bytes per pixel: 4096×4096 is ~0.3 s and ~120 MiB.
    max_image_pixels: int = 4096 * 4096
    max_request_pixels: int = 4096 * 4096
    decode_threads: int = 1  # per worker: image decoding and large JSON bodies run in this pool
    # Requests in flight per worker past which new ones get an immediate 503 (Retry-After).
    max_queue: int = 256
    timeout_s: int = 30  # a request not answered by then gets 504 (a client dripping its body)
    json_logs: bool = False  # log lines as JSON objects, for log collectors
    # BentoML's access log (every route) and its OpenTelemetry spans for the prediction routes:
    # off by default, as each costs more CPU per request than the model.
    access_log: bool = False
    trace: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings with DIGITS_<FIELD> variables (of os.environ by default) over the defaults."""
        env = os.environ if env is None else env
        values = {f.name: env.get(f"DIGITS_{f.name.upper()}") for f in fields(cls)}
        kinds = {f.name: f.type for f in fields(cls)}
        return cls(**{k: parse(k, v, kinds[k]) for k, v in values.items() if v})

    def __post_init__(self) -> None:
        positive = ("threads", "workers", "max_images", "max_body_bytes", "max_image_pixels")
        positive += ("max_request_pixels", "decode_threads", "max_queue", "timeout_s")
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"DIGITS_{key.upper()} must be at least 1")
        if self.provider not in PROVIDERS:
            choices = ", ".join(PROVIDERS)
            raise ValueError(f"DIGITS_PROVIDER must be one of {choices}, not {self.provider!r}")


def parse(key: str, value: str, kind: str) -> int | bool | str:
    """An environment value as the settings field's type; ValueError naming the variable."""
    name = f"DIGITS_{key.upper()}"
    if kind == "bool":
        if value.lower() not in TRUE + FALSE:
            raise ValueError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), not {value!r}")
        return value.lower() in TRUE
    if kind == "int" and not value.isdigit():
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    return int(value) if kind == "int" else value
