"""BentoML service: digit prediction from JSON pixels or uploaded images, on ONNX Runtime.

Reads the ONNX model named by $DIGITS_MODEL (default models/digits.onnx) and its metadata; writes
nothing. Run: `bentoml serve serving.service.bento:Digits` or `digits serve`. Settings: DIGITS_*
environment variables (serving/service/settings.py), read once, at import.

Importing this module declares the service and nothing more. Before any worker starts, a
deployment hook checks the model against its golden vectors, so `bentoml serve` refuses a bad
file in one line; each worker's __init__ loads the model and starts its batcher and decoding pool.
Our ASGI layers go in through BentoML's documented `add_asgi_middleware`, in this order
(outermost first): the OpenAPI document, request metrics, backpressure, the body limit, and the
prediction routes' fast path (routes.py), which the `@bentoml.api` methods share.
"""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Any

import bentoml
import orjson
from starlette.responses import Response

from digits.contract import DESKEW_KEY, THRESHOLD_KEY
from serving.service.guards import Admission, BodyLimit, OpenAPIDocument
from serving.service.logs import use_json_logs
from serving.service.pages import PAGES
from serving.service.prometheus import RequestMetrics
from serving.service.routes import PREDICT, PREDICT_IMAGE, PREDICTION_ROUTES, FastRoutes, Routes
from serving.service.settings import Settings
from serving.session import CPU, ModelError, OnnxModel, ProviderError, cuda_problem, load_model
from serving.verify import VerifyError, startup_check

try:
    SETTINGS = Settings.from_env()
except ValueError as err:  # one line in the server's log, not a traceback through BentoML's import
    raise SystemExit(f"digits service: {err}") from None
# BentoML imports the service from its working directory (a Bento's own), where a relative model
# path belongs; the deployment hook runs later, from wherever `bentoml serve` was started.
SETTINGS = dataclasses.replace(SETTINGS, model=str(Path(SETTINGS.model).absolute()))
# BentoML's own timeout (every route) comes a second after ours, so the prediction routes answer
# their 504 in our words and metrics first.
BACKSTOP_S = 1


class PixelsJSON(bentoml.IODescriptor):
    """/predict's input as BentoML's client and schema see it (routes.py parses HTTP)."""

    pixels: Any


class ImagesForm(bentoml.IODescriptor):
    """/predict_image's input: files, so BentoML's client sends them as multipart."""

    images: list[Path]


class AnswerJSON(bentoml.IODescriptor):
    """The answer of both prediction routes, serialized by orjson."""

    digits: list[int | None] = []
    # Rows of probabilities, null for an image with no digit: BentoML's client reads a nullable
    # list as a list and fails on the null, so it is declared loosely here (openapi.py is exact).
    probabilities: list[Any] = []
    reasons: list[str | None] = []
    low_confidence: list[bool] = []
    model_version: str = ""
    error: str | None = None

    @classmethod
    async def to_http_response(cls, obj: Any, serde: Any) -> Response:
        """The answer dict as JSON, without a pydantic round trip."""
        return Response(orjson.dumps(obj), media_type="application/json")


def verified(model: OnnxModel, path: Path) -> str:
    """'verified' or 'unverified' (no golden vectors); VerifyError for a file that fails them.

    The golden vectors are CPU results: a session on another provider is checked by a CPU one.
    """
    return startup_check(model if model.provider == CPU else load_model(path, "cpu", 1), path)


@bentoml.asgi_app(PAGES, path="/")
@bentoml.service(
    name="digits",
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.timeout_s + BACKSTOP_S},
    http={"cors": {"enabled": False}},
    logging={"access": {"enabled": SETTINGS.access_log}},
    tracing={"excluded_urls": [] if SETTINGS.trace else list(PREDICTION_ROUTES)},
)
class Digits:
    """Digit classifier: JSON pixels or images in, digits and probabilities out."""

    @bentoml.on_deployment
    def refuse_a_bad_model() -> None:
        """Before any worker starts: a model that will not load or fails its golden vectors stops
        `bentoml serve` in one line (raised in a worker, BentoML would restart it again and again).
        """
        path, provider = Path(SETTINGS.model), SETTINGS.provider
        if provider == "cuda" and (problem := cuda_problem()):
            raise SystemExit(f"digits service: DIGITS_PROVIDER=cuda, but {problem}")
        try:
            startup_check(load_model(path, "cpu", 1), path)
        except (VerifyError, ModelError, ProviderError, FileNotFoundError) as err:
            raise SystemExit(f"digits service: refusing {path}: {err}") from None

    def __init__(self) -> None:
        s = SETTINGS
        if s.json_logs:
            use_json_logs()
        model = load_model(s.model, s.provider, s.threads)
        self.verified = verified(model, Path(s.model))
        self.routes = Routes(model, s)
        # Startup left ~1M long-lived objects (bentoml, pydantic, otel); without this every
        # full garbage collection walks them all, a 100+ ms pause in p99 latency.
        gc.freeze()
        # Requests leave little cyclic garbage, but BentoML's timeout middleware keeps a timer
        # and a future alive per request for its timeout: at the default thresholds that meant
        # ~50 collections a second under load, and full ones of ~6 ms over those live objects.
        gc.set_threshold(10_000, 20, 10)

    @bentoml.on_shutdown
    def stop_decoding(self) -> None:
        """Stop the decoding pool once the server has finished its requests."""
        self.routes.close()

    @bentoml.api(input_spec=PixelsJSON, output_spec=AnswerJSON)
    async def predict(self, pixels: Any, ctx: bentoml.Context) -> dict[str, Any]:
        """Classify N images given as MNIST pixel values 0–255, flat rows or square images."""
        work = self.routes.predict_value(pixels)
        ctx.response.status_code, answer = await self.routes.respond(PREDICT, work)
        return answer

    @bentoml.api(input_spec=ImagesForm, output_spec=AnswerJSON)
    async def predict_image(self, images: list[Path], ctx: bentoml.Context) -> dict[str, Any]:
        """Classify uploaded PNG/JPEG/BMP/GIF/WebP images, each preprocessed the MNIST way."""
        work = self.routes.predict_files(images, ctx.request)
        ctx.response.status_code, answer = await self.routes.respond(PREDICT_IMAGE, work)
        return answer

    def info(self) -> dict[str, Any]:
        """Model metadata and the ONNX Runtime provider in use."""
        model = self.routes.model
        return {
            "provider": model.provider,
            "verified": self.verified,
            "version": model.version,
            THRESHOLD_KEY: str(model.threshold),  # in use: the model's or default
            DESKEW_KEY: str(model.deskew).lower(),
            **model.metadata,
        }


# Documented middleware hook (docs: "Mount ASGI applications" / "Add custom ASGI middleware").
# BentoML puts them after its own (metrics, tracing, access log, timeout), first one outermost.
Digits.add_asgi_middleware(OpenAPIDocument, settings=SETTINGS)
Digits.add_asgi_middleware(RequestMetrics, paths=PREDICTION_ROUTES)
Digits.add_asgi_middleware(Admission, max_queue=SETTINGS.max_queue, paths=PREDICTION_ROUTES)
Digits.add_asgi_middleware(BodyLimit, max_bytes=SETTINGS.max_body_bytes)
Digits.add_asgi_middleware(FastRoutes)
