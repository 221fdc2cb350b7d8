import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from digits.cli import cli
from digits.idx import encode_idx, read_idx
from pipeline.stages.prepare import DataParams, prepare, split_stratified

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def mnist_like_labels() -> np.ndarray:
    y = np.repeat(np.arange(10), MNIST_TRAIN_COUNTS)
    return np.random.default_rng(3).permutation(y)


def test_split_is_stratified_within_half_a_percentage_point():
    y = mnist_like_labels()
    train, dev = split_stratified(y, 0.1, seed=0)
    assert len(np.intersect1d(train, dev)) == 0 and len(train) + len(dev) == len(y)
    train_share = np.bincount(y[train], minlength=10) / len(train)
    dev_share = np.bincount(y[dev], minlength=10) / len(dev)
    assert np.abs(train_share - dev_share).max() < 0.005


def test_split_is_identical_for_the_same_seed_and_differs_for_another():
    y = mnist_like_labels()
    first, again, other = (split_stratified(y, 0.1, s)[1] for s in (7, 7, 8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_transform_ignores_dev_and_test_pixels(mnist_dir, tmp_path):
    params = DataParams(scaling="unit", whitening="zca", components=50)
    prepare(mnist_dir, tmp_path / "a", params)
    # Overwrite every dev image and every test image, keep train images as they were.
    images_path = mnist_dir / "train-images-idx3-ubyte"
    images = read_idx(images_path).copy()
    _, dev = split_stratified(read_idx(mnist_dir / "train-labels-idx1-ubyte"), 0.1, 0)
    images[dev] = 255
    images_path.write_bytes(encode_idx(images))
    test_path = mnist_dir / "t10k-images-idx3-ubyte"
    test_path.write_bytes(encode_idx(np.full_like(read_idx(test_path), 7)))
    prepare(mnist_dir, tmp_path / "b", params)
    for key in ("mean", "matrix"):
        a = np.load(tmp_path / "a" / "transform.npz")[key]
        np.testing.assert_array_equal(a, np.load(tmp_path / "b" / "transform.npz")[key])
    # ...while changing a train image does change it (the check above can fail).
    train, _ = split_stratified(read_idx(mnist_dir / "train-labels-idx1-ubyte"), 0.1, 0)
    images[train[0]] = 255
    images_path.write_bytes(encode_idx(images))
    prepare(mnist_dir, tmp_path / "c", params)
    assert not np.array_equal(
        np.load(tmp_path / "a" / "transform.npz")["mean"],
        np.load(tmp_path / "c" / "transform.npz")["mean"],
    )


def test_prepare_writes_the_contracted_arrays_and_stats(mnist_dir, tmp_path):
    stats = prepare(mnist_dir, tmp_path / "out", DataParams(whitening="pca", components=20))
    for split, n in (("train", 900), ("dev", 100), ("test", 300)):
        with np.load(tmp_path / "out" / f"{split}.npz") as data:
            assert data["x"].dtype == np.uint8 and data["x"].shape == (n, 784)
            assert data["y"].dtype == np.int64 and len(data["y"]) == n
        assert sum(stats["counts"][split]) == n
    assert stats["features"] == 20
    assert 0 < stats["spectrum"]["variance_explained_by_kept"] < 1


def write_params(tmp_path, **data):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"base": {"seed": 1}, "data": data}))
    return path


def run_prepare(tmp_path, raw_dir, params_file):
    out = tmp_path / "data" / "prepared"
    args = ["prepare", "--params", str(params_file), "--raw", str(raw_dir), "--out", str(out)]
    args += ["--stats", str(tmp_path / "reports" / "prepare.json")]
    return CliRunner().invoke(cli, args), out


def test_prepare_command_writes_outputs(tmp_path, mnist_dir):
    result, out = run_prepare(tmp_path, mnist_dir, write_params(tmp_path, whitening="zca"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "dev.npz", "test.npz", "train.npz", "transform.npz",
    ]  # fmt: skip
    assert (tmp_path / "reports" / "prepare.json").is_file()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"scaling": "bogus"}, "data.scaling must be one of none | unit | standardize"),
        ({"whitening": "pcaa"}, "data.whitening must be one of none | pca | zca"),
        ({"dev_fraction": 1.5}, "data.dev_fraction must be between 0 and 1"),
        ({"epsilon": "small"}, "data.epsilon must be a number"),
        ({"colour": True}, "unknown key data.colour"),
        ({"components": 20}, "data.components needs whitening pca or zca"),
    ],
)
def test_bad_param_fails_in_one_line_naming_the_key(tmp_path, mnist_dir, data, message):
    result, out = run_prepare(tmp_path, mnist_dir, write_params(tmp_path, **data))
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_truncated_raw_file_fails_cleanly_without_partial_output(tmp_path, mnist_dir):
    path = mnist_dir / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    result, out = run_prepare(tmp_path, mnist_dir, write_params(tmp_path))
    assert result.exit_code == 1
    assert "t10k-images-idx3-ubyte: truncated" in result.output
    assert not out.exists()
    assert not list(tmp_path.glob("data/*"))  # no temp directory left behind either


def test_out_holding_foreign_files_is_refused_in_one_line_before_any_work(tmp_path, mnist_dir):
    out = tmp_path / "data"
    (out / "raw").mkdir(parents=True)
    (out / "raw" / "train-images-idx3-ubyte").write_bytes(b"someone's download")
    broken = mnist_dir / "t10k-images-idx3-ubyte"
    broken.write_bytes(broken.read_bytes()[:5000])  # the work would fail; the refusal comes first
    args = ["prepare", "--params", str(write_params(tmp_path)), "--raw", str(mnist_dir)]
    args += ["--out", str(out), "--stats", str(tmp_path / "prepare.json")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {out}: holds files digits prepare did not write (raw); "
        "choose an empty or new directory"
    )
    assert (out / "raw" / "train-images-idx3-ubyte").read_bytes() == b"someone's download"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "mnist", "params.yaml"]


def test_rerun_replaces_its_own_previous_output(tmp_path, mnist_dir):
    result, out = run_prepare(tmp_path, mnist_dir, write_params(tmp_path))
    assert result.exit_code == 0, result.output
    result, out = run_prepare(
        tmp_path, mnist_dir, write_params(tmp_path, whitening="pca", components=20)
    )
    assert result.exit_code == 0, result.output
    with np.load(out / "transform.npz") as f:
        assert f["matrix"].shape == (784, 20)
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]  # no temp or backup left
