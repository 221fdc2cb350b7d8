"""The published OpenAPI document is the real contract: schemathesis finds nothing against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_linear_onnx
from tests.serving.conftest import running_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MAX_IMAGES = 1024  # the default: schemathesis then cannot afford to build batches over the limit
CONFIG = ROOT / "tests" / "serving" / "schemathesis.toml"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = write_linear_onnx(tmp_path_factory.mktemp("model") / "digits.onnx", seed=3)
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(model, log) as base:
        yield base


def schemathesis(
    url: str, examples: int, tmp_path: Path, timeout: int = 900
) -> subprocess.CompletedProcess:
    """`st run URL/docs.json --checks all` with real images for the image route (our hooks)."""
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.serving.schemathesis_hooks"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    st = Path(sys.executable).with_name("st")
    command = [str(st), "--config-file", str(CONFIG), "run", f"{url}/docs.json"]
    command += ["--checks", "all", "--seed", "1"]
    command += ["--max-examples", str(examples), "--report", "junit"]
    command += ["--report-dir", str(tmp_path), "--no-color"]
    # In tmp_path: schemathesis keeps a cache directory wherever it runs.
    return subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout
    )


def test_document_states_the_contract(url: str) -> None:
    document = httpx.get(f"{url}/docs.json").json()
    predict = document["paths"]["/predict"]["post"]
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    pixels = body["properties"]["pixels"]
    assert body["required"] == ["pixels"] and len(body["example"]["pixels"][0]) == 784
    as_rows, as_images = pixels["oneOf"]
    assert as_rows["maxItems"] == as_images["maxItems"] == MAX_IMAGES
    assert as_rows["items"]["minItems"] == as_rows["items"]["maxItems"] == 784
    assert as_rows["items"]["items"] == {"type": "number", "minimum": 0, "maximum": 255}
    assert as_images["items"]["items"]["maxItems"] == 28
    form = document["paths"]["/predict_image"]["post"]["requestBody"]["content"]
    files = form["multipart/form-data"]["schema"]["properties"]["images"]
    # An empty file is refused like any unreadable image (400): the document says files have bytes.
    assert files["items"] == {"type": "string", "format": "binary", "minLength": 1}
    for status in ("400", "413", "415", "503"):
        error = predict["responses"][status]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/Error"}
    assert document["components"]["schemas"]["Error"]["required"] == ["error"]
    answer = document["components"]["schemas"]["Answer"]
    assert {"reasons", "low_confidence"} <= set(answer["required"])
    for field in ("digits", "probabilities", "reasons"):  # null for an image with no digit
        assert answer["properties"][field]["items"]["nullable"] is True


def test_schemathesis_finds_nothing(url: str, tmp_path: Path) -> None:
    result = schemathesis(url, 60, tmp_path)
    assert result.returncode == 0, result.stdout[-6000:]
    assert "No issues found" in result.stdout


@pytest.mark.slow
@pytest.mark.long  # schemathesis is single-threaded: `make test` gives it a core of its own
# ~8 min of one core; the limits catch a hang, not a busy machine (shared cores stretch it).
@pytest.mark.timeout(2400)
def test_schemathesis_finds_nothing_in_1000_examples_per_operation(
    url: str, tmp_path: Path
) -> None:
    result = schemathesis(url, 1000, tmp_path, timeout=2300)
    assert result.returncode == 0, result.stdout[-6000:]
    assert "No issues found" in result.stdout
