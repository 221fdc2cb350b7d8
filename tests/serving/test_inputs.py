"""scoring.inputs: each reader streams the same pixels, ids and labels; bad files: InputError."""

from __future__ import annotations

import gzip
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digits.idx import encode_idx
from digits.images import to_mnist
from serving.scoring.inputs import (
    InputError,
    expand_inputs,
    load_labels,
    read_file,
    read_idx_stream,
    read_images,
    read_parquet_stream,
    row_count,
)
from tests.conftest import make_digits

N = 37  # not a multiple of the batch, so the last chunk is short


@pytest.fixture
def digits() -> tuple[np.ndarray, np.ndarray]:
    """N fixture images (N, 28, 28) uint8 and their labels."""
    return make_digits(N, seed=5)


def collect(path: Path, batch: int = 8) -> tuple[list[bytes], np.ndarray, np.ndarray | None]:
    """All ids, pixels and labels a reader streams, checking the chunk size on the way."""
    chunks = list(read_file(path, batch))
    assert all(len(c.ids) <= batch for c in chunks) and len(chunks) == -(-N // batch)
    labels = [c.labels for c in chunks]
    return (
        [i for c in chunks for i in c.ids],
        np.concatenate([c.pixels for c in chunks]),
        None if labels[0] is None else np.concatenate(labels),
    )


@pytest.mark.parametrize("compress", [False, True])
def test_idx_streams_images_and_the_labels_beside_them(digits, tmp_path: Path, compress) -> None:
    x, y = digits
    suffix = ".gz" if compress else ""
    write = gzip.compress if compress else bytes
    images = tmp_path / f"t10k-images-idx3-ubyte{suffix}"
    images.write_bytes(write(encode_idx(x)))
    (tmp_path / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(write(encode_idx(y)))
    ids, pixels, labels = collect(images)
    np.testing.assert_array_equal(pixels, x.reshape(N, 784))
    np.testing.assert_array_equal(labels, y)
    assert ids[0] == f"{images}:0".encode() and ids[-1] == f"{images}:{N - 1}".encode()
    assert row_count([images]) == N


@pytest.mark.parametrize("compress", [False, True])
def test_idx_streams_from_a_fifo_read_only_once(digits, tmp_path: Path, compress) -> None:
    data = encode_idx(digits[0])
    data = gzip.compress(data) if compress else data
    fifo = tmp_path / "piped-images-idx3-ubyte"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()  # blocks until the reader opens the FIFO, then writes everything once
    try:
        assert row_count([fifo]) is None  # sizing must not consume what the scorer reads
        _, pixels, labels = collect(fifo)
    finally:
        writer.join(timeout=10)
    np.testing.assert_array_equal(pixels, digits[0].reshape(N, 784))
    assert labels is None


def test_idx_without_labels_beside_it(digits, tmp_path: Path) -> None:
    path = tmp_path / "some-images-idx3-ubyte"
    path.write_bytes(encode_idx(digits[0].reshape(N, 784)))  # N×784 is accepted too
    _, pixels, labels = collect(path)
    assert labels is None and pixels.shape == (N, 784)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_npy_streams_any_numeric_pixels(digits, tmp_path: Path, dtype) -> None:
    path = tmp_path / "x.npy"
    np.save(path, digits[0].astype(dtype))
    ids, pixels, labels = collect(path)
    np.testing.assert_array_equal(pixels, digits[0].reshape(N, 784))
    assert labels is None and ids[3] == f"{path}:3".encode()
    assert row_count([path]) == N


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_streams_x_with_labels_y(digits, tmp_path: Path, save) -> None:
    path = tmp_path / "test.npz"
    save(path, x=digits[0].reshape(N, 784), y=digits[1].astype(np.int64))
    _, pixels, labels = collect(path)
    np.testing.assert_array_equal(pixels, digits[0].reshape(N, 784))
    np.testing.assert_array_equal(labels, digits[1])


def test_npz_with_one_array_of_any_name(digits, tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    np.savez(path, images=digits[0])
    assert collect(path)[2] is None


@pytest.mark.parametrize(("header", "label"), [(False, False), (True, True), (False, True)])
def test_csv_detects_header_and_label_column(digits, tmp_path: Path, header, label) -> None:
    x, y = digits[0].reshape(N, 784), digits[1]
    table = np.column_stack([y, x]) if label else x
    path = tmp_path / "pixels.csv"
    names = (["label"] if label else []) + [f"pixel{i}" for i in range(784)]
    np.savetxt(
        path, table, fmt="%d", delimiter=",", header=",".join(names) if header else "", comments=""
    )
    ids, pixels, labels = collect(path)
    np.testing.assert_array_equal(pixels, x)
    if label:
        np.testing.assert_array_equal(labels, y)
    else:
        assert labels is None
    assert ids[0] == f"{path}:0".encode()


def test_csv_header_of_column_numbers_is_a_header(digits, tmp_path: Path) -> None:
    path = tmp_path / "numbered.csv"  # as pandas writes a frame without an index
    np.savetxt(path, digits[0].reshape(N, 784), fmt="%d", delimiter=",",
               header=",".join(map(str, range(784))), comments="")  # fmt: skip
    _, pixels, _ = collect(path)
    np.testing.assert_array_equal(pixels, digits[0].reshape(N, 784))


def test_images_are_decoded_batched_and_bad_ones_skipped(digits, tmp_path: Path) -> None:
    paths = []
    for i, image in enumerate(digits[0][:5]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    skipped: list[str] = []
    chunks = list(read_images([*paths[:2], bad, *paths[2:]], 2, skipped))
    assert [len(c.ids) for c in chunks] == [2, 1, 2]
    assert [i for c in chunks for i in c.ids] == [str(p).encode() for p in paths]
    expected = to_mnist(Image.open(paths[0])).reshape(784)
    np.testing.assert_array_equal(chunks[0].pixels[0], expected)
    assert len(skipped) == 1 and "bad.png" in skipped[0]
    with pytest.raises(InputError, match="bad.png"):
        list(read_images([bad], 2, None))


def test_expand_inputs_walks_directories_and_globs(tmp_path: Path) -> None:
    for name in ("b.png", "a.npy", "t10k-images-idx3-ubyte", "notes.txt", "c.jpg", "d.WebP"):
        (tmp_path / name).write_bytes(b"")
    found = list(expand_inputs([str(tmp_path)]))
    assert [p.name for p in found] == [
        "a.npy",
        "b.png",
        "c.jpg",
        "d.WebP",
        "t10k-images-idx3-ubyte",
    ]
    assert [p.name for p in expand_inputs([str(tmp_path / "*.png")])] == ["b.png"]
    problems = list(expand_inputs([str(tmp_path / "*.gif"), str(tmp_path / "missing.npy")]))
    assert [type(p) for p in problems] == [InputError, InputError]
    assert "no files match" in str(problems[0]) and "no such file" in str(problems[1])


def write_truncated_gzip(path: Path, x: np.ndarray) -> Path:
    """A gzip IDX file cut short: the error shows only when the stream reaches the end."""
    path.write_bytes(gzip.compress(encode_idx(x))[:-200])
    return path


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("cut-images-idx3-ubyte", lambda x: encode_idx(x)[:-5], "header says"),
        ("long-images-idx3-ubyte", lambda x: encode_idx(x) + b"\0", "header says"),
        ("labels-idx1-ubyte", lambda x: encode_idx(x[:, 0, 0]), "not N×28×28"),
        ("float-idx3-ubyte", lambda x: encode_idx(x.astype(np.float32)), "unsigned bytes"),
        ("text.idx", lambda x: b"hello world", "not an IDX"),
        ("gz-images-idx3-ubyte.gz", lambda x: b"\x1f\x8b" + b"x" * 50, "cannot read"),
        ("empty.npy", lambda x: b"", "cannot read as npy"),
        ("bad.npz", lambda x: b"PK not a zip", "cannot read as npz"),
        ("narrow.csv", lambda x: b"1,2,3\n", "3 columns"),
        (
            "text.csv",
            lambda x: ",".join(["7"] * 784).encode() + b"\n" + b"a," * 783 + b"b\n",
            "bad CSV row",
        ),
    ],
)
def test_corrupt_inputs_raise_one_line(digits, tmp_path: Path, name, make, message) -> None:
    path = tmp_path / name
    path.write_bytes(make(digits[0]))
    with pytest.raises(InputError, match=message) as err:
        list(read_file(path, 8))
    assert "\n" not in str(err.value) and name in str(err.value)


def test_truncated_gzip_fails_after_streaming_some_chunks(digits, tmp_path: Path) -> None:
    path = write_truncated_gzip(tmp_path / "x-images-idx3-ubyte.gz", digits[0])
    reader = read_file(path, 8)
    assert len(next(reader).ids) == 8
    with pytest.raises(InputError, match="truncated|cannot read"):
        list(reader)


def test_npy_of_wrong_shape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wide.npy"
    np.save(path, np.zeros((3, 785), np.uint8))
    with pytest.raises(InputError, match="N×784"):
        list(read_file(path, 8))


def test_load_labels_from_idx_npy_and_text(digits, tmp_path: Path) -> None:
    y = digits[1]
    (tmp_path / "y-idx1-ubyte").write_bytes(encode_idx(y))
    np.save(tmp_path / "y.npy", y)
    np.savetxt(tmp_path / "y.txt", y, fmt="%d")
    for name in ("y-idx1-ubyte", "y.npy", "y.txt"):
        np.testing.assert_array_equal(load_labels(tmp_path / name), y)
    np.save(tmp_path / "bad.npy", np.array([1, 10]))
    with pytest.raises(InputError, match="0–9"):
        load_labels(tmp_path / "bad.npy")


def npy_version_3(x: np.ndarray) -> bytes:
    """A .npy file in format version 3.0, which the streaming reader does not parse."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, x.reshape(len(x), 784), version=(3, 0))
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """An .npz archive of the arrays."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def ragged_csv(x: np.ndarray) -> bytes:
    """Eight rows of 784 pixels, then rows of 785 fields: the second batch has a column too many."""
    rows = [",".join(map(str, r)) for r in x.reshape(len(x), 784)]
    return "\n".join(rows[:8] + [r + ",0" for r in rows[8:]]).encode() + b"\n"


@pytest.mark.parametrize(
    ("name", "make", "beside", "message"),
    [
        ("a-images-idx3-ubyte", encode_idx, lambda y: encode_idx(y.reshape(-1, 1)), "1-D IDX"),
        ("b-images-idx3-ubyte", encode_idx, lambda y: encode_idx(y) + b"\0", "trailing bytes"),
        ("c-images-idx3-ubyte", encode_idx, lambda y: encode_idx(y[:-1]), "36 labels beside it"),
        ("d-images-idx3-ubyte", encode_idx, lambda y: encode_idx(y)[:-3], "truncated"),
        (
            "e-images-idx3-ubyte.gz",
            lambda x: gzip.compress(encode_idx(x) + b"\0"),
            None,
            "trailing",
        ),
        ("v3.npy", npy_version_3, None, "unsupported .npy format version"),
        ("cut.npy", lambda x: np_bytes(x)[:-10], None, "truncated"),
        ("two.npz", lambda x: npz_bytes(a=x, b=x), None, "no array 'x' among a, b"),
        ("short-y.npz", lambda x: npz_bytes(x=x, y=np.zeros(3)), None, "3 labels in 'y' for 37"),
        ("ragged.csv", ragged_csv, None, "rows after row 8 have 785 columns"),
        ("f-idx3.gz", lambda x: gzip.compress(encode_idx(x)[:-5]), None, "truncated"),
        ("wide.npz", lambda x: npz_bytes(x=np.zeros((3, 785))), None, "N×784"),
    ],
)
def test_every_refusal_names_the_file_and_the_problem(
    digits, tmp_path: Path, name, make, beside, message
) -> None:
    path = tmp_path / name
    path.write_bytes(make(digits[0]))
    if beside is not None:
        (tmp_path / name.replace("images", "labels").replace("idx3", "idx1")).write_bytes(
            beside(digits[1])
        )
    with pytest.raises(InputError) as err:
        list(read_file(path, 8))
    text = str(err.value)
    assert message in text and str(tmp_path) in text and "\n" not in text


def np_bytes(x: np.ndarray) -> bytes:
    """A .npy file of the images as N×784 uint8."""
    buffer = io.BytesIO()
    np.save(buffer, x.reshape(len(x), 784))
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["x.npy", "x.csv", "x.npz", "x-images-idx3-ubyte"])
def test_ids_number_every_row_across_chunks(digits, tmp_path: Path, name) -> None:
    path = tmp_path / name
    x = digits[0].reshape(N, 784)
    if name.endswith(".csv"):
        np.savetxt(path, x, fmt="%d", delimiter=",")
    elif name.endswith(".npz"):
        np.savez(path, x=x)
    elif name.endswith(".npy"):
        np.save(path, x)
    else:
        path.write_bytes(encode_idx(digits[0]))
    ids, pixels, _ = collect(path)
    assert ids == [f"{path}:{i}".encode() for i in range(N)]
    np.testing.assert_array_equal(pixels, x)


def test_csv_labels_are_integers_and_a_single_row_is_read(digits, tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    np.savetxt(path, np.column_stack([digits[1], digits[0].reshape(N, 784)])[:1], fmt="%d",
               delimiter=",")  # fmt: skip
    (chunk,) = read_file(path, 8)
    assert chunk.labels.dtype == np.int64 and chunk.labels.tolist() == [digits[1][0]]
    np.testing.assert_array_equal(chunk.pixels, digits[0][:1].reshape(1, 784))


@pytest.mark.parametrize(
    "array", [np.asfortranarray(np.zeros((3, 784), np.uint8)), np.full((3, 784), "7")]
)
def test_npy_that_is_fortran_ordered_or_not_numeric_is_refused(tmp_path: Path, array) -> None:
    path = tmp_path / "odd.npy"
    np.save(path, array)
    with pytest.raises(InputError, match="C-order numeric"):
        list(read_file(path, 8))


def test_row_count_counts_images_and_gives_up_on_formats_without_a_count(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    Image.new("L", (28, 28)).save(png)
    np.save(tmp_path / "x.npy", np.zeros((4, 784), np.uint8))
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 784), np.uint8))
    assert row_count([png, png, tmp_path / "x.npy"]) == 6
    assert row_count([tmp_path / "x.npy", tmp_path / "x.npz"]) is None


def test_recursive_glob_finds_nested_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("top.png", "a/mid.png", "a/b/deep.png"):
        (tmp_path / name).write_bytes(b"")
    found = list(expand_inputs([str(tmp_path / "**" / "*.png")]))
    assert sorted(p.name for p in found) == ["deep.png", "mid.png", "top.png"]
    (tmp_path / "empty").mkdir()
    (problem,) = expand_inputs([str(tmp_path / "empty")])
    assert "directory has no scorable files" in str(problem)


@pytest.mark.parametrize(("images", "labels"), [(".gz", ""), ("", ".gz")])
def test_labels_are_found_beside_images_whether_or_not_either_is_gzipped(
    digits, tmp_path: Path, images, labels
) -> None:
    x, y = digits
    write = {".gz": gzip.compress, "": bytes}
    path = tmp_path / f"t10k-images-idx3-ubyte{images}"
    path.write_bytes(write[images](encode_idx(x)))
    (tmp_path / f"t10k-labels-idx1-ubyte{labels}").write_bytes(write[labels](encode_idx(y)))
    np.testing.assert_array_equal(collect(path)[2], y)


def test_load_labels_reads_csv_and_single_label_files_as_int64(tmp_path: Path) -> None:
    (tmp_path / "y.csv").write_text("3\n1\n4\n")
    (tmp_path / "one.txt").write_text("7\n")
    assert load_labels(tmp_path / "y.csv").tolist() == [3, 1, 4]
    assert load_labels(tmp_path / "one.txt").tolist() == [7]
    assert load_labels(tmp_path / "one.txt").dtype == np.int64
    np.save(tmp_path / "y.npy", np.array([1, 2], np.uint8))
    assert load_labels(tmp_path / "y.npy").dtype == np.int64
    with pytest.raises(InputError, match="one.csv: cannot read labels"):
        load_labels(tmp_path / "one.csv")


def test_unreadable_image_is_skipped_with_the_reason_after_its_name(tmp_path: Path) -> None:
    missing = tmp_path / "gone.png"
    skipped: list[str] = []
    assert list(read_images([missing], 4, skipped)) == []
    assert skipped == [f"{missing}: No such file or directory"]


def test_csv_first_row_above_255_is_a_bad_row_not_a_header(digits, tmp_path: Path) -> None:
    path = tmp_path / "odd-header.csv"
    x = digits[0].reshape(N, 784)
    np.savetxt(path, x, fmt="%d", delimiter=",", header=",".join(["256"] + ["0"] * 783),
               comments="")  # fmt: skip
    with pytest.raises(InputError, match="row 0 has pixel value 256"):
        collect(path)


def test_load_labels_refuses_fractional_labels(tmp_path: Path) -> None:
    (tmp_path / "y.txt").write_text("3\n1.5\n")
    with pytest.raises(InputError, match="y.txt: cannot read labels"):
        load_labels(tmp_path / "y.txt")


def idx_range(data: bytes, labels: np.ndarray, first: int, stop: int) -> list:
    """The chunks read_idx_stream yields for images first..stop-1 of IDX bytes, 8 at a time."""
    path = Path("big-images-idx3-ubyte")
    return list(read_idx_stream(io.BytesIO(data), path, 8, None, lambda: labels, (first, stop)))


@pytest.mark.parametrize(("first", "stop"), [(0, 16), (16, 32), (32, N), (5, 6)])
def test_idx_rows_read_only_that_range_named_by_their_row_in_the_file(
    digits, first: int, stop: int
) -> None:
    x, y = digits
    chunks = idx_range(encode_idx(x), y, first, stop)
    assert all(len(c.ids) <= 8 for c in chunks) and len(chunks) == -(-(stop - first) // 8)
    ids = [i for c in chunks for i in c.ids.tolist()]
    assert ids == [f"big-images-idx3-ubyte:{i}".encode() for i in range(first, stop)]
    assert np.array_equal(
        np.concatenate([c.pixels for c in chunks]), x[first:stop].reshape(-1, 784)
    )
    assert np.array_equal(np.concatenate([c.labels for c in chunks]), y[first:stop])
    # Bytes after the last image: only the range that ends the file reads far enough to see them.
    if stop == N:
        with pytest.raises(InputError, match=f"trailing bytes after {N} images"):
            idx_range(encode_idx(x) + b"junk", y, first, stop)
    else:
        assert len(idx_range(encode_idx(x) + b"junk", y, first, stop)) == len(chunks)


def test_parquet_row_groups_read_only_those_rows_named_from_start(digits, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x, y = digits
    pixels = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 784)
    path = tmp_path / "grouped.parquet"
    pq.write_table(pa.table({"pixels": pixels, "label": y}), path, row_group_size=10)
    chunks = list(read_parquet_stream(path, path, 4, groups=[1, 2], start=10))
    assert all(len(c.ids) <= 4 for c in chunks)
    ids = [i for c in chunks for i in c.ids.tolist()]
    assert ids == [f"{path}:{i}".encode() for i in range(10, 30)]
    assert np.array_equal(np.concatenate([c.pixels for c in chunks]), x[10:30].reshape(-1, 784))
    assert np.array_equal(np.concatenate([c.labels for c in chunks]), y[10:30])
    whole = [i for c in read_parquet_stream(path, path, 16) for i in c.ids.tolist()]
    assert whole == [f"{path}:{i}".encode() for i in range(N)]
