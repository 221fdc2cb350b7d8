import gzip

import numpy as np
import pytest

from digits.idx import IdxError, decode_idx, encode_idx, read_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_encode_then_decode_roundtrips_every_idx_dtype(dtype):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    decoded = decode_idx(encode_idx(array))
    assert decoded.shape == (2, 3, 4)
    np.testing.assert_array_equal(decoded, array)


def test_read_idx_reads_raw_and_gzipped_files_alike(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "raw").write_bytes(encode_idx(array))
    (tmp_path / "zipped.gz").write_bytes(gzip.compress(encode_idx(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "raw"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "zipped.gz"), array)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\0", "trailing bytes"),
        (lambda b: b"\x12\x34" + b[2:], "not an IDX file"),
        (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX dtype"),
        (lambda b: b[:2] + b"\x08\x00" + b[4:], "zero dimensions"),
        (lambda b: b[:10], "truncated header"),
        (lambda b: b[:3], "too short"),
    ],
)
def test_corrupt_idx_raises_idx_error_naming_the_problem(mangle, message):
    data = encode_idx(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(IdxError, match=message):
        decode_idx(mangle(data), "f")


def test_corrupt_gzip_raises_idx_error(tmp_path):
    data = gzip.compress(encode_idx(np.zeros((3, 4), np.uint8)))
    (tmp_path / "bad.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(IdxError, match="corrupt gzip"):
        read_idx(tmp_path / "bad.gz")
