"""The service's OpenAPI document, written to match what the routes really accept and answer.

Reads the service settings (limits); writes nothing. guards.OpenAPIDocument serves it at /docs.json
(the Swagger UI at /docs reads it) instead of the one BentoML derives from the Python signatures,
which cannot say "N rows of pixel values 0–255" nor describe the errors our routes send.
"""

from __future__ import annotations

from typing import Any

from digits.contract import CLASSES, PIXEL_MAX, PIXEL_MIN, PIXELS, SIDE
from serving.service.bodies import FIELD
from serving.service.settings import Settings

PIXEL = {"type": "number", "minimum": PIXEL_MIN, "maximum": PIXEL_MAX}
IMAGE_TYPES = "image/png, image/jpeg, image/bmp, image/gif, image/webp"
ERROR = {
    "type": "object",
    "description": "A refused request: what is wrong with it, in one sentence.",
    "required": ["error"],
    "properties": {"error": {"type": "string", "example": "empty batch: send at least one image"}},
    "additionalProperties": False,
}
ANSWER = {
    "type": "object",
    "required": ["digits", "probabilities", "reasons", "low_confidence", "model_version"],
    "properties": {
        "digits": {
            "type": "array",
            "description": "The predicted digit of each image, in request order; null for an "
            "image with no digit in it (blank, one colour, noise only, too little ink).",
            "items": {"type": "integer", "minimum": 0, "maximum": 9, "nullable": True},
        },
        "probabilities": {
            "type": "array",
            "description": "Each image's ten class probabilities (digits 0–9), summing to 1; "
            "null for an image with no digit.",
            "items": {
                "type": "array",
                "minItems": CLASSES,
                "maxItems": CLASSES,
                "items": {"type": "number"},
                "nullable": True,
            },
        },
        "reasons": {
            "type": "array",
            "description": "Why each image has no digit; null for an image that has one.",
            "items": {
                "type": "string",
                "nullable": True,
                "example": "blank: the image is one colour (no ink stands out from the paper)",
            },
        },
        "low_confidence": {
            "type": "array",
            "description": "Whether each answered digit's probability is under the model's "
            "confidence threshold (GET /info: confidence_threshold when the model sets it).",
            "items": {"type": "boolean"},
        },
        "model_version": {"type": "string", "description": "The model file's version."},
    },
}


def rows(n: int, item: dict[str, Any]) -> dict[str, Any]:
    """An array of exactly n items."""
    return {"type": "array", "minItems": n, "maxItems": n, "items": item}


def pixels_schema(max_images: int) -> dict[str, Any]:
    """N images of PIXELS numbers, or of SIDE rows of SIDE, each 0–255."""
    batch = {"type": "array", "minItems": 1, "maxItems": max_images}
    return {
        "description": f"1 to {max_images} images, each {PIXELS} pixel values or {SIDE} rows of "
        f"{SIDE}, {PIXEL_MIN}–{PIXEL_MAX} (white digit on black, like MNIST).",
        "oneOf": [
            {**batch, "items": rows(PIXELS, PIXEL)},
            {**batch, "items": rows(SIDE, rows(SIDE, PIXEL))},
        ],
    }


def refusals(s: Settings) -> dict[str, Any]:
    """The 4xx and 503 answers every prediction route can send."""

    def error(description: str, **extra: Any) -> dict[str, Any]:
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        return {"description": description, "content": content, **extra}

    retry = {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}}
    return {
        "400": error("The body is malformed or its values are out of the contract."),
        "413": error(
            f"More than {s.max_images} images, or a body over {s.max_body_bytes} bytes, "
            f"or images over {s.max_request_pixels} pixels in all."
        ),
        "415": error("The Content-Type is not the route's."),
        "503": error("The server is busy: retry after the given seconds.", headers=retry),
    }


def predict(s: Settings) -> dict[str, Any]:
    """POST /predict."""
    schema = {
        "type": "object",
        "required": ["pixels"],
        "properties": {"pixels": pixels_schema(s.max_images)},
        "example": {"pixels": [[0] * PIXELS]},
    }
    return {
        "summary": "Classify images given as pixel values",
        "operationId": "predict",
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "responses": {"200": answer(), **refusals(s)},
    }


def predict_image(s: Settings) -> dict[str, Any]:
    """POST /predict_image."""
    files = {
        "type": "array",
        "description": f"1 to {s.max_images} PNG/JPEG/BMP/GIF/WebP images of one digit each, up to "
        f"{s.max_image_pixels} pixels each; prepared the MNIST way (cropped, scaled, centred). "
        "Any mode: grey, colour, palette, 16-bit, transparent canvas, dark or light ink.",
        "minItems": 1,
        "maxItems": s.max_images,
        # An empty file is no image: refused with 400 like any other unreadable one.
        "items": {"type": "string", "format": "binary", "minLength": 1},
    }
    schema = {
        "type": "object",
        "required": [FIELD],
        "properties": {FIELD: files},
        "additionalProperties": False,
    }
    body = {"schema": schema, "encoding": {FIELD: {"contentType": IMAGE_TYPES}}}
    return {
        "summary": "Classify uploaded images of digits",
        "operationId": "predict_image",
        "requestBody": {"required": True, "content": {"multipart/form-data": body}},
        "responses": {"200": answer(), **refusals(s)},
    }


def answer() -> dict[str, Any]:
    """The 200 answer of both prediction routes."""
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}}
    return {"description": "One answer per image.", "content": content}


def probe(description: str) -> dict[str, Any]:
    """A GET route answering 200 with no documented body."""
    return {"get": {"summary": description, "responses": {"200": {"description": "OK"}}}}


def document(s: Settings) -> dict[str, Any]:
    """The whole OpenAPI 3.0 document of the service."""
    info_schema = {"type": "object", "additionalProperties": {"type": "string"}}
    content = {"application/json": {"schema": info_schema}}
    info = {"description": "Model metadata", "content": content}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "digits",
            "version": "1",
            "description": "Handwritten digit classifier (MNIST) on ONNX Runtime. Every refused "
            'request gets a JSON body {"error": "..."} naming the problem.',
        },
        "servers": [{"url": "."}],
        "paths": {
            "/predict": {"post": predict(s)},
            "/predict_image": {"post": predict_image(s)},
            "/info": {
                "get": {
                    "summary": "Model metadata and the ONNX Runtime provider in use",
                    "responses": {"200": info},
                }
            },
            "/readyz": probe("Readiness probe"),
            "/livez": probe("Liveness probe"),
            "/metrics": probe("Prometheus metrics"),
        },
        "components": {"schemas": {"Error": ERROR, "Answer": ANSWER}},
    }
