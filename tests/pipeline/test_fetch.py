import gzip
import json

import numpy as np
import pytest
from click.testing import CliRunner

from digits.cli import cli
from digits.idx import encode_idx
from pipeline.run_log import logs_dir
from pipeline.stages.fetch import (
    MNIST_SHA256,
    FetchError,
    cache_source,
    fetch_mnist,
    first_working,
    http_source,
    local_source,
    save_cache,
    sha256,
)
from tests.conftest import assert_one_line_error


def run_fetch(tmp_path, *args, env=None):
    """`digits fetch --offline` into tmp_path/raw with a private cache."""
    env = {"DIGITS_CACHE": str(tmp_path / "cache"), **(env or {})}
    out = tmp_path / "data" / "raw"
    result = CliRunner().invoke(cli, ["fetch", "--offline", "--out", str(out), *args], env=env)
    return result, out


def test_fetch_copies_verified_files_and_records_their_source(tmp_path, mnist_dir, checksums_file):
    result, out = run_fetch(
        tmp_path, "--local-dir", str(mnist_dir), "--checksums", str(checksums_file)
    )
    assert result.exit_code == 0, result.output
    record = json.loads((logs_dir() / "fetch.json").read_text())  # the run log, not data/raw
    assert record["source"] == f"local directory {mnist_dir}"
    assert sorted(p.name for p in out.iterdir()) == sorted(record["files"])
    for name, sha in json.loads(checksums_file.read_text()).items():
        assert (out / name).read_bytes() == (mnist_dir / name).read_bytes()
        assert record["files"][name]["sha256"] == sha


def test_fetch_accepts_gzipped_files_and_writes_them_decompressed(
    tmp_path, mnist_dir, checksums_file
):
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    for path in mnist_dir.iterdir():
        (zipped / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    result, out = run_fetch(
        tmp_path, "--local-dir", str(zipped), "--checksums", str(checksums_file)
    )
    assert result.exit_code == 0, result.output
    for path in mnist_dir.iterdir():
        assert (out / path.name).read_bytes() == path.read_bytes()


def test_checksum_mismatch_fails_in_one_line_and_writes_nothing(tmp_path, mnist_dir):
    result, out = run_fetch(tmp_path, "--local-dir", str(mnist_dir))  # real MNIST checksums
    assert result.exit_code != 0
    assert "SHA-256 mismatch" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_label_count_differing_from_image_count_is_rejected(tmp_path, mnist_dir):
    labels = mnist_dir / "t10k-labels-idx1-ubyte"
    labels.write_bytes(encode_idx(np.zeros(7, np.uint8)))
    table = {p.name: sha256(p.read_bytes()) for p in mnist_dir.iterdir()}
    (tmp_path / "sums.json").write_text(json.dumps(table))
    result, out = run_fetch(
        tmp_path, "--local-dir", str(mnist_dir), "--checksums", str(tmp_path / "sums.json")
    )
    assert result.exit_code != 0
    assert "300 images but t10k-labels-idx1-ubyte has 7 labels" in result.output
    assert not out.exists()


def test_truncated_file_is_reported_by_name(tmp_path, mnist_dir, checksums_file):
    path = mnist_dir / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    result, out = run_fetch(
        tmp_path, "--local-dir", str(mnist_dir), "--checksums", str(checksums_file)
    )
    assert result.exit_code != 0
    assert "train-images-idx3-ubyte" in result.output
    assert not out.exists()


def test_missing_local_directory_is_a_usage_error(tmp_path):
    result, out = run_fetch(tmp_path, "--local-dir", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not out.exists()


def test_when_every_source_fails_the_error_lists_each_source_and_why(tmp_path):
    sources = [local_source(tmp_path / "empty"), http_source("http://127.0.0.1:9/")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FetchError) as caught:
        first_working(sources, MNIST_SHA256)
    message = caught.value.message
    assert f"local directory {tmp_path / 'empty'}: neither train-images-idx3-ubyte" in message
    assert "mirror http://127.0.0.1:9/:" in message
    assert message.count("\n  - ") == 2


def test_second_fetch_is_served_from_the_cache(tmp_path, mnist_dir, checksums_file):
    table = json.loads(checksums_file.read_text())
    files = {name: (mnist_dir / name).read_bytes() for name in table}
    save_cache(tmp_path / "cache", files)
    record = fetch_mnist(tmp_path / "raw", [cache_source(tmp_path / "cache")], table)
    assert record["source"].startswith("cache ")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(table)


def test_bad_checksums_file_is_a_usage_error(tmp_path, mnist_dir):
    (tmp_path / "sums.json").write_text('{"only": "one"}')
    result, _ = run_fetch(
        tmp_path, "--local-dir", str(mnist_dir), "--checksums", str(tmp_path / "sums.json")
    )
    assert result.exit_code == 2
    assert "must map exactly" in result.output


def test_out_holding_foreign_files_is_refused_in_one_line_before_any_download(tmp_path):
    out = tmp_path / "data" / "raw"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    result, _ = run_fetch(tmp_path)  # offline with an empty cache: fetching would fail
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {out}: holds files digits fetch did not write (notes.txt); "
        "choose an empty or new directory"
    )
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_fetch_again_replaces_its_own_previous_output(tmp_path, mnist_dir, checksums_file):
    args = ("--local-dir", str(mnist_dir), "--checksums", str(checksums_file))
    run_fetch(tmp_path, *args)
    (tmp_path / "data" / "raw" / "SOURCE.json").write_text("{}")  # as earlier versions wrote
    result, out = run_fetch(tmp_path, *args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(json.loads(checksums_file.read_text()))
    assert sorted(p.name for p in out.parent.iterdir()) == ["raw"]  # no temp or backup left


def test_cache_holding_foreign_files_is_left_alone(tmp_path, mnist_dir, checksums_file):
    table = json.loads(checksums_file.read_text())
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "README").write_text("not the cache's")
    save_cache(tmp_path / "cache", {name: (mnist_dir / name).read_bytes() for name in table})
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["README"]


@pytest.mark.parametrize(
    ("env", "code", "words"),
    [
        ({"DIGITS_CACHE": ""}, 1, "DIGITS_CACHE must name a directory, not ''"),
        ({"DIGITS_CACHE": "FILE"}, 1, "DIGITS_CACHE must name a directory"),
        ({"DIGITS_OFFLINE": "abc"}, 2, "'DIGITS_OFFLINE'"),
        ({"DIGITS_MNIST_DIR": "MISSING"}, 2, "'DIGITS_MNIST_DIR'"),
        ({"DIGITS_MNIST_CHECKSUMS": "MISSING"}, 2, "cannot read checksums"),
    ],
)
def test_bad_env_values_are_one_line_errors(tmp_path, env, code, words):
    (tmp_path / "file").write_text("not a directory")
    paths = {"FILE": str(tmp_path / "file"), "MISSING": str(tmp_path / "missing")}
    env = {key: paths.get(value, value) for key, value in env.items()}
    out = tmp_path / "raw"
    args = ["fetch", "--out", str(out)]
    result = CliRunner().invoke(cli, args, env={"DIGITS_CACHE": str(tmp_path / "c"), **env})
    assert_one_line_error(result, words, code=code)
    assert not out.exists()
