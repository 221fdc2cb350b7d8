"""What operations see of a started server: /metrics after a few requests, log lines, JSON logs."""

from __future__ import annotations

import functools
import io
import json
import re
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from digits.images import load_image, prepare
from tests.conftest import write_linear_onnx
from tests.serving.conftest import running_server

pytestmark = pytest.mark.e2e

# A loaded machine can starve the server for seconds; a request waits as long as it takes.
get, post = (functools.partial(call, timeout=120) for call in (httpx.get, httpx.post))


def samples(url: str) -> dict[str, float]:
    """Every digits_* sample on /metrics, by name with labels."""
    text = get(f"{url}/metrics").text
    return {k: float(v) for k, v in re.findall(r"^(digits_\S+) (\S+)$", text, re.M)}


def png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 grayscale image."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_metrics_after_a_few_requests(tmp_path: Path) -> None:
    model = write_linear_onnx(tmp_path / "digits.onnx", seed=5)
    pixels = np.random.default_rng(0).integers(0, 256, size=(7, 784)).astype(np.float32)
    image = png(pixels[0].reshape(28, 28).astype(np.uint8))  # as a picture, noise: no digit
    with running_server(model, tmp_path / "server.log") as url:
        assert post(f"{url}/predict", json={"pixels": pixels[:3].tolist()}).is_success
        assert post(f"{url}/predict", json={"pixels": pixels[3:].tolist()}).is_success
        files = [("images", ("x.png", image, "image/png"))] * 2
        assert post(f"{url}/predict_image", files=files).is_success
        assert post(f"{url}/predict", json={"pixels": []}).status_code == 400
        m = samples(url)
    # The oracle: the same model on the same pixels, in a separate session.
    assert prepare(load_image(image)).reason is not None
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    P = session.run(["probabilities"], {"pixels": pixels})[0]
    by_digit = [m[f'digits_predictions_total{{digit="{d}"}}'] for d in range(10)]
    assert by_digit == np.bincount(P.argmax(axis=1), minlength=10).tolist()
    assert m['digits_predictions_total{digit="none"}'] == 2  # the two noise pictures
    assert m["digits_low_confidence_answers_total"] == int((P.max(axis=1) < 0.5).sum())
    assert m["digits_confidence_count"] == 7  # answered digits only
    assert m["digits_confidence_sum"] == pytest.approx(P.max(axis=1).sum(), rel=1e-5)
    assert m["digits_image_decode_seconds_count"] == 2
    assert m["digits_batch_size_count"] == 3 and m["digits_batch_size_sum"] == 9
    assert m['digits_batch_size_bucket{le="4.0"}'] == 3  # rows 3, 4 and 2
    assert m['digits_refused_requests_total{route="/predict",status="400"}'] == 1
    assert m['digits_requests_total{route="/predict",status="200"}'] == 2
    assert m['digits_requests_total{route="/predict",status="400"}'] == 1
    assert m['digits_requests_total{route="/predict_image",status="200"}'] == 1
    assert m['digits_request_seconds_count{route="/predict"}'] == 3


def broken_model(path: Path) -> Path:
    """A model with the digits contract that fails at run time (a reshape the Gemm rejects)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    W = numpy_helper.from_array(np.zeros((784, 10), np.float32), "W")
    shape = numpy_helper.from_array(np.array([2, -1], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["pixels", "shape"], ["halves"]),
            helper.make_node("MatMul", ["halves", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "broken",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 784])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None),
        ],
        [W, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_json_logs_one_line_per_4xx_and_a_traceback_for_5xx(tmp_path: Path) -> None:
    model, log = broken_model(tmp_path / "broken.onnx"), tmp_path / "server.log"
    with running_server(model, log, json_logs=1) as url:
        refused = post(f"{url}/predict", json={"pixels": [[1] * 10]})
        failed = post(f"{url}/predict", json={"pixels": [[1] * 784]})
        time.sleep(0.5)  # the worker's lines reach the file through BentoML's arbiter
    assert refused.status_code == 400 and failed.status_code == 500
    assert "server log" in failed.json()["error"]  # BentoML's words: no internals to the client
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    refusals = [line for line in lines if "refused" in line["message"]]
    assert len(refusals) == 1
    assert refusals[0]["level"] == "WARNING" and "traceback" not in refusals[0]
    assert (
        refusals[0]["message"]
        == "refused /predict 400: pixels must have shape N×784 or N×28×28, got [1, 10]"
    )
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1 and "Traceback" in errors[0]["traceback"]
    assert "/predict" in errors[0]["message"]


def bentoml_requests(url: str, route: str) -> float:
    """BentoML's own request count for a route on /metrics (0 when it has none)."""
    text = get(f"{url}/metrics").text
    pattern = rf'^bentoml_\w*request_total{{[^}}]*endpoint="{route}"[^}}]*}} (\S+)$'
    found = re.findall(pattern, text, re.M)
    return sum(map(float, found))


@pytest.mark.parametrize("access_log", [0, 1])
def test_prediction_routes_answer_alike_with_or_without_bentomls_access_log(
    tmp_path: Path, access_log: int
) -> None:
    model, log = write_linear_onnx(tmp_path / "digits.onnx", seed=5), tmp_path / "server.log"
    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 784)).tolist()
    with running_server(model, log, access_log=access_log) as url:
        answer = post(f"{url}/predict", json={"pixels": pixels})
        refused = post(f"{url}/predict", json={"pixels": [[1] * 10]})
        assert get(f"{url}/info").is_success  # a route of BentoML's app either way
        # Counted once the answer is sent: wait for both, as a scraper would see them eventually.
        wait_for(url, 'digits_requests_total{route="/predict",status="200"}', 1)
        m = wait_for(url, 'digits_requests_total{route="/predict",status="400"}', 1)
        counted_by_bentoml = bentoml_requests(url, "/predict")
        time.sleep(0.5)  # the worker's lines reach the file through BentoML's arbiter
    assert answer.status_code == 200 and len(answer.json()["digits"]) == 2
    assert refused.status_code == 400 and "N×784" in refused.json()["error"]
    assert m['digits_requests_total{route="/predict",status="200"}'] == 1
    assert m['digits_requests_total{route="/predict",status="400"}'] == 1
    # Our layers sit among BentoML's middlewares (add_asgi_middleware): its metrics count the
    # routes too, and its access log, when switched on, has their lines.
    assert counted_by_bentoml == 2
    assert ("method=POST,path=/predict," in log.read_text()) == bool(access_log)


def test_a_body_that_never_completes_gets_504_and_the_server_goes_on(tmp_path: Path) -> None:
    model = write_linear_onnx(tmp_path / "digits.onnx", seed=5)
    with running_server(model, tmp_path / "server.log", timeout_s=1) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as client:
            head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            client.sendall(f'{head}Content-Length: 5000\r\n\r\n{{"pixels": [['.encode())
            response = b""
            while b"\r\n\r\n" not in response or not response.endswith(b"}"):
                if not (data := client.recv(4096)):
                    break
                response += data
        ok = post(f"{url}/predict", json={"pixels": [[0] * 784]})
        m = wait_for(url, 'digits_requests_total{route="/predict",status="504"}', 1)
    status, _, body = response.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 504"), response
    assert json.loads(body) == {"error": "not answered within 1 s"}
    assert ok.status_code == 200
    assert m['digits_requests_total{route="/predict",status="504"}'] == 1
    assert m['digits_refused_requests_total{route="/predict",status="504"}'] == 1


HALF_BODIES = {  # route -> (content type, the first part of a body that says it is longer)
    "/predict": ("application/json", b'{"pixels": [[' + b"0, " * 300),
    "/predict_image": (
        "multipart/form-data; boundary=b",
        b'--b\r\nContent-Disposition: form-data; name="images"; filename="x.png"\r\n\r\n\x89PNG',
    ),
}


def send_half_and_leave(url: str, route: str) -> None:
    """Send a request head and part of its body over a raw socket, then close the connection."""
    content_type, part = HALF_BODIES[route]
    host, port = url.removeprefix("http://").split(":")
    head = f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
    with socket.create_connection((host, int(port)), timeout=20) as client:
        client.sendall(f"{head}Content-Length: {len(part) * 4}\r\n\r\n".encode() + part)
        time.sleep(1.0)  # the server is reading the body when the client goes


def wait_for(url: str, name: str, value: float) -> dict[str, float]:
    """/metrics' digits_* samples once `name` reaches `value` (or after 60 s: a loaded machine
    can starve the server for seconds, and the wait ends as soon as the count is there)."""
    deadline = time.monotonic() + 60
    while (m := samples(url)).get(name, 0) < value and time.monotonic() < deadline:
        time.sleep(0.1)
    return m


@pytest.mark.parametrize("route", HALF_BODIES)
def test_a_client_leaving_mid_body_is_one_line_and_counted(tmp_path: Path, route: str) -> None:
    model, log = write_linear_onnx(tmp_path / "digits.onnx", seed=5), tmp_path / "server.log"
    with running_server(model, log) as url:
        send_half_and_leave(url, route)
        m = wait_for(url, f'digits_requests_total{{route="{route}",status="499"}}', 1)
        assert post(f"{url}/predict", json={"pixels": [[0] * 784]}).status_code == 200
        time.sleep(0.5)  # the worker's lines reach the file through BentoML's arbiter
    assert m[f'digits_requests_total{{route="{route}",status="499"}}'] == 1
    assert m[f'digits_refused_requests_total{{route="{route}",status="499"}}'] == 1
    text = log.read_text()
    lines = [line for line in text.splitlines() if "client went away" in line]
    assert len(lines) == 1 and "WARNING" in lines[0], text[-3000:]
    assert f"refused {route} 499: client went away before sending its whole body" in lines[0]
    assert "Traceback" not in text and "[ERROR]" not in text and "ClientDisconnect" not in text
