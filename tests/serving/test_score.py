"""digits score: output rows against a numpy oracle, every input kind, bad inputs, interruption."""

from __future__ import annotations

import contextlib
import csv
import errno
import gzip
import io
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from digits.cli import cli
from digits.idx import encode_idx
from digits.images import to_mnist
from serving.answers import Answers, answer_rows
from serving.scoring.rows import format_rows
from serving.scoring.summary import summarize, tally
from serving.session import cuda_problem
from tests.conftest import assert_one_line_error, make_digits
from tests.serving.conftest import oracle, read_csv_rows, run

DIGITS = Path(sys.executable).parent / "digits"


def test_format_rows_csv_matches_probabilities_and_quotes_ids() -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(10), size=5).astype(np.float32)
    ids = np.array([b"a.idx:0", b"a.idx:1", b'odd,"name".png', b"b:3", b"c.png"], dtype="S")
    text = format_rows(ids, probs, answered(probs), "csv", True).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert [r[0] for r in rows] == [i.decode() for i in ids]
    assert [int(r[1]) for r in rows] == probs.argmax(axis=1).tolist()
    np.testing.assert_allclose([float(r[2]) for r in rows], probs.max(axis=1), atol=5e-7)
    np.testing.assert_allclose(np.array([r[3:13] for r in rows], float), probs, atol=5e-7)
    assert rows[0][2] == f"{probs[0].max():.6f}"
    assert [r[13:] for r in rows] == [["", str(p < 0.5).lower()] for p in probs.max(axis=1)]


def answered(P: np.ndarray, reasons: list[str | None] | None = None) -> Answers:
    """The answers for probabilities P with these reasons for no digit (none by default)."""
    return answer_rows(P, reasons or [None] * len(P), 0.5)


def test_format_rows_leave_digit_and_probabilities_empty_where_there_is_no_digit() -> None:
    probs = np.eye(10, dtype=np.float32)[[3, 7, 1]] * 0.6 + 0.04
    reasons = [None, "blank: one colour", 'noise, "only"']
    answers = answered(probs, reasons)
    rows = list(csv.reader(io.StringIO(format_rows(IDS, probs, answers, "csv", True).decode())))
    assert [r[1] for r in rows] == ["3", "", ""] and [r[2] for r in rows][1:] == ["", ""]
    assert rows[1][3:13] == [""] * 10 and float(rows[0][6]) == pytest.approx(0.64)
    assert [r[13] for r in rows] == ["", "blank: one colour", 'noise, "only"']
    assert [r[14] for r in rows] == ["false", "false", "false"]
    lines = format_rows(IDS, probs, answers, "jsonl", True).decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["digit"] for r in records] == [3, None, None]
    assert records[1]["confidence"] is None and records[2]["probabilities"] is None
    assert [r["reason"] for r in records] == reasons
    plain = json.loads(format_rows(IDS[1:2], probs[1:2], answered(probs[1:2], reasons[1:2]),
                                   "jsonl", False))  # fmt: skip
    assert plain == {"source": "b", "digit": None, "confidence": None,
                     "reason": "blank: one colour", "low_confidence": False}  # fmt: skip


IDS = np.array([b"a", b"b", b"c"], dtype="S")


def test_low_confidence_is_flagged_under_the_threshold() -> None:
    probs = np.zeros((3, 10), np.float32)
    probs[0, [2, 5, 7]] = 0.45, 0.35, 0.2  # the top probability under 0.5
    probs[1, [2, 5]] = 0.5  # exactly at it
    probs[2, [2, 5]] = 0.9, 0.1
    text = format_rows(IDS, probs, answered(probs), "jsonl", False).decode()
    assert [json.loads(line)["low_confidence"] for line in text.splitlines()] == [
        True, False, False
    ]  # fmt: skip


def test_format_rows_jsonl_is_valid_json_even_for_odd_names() -> None:
    probs = np.eye(10, dtype=np.float32)[[3, 7]]
    ids = np.array([b'q"uote\\back', b"new\nline"], dtype="S")
    lines = format_rows(ids, probs, answered(probs), "jsonl", True).decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["source"] for r in records] == ['q"uote\\back', "new\nline"]
    assert [r["digit"] for r in records] == [3, 7] and records[0]["confidence"] == 1.0
    assert records[1]["probabilities"] == probs[1].tolist()
    plain = format_rows(ids[:1].astype("S3"), probs[:1], answered(probs[:1]), "jsonl", False)
    assert json.loads(plain) == {
        "source": 'q"u', "digit": 3, "confidence": 1.0, "reason": None, "low_confidence": False
    }  # fmt: skip


def test_summary_counts_accuracy_and_the_worst_confusions() -> None:
    labels = np.array([4, 4, 4, 9, 9, 7, 1, 1])
    digits = np.array([9, 9, 4, 4, 9, 1, 1, 1])
    answered = np.ones(8, bool)
    matrix = tally(labels, digits, answered)
    assert matrix.sum() == 8 and matrix[4, 9] == 2 and np.trace(matrix) == 4
    text = summarize(matrix)
    assert text.splitlines()[0] == "accuracy 0.5000 (4/8 labelled images)"
    assert text.endswith("most confused: 4→9 (2), 7→1 (1), 9→4 (1)")
    assert summarize(tally(labels, labels, answered)).endswith("most confused: none")
    answered[[2, 6]] = False  # a right answer and a right one: no digit found instead
    matrix = tally(labels, digits, answered)
    assert matrix[4, 10] == matrix[1, 10] == 1 and matrix[4, 4] == 0 and matrix.sum() == 8
    assert summarize(matrix).splitlines()[:2] == [
        "accuracy 0.2500 (2/8 labelled images)",
        "no digit found in 2 labelled images (counted as wrong)",
    ]


def test_idx_with_labels_beside_matches_oracle_and_prints_accuracy(
    idx_pair, linear_onnx: Path, tmp_path: Path
) -> None:
    images, x, y = idx_pair
    out = tmp_path / "out" / "scores.csv"
    result = run(linear_onnx, images, "-o", out, "--batch-size", "16")
    assert result.exit_code == 0, result.output
    rows = read_csv_rows(out)
    expected = oracle(linear_onnx, x)
    assert [r["source"] for r in rows] == [f"{images}:{i}" for i in range(50)]
    assert [int(r["digit"]) for r in rows] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], expected.max(1), atol=1e-5)
    right = int((expected.argmax(axis=1) == y).sum())
    assert f"accuracy {right / 50:.4f} ({right}/50 labelled images)" in result.stdout
    assert "most confused" in result.stdout and "confusion" in result.stdout


def test_mixed_inputs_in_one_call(linear_onnx: Path, tmp_path: Path) -> None:
    x, y = make_digits(12, seed=4)
    flat = x.reshape(12, 784)
    (tmp_path / "a-images-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(x[:3])))
    np.save(tmp_path / "b.npy", flat[3:5].astype(np.float32))
    np.savez(tmp_path / "c.npz", x=flat[5:7], y=y[5:7].astype(np.int64))
    np.savetxt(tmp_path / "d.csv", np.column_stack([y[7:9], flat[7:9]]), fmt="%d", delimiter=",")
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i in range(9, 12):
        Image.fromarray(x[i]).save(pngs / f"{i}.png")
    inputs = ["a-images-idx3-ubyte.gz", "b.npy", "c.npz", "d.csv", "pngs"]
    out = tmp_path / "mixed.jsonl"
    result = run(linear_onnx, *(tmp_path / i for i in inputs), "-o", out, "-q")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12 and result.stdout == ""
    assert records[3]["source"] == f"{tmp_path / 'b.npy'}:0"
    assert records[9]["source"] == str(pngs / "10.png")  # sorted by name: 10, 11, 9
    pixels = np.concatenate(
        [flat[:9], [to_mnist(Image.open(pngs / f"{i}.png")).reshape(784) for i in (10, 11, 9)]]
    )
    assert [r["digit"] for r in records] == oracle(linear_onnx, pixels).argmax(axis=1).tolist()


def test_probabilities_and_labels_option(idx_pair, linear_onnx: Path, tmp_path: Path) -> None:
    images, x, y = idx_pair
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    np.savetxt(tmp_path / "truth.txt", y, fmt="%d")
    out = tmp_path / "p.csv"
    result = run(
        linear_onnx, images, "-o", out, "--probabilities", "--labels", tmp_path / "truth.txt"
    )
    assert result.exit_code == 0, result.output
    rows = read_csv_rows(out)
    p_columns = [f"p{i}" for i in range(10)]
    assert list(rows[0]) == [
        "source",
        "digit",
        "confidence",
        *p_columns,
        "reason",
        "low_confidence",
    ]
    probs = np.array([[float(r[f"p{i}"]) for i in range(10)] for r in rows])
    np.testing.assert_allclose(probs, oracle(linear_onnx, x), atol=1e-5)
    assert "accuracy" in result.stdout
    np.savetxt(tmp_path / "short.txt", y[:10], fmt="%d")
    short = run(linear_onnx, images, "-o", tmp_path / "s.csv", "--labels", tmp_path / "short.txt")
    assert short.exit_code == 1 and "--labels has 10 labels" in short.stderr
    assert not (tmp_path / "s.csv").exists()


def write_bad_inputs(directory: Path, x: np.ndarray) -> list[Path]:
    """A truncated gzip IDX (fails after some rows), a bad PNG, a missing file."""
    cut = directory / "cut-images-idx3-ubyte.gz"
    cut.write_bytes(gzip.compress(encode_idx(x))[:-100])
    bad = directory / "bad.png"
    bad.write_bytes(b"\x89PNG but not really")
    return [cut, bad, directory / "missing.npy"]


def test_bad_input_stops_with_one_line_and_no_output(
    idx_pair, linear_onnx: Path, tmp_path: Path
) -> None:
    images, x, _ = idx_pair
    for bad in write_bad_inputs(tmp_path, x):
        out = tmp_path / "never.csv"
        result = run(linear_onnx, images, bad, "-o", out, "--batch-size", "8")
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
        assert bad.name in result.stderr and "Traceback" not in result.output
        assert not out.exists() and not list(tmp_path.glob(".never.csv*"))


def test_skip_bad_lists_skipped_inputs_and_keeps_only_good_rows(
    idx_pair, linear_onnx: Path, tmp_path: Path
) -> None:
    images, x, _ = idx_pair
    bad = write_bad_inputs(tmp_path, x)
    good_png = tmp_path / "good.png"
    Image.fromarray(x[0]).save(good_png)
    out = tmp_path / "kept.csv"
    result = run(linear_onnx, bad[0], images, bad[1], good_png, bad[2], "-o", out, "--skip-bad",
                 "--batch-size", "8")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "skipped 3 bad input(s)" in result.stderr
    assert all(p.name in result.stderr for p in bad)
    sources = [r["source"] for r in read_csv_rows(out)]
    assert sources == [f"{images}:{i}" for i in range(50)] + [str(good_png)]  # cut file undone


def drawn_seven() -> Image.Image:
    """A thick dark '7' on light paper, as a phone photo of one holds it."""
    image = Image.new("L", (120, 160), 255)
    ImageDraw.Draw(image).line([(20, 30), (90, 30), (45, 140)], fill=0, width=12)
    return image


def test_webp_files_score_like_the_png_of_the_same_picture(
    linear_onnx: Path, tmp_path: Path
) -> None:
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    drawn_seven().save(pictures / "a.png")
    drawn_seven().save(pictures / "b-lossless.webp", lossless=True)
    drawn_seven().save(pictures / "c-lossy.webp", quality=80)
    out = tmp_path / "scores.csv"
    result = run(linear_onnx, pictures, "-o", out, "--probabilities", "-q")
    assert result.exit_code == 0, result.output
    rows = read_csv_rows(out)
    assert [Path(r["source"]).name for r in rows] == ["a.png", "b-lossless.webp", "c-lossy.webp"]
    P = np.array([[float(r[f"p{i}"]) for i in range(10)] for r in rows])
    expected = oracle(linear_onnx, to_mnist(drawn_seven()).reshape(1, 784))
    np.testing.assert_allclose(P[:2], np.repeat(expected, 2, axis=0), atol=1e-6)
    np.testing.assert_allclose(P[2], expected[0], atol=0.02)  # lossy: edges a level or two off
    assert {r["digit"] for r in rows} == {str(expected.argmax())}


def broken_webp(name: str) -> bytes:
    """A real WebP from Pillow, cut short ("cut") or with a header that lies about its size."""
    buffer = io.BytesIO()
    drawn_seven().save(buffer, "WEBP", lossless=True)
    data = buffer.getvalue()
    if name == "cut":
        return data[: len(data) // 2]
    bits = struct.unpack("<I", data[21:25])[0] & ~0xFFFFFFF  # VP8L: 14-bit sizes minus one
    return data[:21] + struct.pack("<I", bits | 639 | 479 << 14) + data[25:]  # 640×480


@pytest.mark.parametrize("name", ["cut", "lying"])
def test_bad_webp_is_one_line_or_skipped(linear_onnx: Path, tmp_path: Path, name: str) -> None:
    bad = tmp_path / f"{name}.webp"
    bad.write_bytes(broken_webp(name))
    out = tmp_path / "scores.csv"
    result = run(linear_onnx, bad, "-o", out)
    assert_one_line_error(result, f"{bad}: corrupt or truncated image (")
    assert not out.exists()
    good = tmp_path / "good.webp"
    drawn_seven().save(good, lossless=True)
    result = run(linear_onnx, bad, good, "-o", out, "--skip-bad")
    assert result.exit_code == 0 and "skipped 1 bad input(s)" in result.stderr, result.output
    assert [r["source"] for r in read_csv_rows(out)] == [str(good)]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["in", "-o", "out.txt"], 2, "use a .csv, .jsonl or .parquet file"),
        (["in", "-o", "out.csv", "--batch-size", "0"], 2, "batch-size"),
    ],
)
def test_bad_options_exit_2(linear_onnx: Path, args, code, message) -> None:
    result = run(linear_onnx, *args)
    assert result.exit_code == code and message in result.stderr


def test_bad_model_is_one_line(idx_pair, tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    for model, message in ((tmp_path / "none.onnx", "model not found"), (junk, "not a loadable")):
        result = run(model, idx_pair[0], "-o", tmp_path / "o.csv")
        assert result.exit_code == 1 and message in result.stderr
        assert result.stderr.count("\n") == 1


def sparse_idx(path: Path, n: int) -> Path:
    """An IDX file of n blank images, written sparse so it costs no disk or time."""
    with path.open("wb") as f:
        f.write(struct.pack(">HBB3I", 0, 0x08, 3, n, 28, 28))
        f.truncate(16 + n * 784)
    return path


def npy_header(n: int) -> bytes:
    """The header of a .npy file holding n uint8 images of 784 pixels."""
    buffer = io.BytesIO()
    fields = {"descr": "|u1", "fortran_order": False, "shape": (n, 784)}
    np.lib.format.write_array_header_1_0(buffer, fields)
    return buffer.getvalue()


def default_sigint() -> None:
    """In the child: SIGINT back to its default, as a terminal's foreground job has it.

    A shell that runs the suite in the background (`make test &`) ignores SIGINT, the child
    inherits that, and Python then installs no KeyboardInterrupt handler at all.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def open_write_end(fifo: Path, proc: subprocess.Popen, deadline: float) -> int:
    """A non-blocking write end of the FIFO, once `proc` has opened it for reading."""
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name
)
def test_interrupted_run_leaves_no_partial_output(linear_onnx: Path, tmp_path: Path, sig) -> None:
    # The input is a FIFO that never ends while the test holds its write end, so the run cannot
    # finish before the signal however fast the machine is. It reads as .npy: the IDX reader
    # opens a file twice and checks its size, which a FIFO cannot serve.
    fifo, out, n = tmp_path / "endless.npy", tmp_path / "out.csv", 2_000_000
    os.mkfifo(fifo)
    cmd = [DIGITS, "score", linear_onnx, fifo, "-o", out, "--batch-size", "64", "--provider", "cpu"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=default_sigint
    )
    deadline = time.monotonic() + 120
    fd = open_write_end(fifo, proc, deadline)
    try:
        batch = make_digits(64, seed=9)[0].tobytes()
        pending, sent = npy_header(n), 0
        while not any(p.stat().st_size for p in tmp_path.glob(".out.csv.*.tmp")):  # rows written
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            if not pending:
                pending, sent = batch, sent + 64
                assert sent < n  # the run never gets all the images it was promised
            if select.select([], [fd], [], 0.1)[1]:
                pending = pending[os.write(fd, pending) :]
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
    finally:
        os.close(fd)  # only now can the reader see the end of its input
    errors = proc.stderr.read().decode()
    proc.stderr.close()
    # SIGTERM exits 128 + 15 (exit_on_sigterm), SIGINT is click's "Aborted!" (1), SIGKILL kills.
    expected = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 1, signal.SIGKILL: -sig}
    assert code == expected[sig], errors
    assert "truncated" not in errors  # stopped by the signal, not by the end of the input
    assert not out.exists()
    leftovers = list(tmp_path.glob(".out.csv.*"))
    if sig == signal.SIGKILL:  # nothing can clean up after SIGKILL: only the hidden temp remains
        assert len(leftovers) == 1 and re.fullmatch(r"\.out\.csv\..+\.tmp", leftovers[0].name)
    else:
        assert leftovers == []


def peak_rss_bytes(pid: int) -> int:
    """VmHWM of a running process: the peak RSS of its address space since exec."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


@pytest.mark.slow
def test_million_image_idx_streams_in_bounded_memory(linear_onnx: Path, tmp_path: Path) -> None:
    n = 1_000_000
    images = sparse_idx(tmp_path / "million-images-idx3-ubyte", n)  # 784 MB of pixels
    out = tmp_path / "million.csv"
    proc = subprocess.Popen(
        [DIGITS, "score", linear_onnx, images, "-o", out, "-q", "--provider", "cpu"]
    )
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(OSError, StopIteration):
            peak = max(peak, peak_rss_bytes(proc.pid))
        time.sleep(0.02)
    assert proc.returncode == 0
    assert out.stat().st_size > n * len(f"{images}:0,0,0.000000\n")
    assert 0 < peak < min(1 << 30, images.stat().st_size // 2)  # never holds the file


def test_cuda_request_without_a_usable_gpu_is_one_line(idx_pair, linear_onnx, tmp_path) -> None:
    if cuda_problem() is None:
        pytest.skip("CUDA works here")
    cmd = ["score", str(linear_onnx), str(idx_pair[0]), "-o", str(tmp_path / "o.csv")]
    result = CliRunner().invoke(cli, [*cmd, "--provider", "cuda"])
    assert result.exit_code == 1 and "CUDA provider requested" in result.stderr
    assert not (tmp_path / "o.csv").exists()
