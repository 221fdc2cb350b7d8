"""Pictures with no digit in them are answered as such, per image, over HTTP and by `digits score`.

Blank, one-colour, noise-only, tiny and too-little-ink pictures get no digit and a reason, while
the rest of the batch is answered as usual; answers under the model's confidence threshold (its
metadata, else 0.5) are flagged. The server runs for real; the CLI runs in-process.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from digits.cli import cli
from digits.images import load_image, to_mnist, upright_rows
from serving.session import DEFAULT_THRESHOLD, ModelError, load_model
from tests.conftest import write_linear_onnx
from tests.serving.conftest import running_server

PICTURES = {  # name -> (picture, the start of its reason; None: a digit)
    "digit": None,
    "white": (Image.new("L", (64, 64), 255), "blank"),
    "black": (Image.new("L", (64, 64), 0), "blank"),
    "grey": (Image.new("RGB", (90, 60), (128, 128, 128)), "blank"),
    "noise": (None, "noise only"),
    "tiny": (Image.new("L", (1, 1), 30), "too small"),
    "dot": (None, "too little ink"),
}


def digit_picture() -> Image.Image:
    """A dark '7' on white paper."""
    image = Image.new("L", (120, 160), 255)
    ImageDraw.Draw(image).line([(20, 30), (95, 30), (45, 140)], fill=0, width=12)
    return image


def picture(name: str) -> Image.Image:
    """The named test picture."""
    if name == "digit":
        return digit_picture()
    if name == "noise":
        rng = np.random.default_rng(5)
        return Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    if name == "dot":
        page = np.full((300, 300), 230, np.uint8)
        page[150:153, 150:153] = 10
        return Image.fromarray(page)
    return PICTURES[name][0]


def png(image: Image.Image) -> bytes:
    """PNG bytes of a picture."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def expected_reason(name: str) -> str | None:
    """The start of the reason the named picture should get."""
    return None if PICTURES[name] is None else PICTURES[name][1]


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """A directory of the test pictures as PNG files, named so they sort in PICTURES' order."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i, name in enumerate(PICTURES):
        (folder / f"{i}-{name}.png").write_bytes(png(picture(name)))
    return folder


def score(model: Path, inputs: Path, output: Path, *options: str) -> None:
    """`digits score` in-process; it must succeed."""
    args = ["score", str(model), str(inputs), "-o", str(output), "--provider", "cpu", "-q"]
    result = CliRunner().invoke(cli, [*args, *options])
    assert result.exit_code == 0, result.output


def check_rows(rows: list[dict], empty: object) -> None:
    """One row per picture: a digit and no reason, or an empty digit and the right reason."""
    assert len(rows) == len(PICTURES)
    for row, name in zip(rows, PICTURES, strict=True):
        reason = expected_reason(name)
        if reason is None:
            assert row["digit"] not in (empty, None) and row["reason"] in ("", None), row
        else:
            assert row["digit"] == empty and row["confidence"] == empty, row
            assert row["p3"] == empty and row["reason"].startswith(reason), row


def test_score_answers_each_picture_or_says_why_not_in_csv_and_jsonl(
    pictures: Path, linear_onnx: Path, tmp_path: Path
) -> None:
    for fmt in ("csv", "jsonl"):
        score(linear_onnx, pictures, tmp_path / f"out.{fmt}", "--probabilities")
    with (tmp_path / "out.csv").open(newline="") as f:
        check_rows(list(csv.DictReader(f)), "")
    json_rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for row in json_rows:  # JSONL keeps the ten probabilities in one list
        row["p3"] = None if row["probabilities"] is None else row["probabilities"][3]
    check_rows(json_rows, None)


def test_score_answers_each_picture_or_says_why_not_in_parquet(
    pictures: Path, linear_onnx: Path, tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="needs pyarrow: digits[parquet]")
    for fmt in ("csv", "parquet"):
        score(linear_onnx, pictures, tmp_path / f"out.{fmt}", "--probabilities")
    table = pq.read_table(tmp_path / "out.parquet")
    with (tmp_path / "out.csv").open(newline="") as f:
        assert table.column_names == next(csv.reader(f))  # the same columns in every format
    check_rows(table.to_pylist(), None)
    assert str(table.schema.field("digit").type) == "int64"


def test_score_counts_no_digit_as_wrong_when_labels_are_known(
    pictures: Path, linear_onnx: Path, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("7\n" * len(PICTURES))
    args = ["score", str(linear_onnx), str(pictures), "-o", str(tmp_path / "o.csv")]
    result = CliRunner().invoke(cli, [*args, "--provider", "cpu", "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    assert f"no digit found in {len(PICTURES) - 1} labelled images" in result.output


def test_threshold_and_deskew_come_from_the_models_metadata(tmp_path: Path) -> None:
    plain = load_model(write_linear_onnx(tmp_path / "plain.onnx"), "cpu")
    assert (plain.threshold, plain.deskew) == (DEFAULT_THRESHOLD, False)
    meta = {"confidence_threshold": "0.8", "deskew": "true"}
    chosen = load_model(write_linear_onnx(tmp_path / "chosen.onnx", metadata=meta), "cpu")
    assert (chosen.threshold, chosen.deskew) == (0.8, True)
    for key, value in [("confidence_threshold", "1.5"), ("confidence_threshold", "high"),
                       ("deskew", "maybe")]:  # fmt: skip
        bad = write_linear_onnx(tmp_path / "bad.onnx", metadata={key: value})
        with pytest.raises(ModelError, match=f"metadata {key} must be"):
            load_model(bad, "cpu")


def test_score_flags_answers_under_the_models_threshold(pictures: Path, tmp_path: Path) -> None:
    flagged = {}
    for threshold in ("0", "1"):
        model = write_linear_onnx(tmp_path / "m.onnx", metadata={"confidence_threshold": threshold})
        score(model, pictures, tmp_path / "out.jsonl")
        rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        expected = [r["digit"] is not None and r["confidence"] < float(threshold) for r in rows]
        assert [r["low_confidence"] for r in rows] == expected
        flagged[threshold] = sum(expected)
    assert flagged == {"0": 0, "1": 1}  # the digit's answer, under certainty


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("no-digit")
    model = write_linear_onnx(folder / "m.onnx", seed=2, metadata={"confidence_threshold": "0.3"})
    with running_server(model, folder / "server.log") as base:
        yield base


@pytest.mark.e2e
def test_http_answers_the_batch_with_null_digits_and_reasons(url: str) -> None:
    files = [("images", (f"{n}.png", png(picture(n)), "image/png")) for n in PICTURES]
    response = httpx.post(f"{url}/predict_image", files=files)
    assert response.status_code == 200, response.text
    answer = response.json()
    for i, name in enumerate(PICTURES):
        reason = expected_reason(name)
        if reason is None:
            assert isinstance(answer["digits"][i], int) and answer["reasons"][i] is None
            assert len(answer["probabilities"][i]) == 10
            low = max(answer["probabilities"][i]) < 0.3
            assert answer["low_confidence"][i] is low
        else:
            assert answer["digits"][i] is None and answer["probabilities"][i] is None
            assert answer["reasons"][i].startswith(reason), answer["reasons"][i]
            assert answer["low_confidence"][i] is False
    assert not to_mnist(load_image(png(picture("white")))).any()


@pytest.mark.e2e
def test_http_blank_pixel_rows_have_no_digit_and_none_is_counted(url: str) -> None:
    def none_count() -> float:
        text = httpx.get(f"{url}/metrics").text
        line = next(
            x for x in text.splitlines() if x.startswith('digits_predictions_total{digit="none"}')
        )
        return float(line.split()[-1])

    before = none_count()
    rows = [[0] * 784, [255] * 784, np.arange(784).__mod__(256).tolist()]
    answer = httpx.post(f"{url}/predict", json={"pixels": rows}).json()
    assert answer["digits"][:2] == [None, None] and isinstance(answer["digits"][2], int)
    assert answer["reasons"][0].startswith("blank") and answer["reasons"][2] is None
    assert httpx.get(f"{url}/info").json()["confidence_threshold"] == "0.3"
    assert none_count() == before + 2


def test_a_model_trained_deskewed_sees_every_input_deskewed(tmp_path: Path) -> None:
    path = write_linear_onnx(tmp_path / "d.onnx", seed=4, metadata={"deskew": "true"})
    X = np.zeros((2, 28, 28), np.float32)
    for row in range(4, 24):  # two bars leaning opposite ways
        X[0, row, 10 + row // 2 : 13 + row // 2] = 255
        X[1, row, 22 - row // 2 : 25 - row // 2] = 255
    X = X.reshape(2, 784)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    upright = session.run(["probabilities"], {"pixels": upright_rows(X)})[0]
    slanted = session.run(["probabilities"], {"pixels": X})[0]
    np.testing.assert_allclose(load_model(path, "cpu").predict(X)[1], upright, atol=1e-6)
    assert not np.allclose(upright, slanted, atol=1e-3)
