"""Export: ONNX Runtime against the torch oracle, graph hygiene, metadata, the stage end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from click.testing import CliRunner
from onnx import numpy_helper

from digits.cli import cli
from digits.golden import golden_path, read_golden
from pipeline.analysis.classification import accuracy
from pipeline.compression.pruning import plain_copy, prune_magnitude
from pipeline.model.network import MLP, ModelParams, build_mlp, predict_logits, save_checkpoint
from pipeline.model.transform import fit_transform
from pipeline.onnx_export.graph import TRAINING_OPS, to_onnx, training_nodes
from pipeline.run_log import logs_dir
from pipeline.stages.prepare import load_split
from tests.conftest import make_digits, write_mnist_idx

# What evaluate records about low confidence, read by export for the metadata and the card.
FLAGS = {"confidence_threshold": 0.61, "test_flagged_share": 0.012, "test_flagged_accuracy": 0.4}


def train_tiny(seed: int = 0, sparsity: float = 0.5, **data_options) -> MLP:
    """A BN + dropout MLP with a fitted transform, barely trained, `sparsity` of it pruned."""
    x, y = make_digits(500, seed=1)
    x = x.reshape(len(x), -1)
    transform, _ = fit_transform(x, scaling="standardize", **data_options)
    torch.manual_seed(seed)
    model = build_mlp(ModelParams(hidden=(24, 12), dropout=0.1), transform)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, Y = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    for _ in range(5):  # few steps: test accuracy well below 1, so matching it means something
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(X), Y).backward()
        optimizer.step()
    prune_magnitude(model, sparsity)
    return model.eval()


def plain_probabilities(onnx_file: Path, pixels: np.ndarray) -> np.ndarray:
    """What any user does: a bare ONNX Runtime session fed float32 0–255 pixels."""
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"pixels": pixels.astype(np.float32)})[0]


def torch_probabilities(model: MLP, pixels: np.ndarray) -> np.ndarray:
    """The oracle: the unfolded torch model's softmax."""
    return torch.softmax(torch.from_numpy(predict_logits(model, pixels)), dim=1).numpy()


def read_idx_numpy(path: Path) -> np.ndarray:
    """Raw IDX with numpy only (no project code): big-endian dims after a 4-byte magic."""
    data = path.read_bytes()
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="module")
def tiny_model() -> MLP:
    return train_tiny()


@pytest.fixture(scope="module")
def exported(tiny_model: MLP, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run `digits export` once on a workspace of fixture files; return paths and result."""
    return export_workspace(tiny_model, tmp_path_factory.mktemp("export"))


def export_workspace(tiny_model: MLP, root: Path) -> dict:
    """Fixture files for `tiny_model` in `root`, `digits export` run once; paths and result."""
    write_mnist_idx(root / "raw", n_train=10, n_test=300)
    x, y = load_split(root / "raw", "t10k")
    np.savez(root / "test.npz", x=x, y=y)
    save_checkpoint(root / "models" / "mlp-compressed.pt", plain_copy(tiny_model))
    recorded = accuracy(predict_logits(tiny_model, x), y)
    (root / "evaluate.json").write_text(
        json.dumps({"compressed": {"dev_accuracy": 0.9, "test_accuracy": recorded, **FLAGS}})
    )
    (root / "compress.json").write_text(json.dumps({"sparsity": 0.5}))
    params = {"base": {"seed": 1}, "export": {"model": "compressed", "opset": 18}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_export(root)
    log = json.loads((logs_dir() / "export.json").read_text())
    return {"root": root, "result": result, "recorded": recorded, "x": x, "log": log}


def run_export(root: Path, *extra: str):
    """`digits export` with every path pointed into `root`."""
    args = ["export", "--params", root / "params.yaml", "--models", root / "models"]
    args += ["--test", root / "test.npz", "--evaluate", root / "evaluate.json"]
    args += ["--compress", root / "compress.json", "--report", root / "export.json", *extra]
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_to_onnx_matches_torch_at_any_batch_size(tiny_model: MLP, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    to_onnx(tiny_model, path)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["pixels"]
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    x, _ = make_digits(37, seed=5)
    x = x.reshape(37, -1)
    for batch in (x[:1], x):  # the batch axis is dynamic
        got = plain_probabilities(path, batch)
        assert np.abs(got - torch_probabilities(tiny_model, batch)).max() <= 1e-5


def test_to_onnx_graph_has_no_training_only_nodes(tiny_model: MLP, tmp_path: Path) -> None:
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in tiny_model.modules())
    assert any(isinstance(m, torch.nn.Dropout) for m in tiny_model.modules())
    to_onnx(tiny_model, tmp_path / "model.onnx")
    ops = {node.op_type for node in onnx.load(tmp_path / "model.onnx").graph.node}
    assert not ops & (TRAINING_OPS | {"Sub"}), ops  # Sub would mean preprocessing was not folded
    assert "Softmax" in ops


def test_to_onnx_leaves_the_model_untouched(tiny_model: MLP, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model.train()
    to_onnx(tiny_model, tmp_path / "model.onnx")
    assert tiny_model.training
    tiny_model.eval()
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_export_stage_parity_and_report(exported: dict) -> None:
    assert exported["result"].exit_code == 0, exported["result"].output
    report = json.loads((exported["root"] / "export.json").read_text())
    assert report["max_abs_prob_diff"] <= 1e-5
    assert report["argmax_agreement"] == 1.0
    assert report["opset"] == 18
    assert report["file_bytes"] == (exported["root"] / "models" / "digits.onnx").stat().st_size
    assert report["test_accuracy"] == pytest.approx(exported["recorded"])


def test_export_stage_int8_figures_match_onnxruntime(exported: dict) -> None:
    root = exported["root"]
    report = json.loads((root / "export.json").read_text())["int8"]
    with np.load(root / "test.npz") as data:
        x, y = data["x"], data["y"]
    probs = plain_probabilities(root / "models" / "digits.onnx", x)
    probs8 = plain_probabilities(root / "models" / "digits-int8.onnx", x)
    assert report["test_accuracy"] == pytest.approx(float((probs8.argmax(1) == y).mean()))
    agreement = float((probs8.argmax(1) == probs.argmax(1)).mean())
    assert report["vs_fp32"]["argmax_agreement"] == pytest.approx(agreement)
    assert agreement > 0.9
    assert report["vs_fp32"]["max_abs_prob_diff"] == pytest.approx(np.abs(probs8 - probs).max())
    assert report["file_bytes"] == (root / "models" / "digits-int8.onnx").stat().st_size
    assert "speed" not in report  # timings vary run to run: they go to the run log instead
    # They depend on the machine: only their presence is checked, never their values.
    for batch in ("batch1", "batch1024"):
        speed = exported["log"]["int8_speed"][batch]
        assert set(speed) == {"fp32_ms", "int8_ms", "int8_speedup"}


def test_export_stage_int8_file_holds_uint8_weights_per_channel(exported: dict) -> None:
    models = exported["root"] / "models"
    fp32, int8 = onnx.load(models / "digits.onnx"), onnx.load(models / "digits-int8.onnx")
    assert (models / "digits-int8.onnx").stat().st_size < (models / "digits.onnx").stat().st_size
    ops = [node.op_type for node in int8.graph.node]
    assert ops.count("MatMulInteger") == 3 and "DynamicQuantizeLinear" in ops
    assert not {"Gemm", "MatMul"} & set(ops)  # no float matrix product is left
    weights = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    quantized = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    assert not [k for k, v in quantized.items() if v.dtype == np.float32 and v.ndim == 2]
    matrices = [k for k, v in weights.items() if v.ndim == 2]
    assert len(matrices) == 3
    for name in matrices:  # (out, in) float weights -> (in, out) uint8, one scale per output
        W = weights[name]
        q = quantized[f"{name}_quantized"]
        scale, zero = quantized[f"{name}_scale"], quantized[f"{name}_zero_point"]
        assert q.dtype == zero.dtype == np.uint8 and q.shape == W.T.shape
        assert scale.shape == zero.shape == (len(W),)
        dequantized = (q.astype(np.float32) - zero.astype(np.float32)) * scale  # (in, out)
        assert np.all(np.abs(dequantized - W.T) <= scale / 2 * (1 + 1e-5) + 1e-7), name


def test_export_stage_metadata(exported: dict) -> None:
    models = exported["root"] / "models"
    proto = onnx.load(models / "digits.onnx")
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model_name"] == "digits"
    assert json.loads(meta["classes"]) == list(range(10))
    assert json.loads(meta["input_spec"])["shape"] == ["N", 784]
    assert float(meta["test_accuracy"]) == pytest.approx(exported["recorded"])
    assert float(meta["sparsity"]) == 0.5
    assert float(meta["confidence_threshold"]) == FLAGS["confidence_threshold"]
    assert len(meta["params_digest"]) == 64 and meta["opset"] == "18"
    root = exported["root"]
    checkpoint = root / "models" / "mlp-compressed.pt"
    assert meta["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert meta["test_sha256"] == hashlib.sha256((root / "test.npz").read_bytes()).hexdigest()
    assert not {"git_commit", "dvc_lock_digest"} & set(meta)  # not functions of the inputs
    int8 = {p.key: p.value for p in onnx.load(models / "digits-int8.onnx").metadata_props}
    assert int8["quantization"] == "dynamic quint8 per channel"
    assert int8["model_version"] == meta["model_version"] + "-int8"


def test_export_stage_writes_the_model_card(exported: dict) -> None:
    card = (exported["root"] / "models" / "MODEL_CARD.md").read_text()
    for heading in ("## Intended use", "## Data", "## Metrics", "## Limitations", "## How to call"):
        assert heading in card
    assert f"{exported['recorded']:.4f}" in card
    assert "onnxruntime" in card and "digits score" in card and "/predict" in card
    assert "| low-confidence threshold (chosen on dev) | 0.6100 |" in card
    assert "| test answers below it / their accuracy | 1.20% / 40.00% |" in card


def test_plain_onnxruntime_reproduces_recorded_accuracy(exported: dict) -> None:
    raw = exported["root"] / "raw"
    images = read_idx_numpy(raw / "t10k-images-idx3-ubyte").reshape(-1, 784)
    labels = read_idx_numpy(raw / "t10k-labels-idx1-ubyte")
    probs = plain_probabilities(exported["root"] / "models" / "digits.onnx", images)
    assert float((probs.argmax(1) == labels).mean()) == pytest.approx(exported["recorded"])


def test_export_rejects_bad_opset(exported: dict, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"export": {"opset": 9}}))
    result = run_export(exported["root"], "--params", str(params))
    assert result.exit_code != 0
    assert "export.opset" in result.output and "Traceback" not in result.output


def test_export_missing_checkpoint_is_one_line_and_writes_nothing(
    exported: dict, tmp_path: Path
) -> None:
    result = run_export(exported["root"], "--models", str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert "mlp-compressed.pt" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "empty" / "digits.onnx").exists()


def test_training_nodes_are_detected() -> None:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"]),
        helper.make_node("Dropout", ["y"], ["z"]),
        helper.make_node("Relu", ["z"], ["out"]),
    ]
    x, out = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("x", "out"))
    proto = helper.make_model(helper.make_graph(nodes, "g", [x], [out]))
    assert training_nodes(proto) == ["BatchNormalization", "Dropout"]


def test_export_without_recorded_accuracy_is_one_line(exported: dict, tmp_path: Path) -> None:
    evaluate = tmp_path / "evaluate.json"
    evaluate.write_text(json.dumps({"dense": {"dev_accuracy": 0.9, "test_accuracy": 0.9, **FLAGS}}))
    result = run_export(exported["root"], "--evaluate", str(evaluate))
    assert result.exit_code == 1
    assert "no compressed dev_accuracy" in result.output and "Traceback" not in result.output


def test_export_refuses_a_file_outside_tolerance_and_writes_nothing(
    exported: dict, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(exported["root"] / "models" / "mlp-compressed.pt", models)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"export": {"max_prob_diff": 1e-30}}))
    result = run_export(exported["root"], "--params", str(params), "--models", str(models))
    assert result.exit_code == 1
    assert "ONNX disagrees with torch" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in models.iterdir()) == ["mlp-compressed.pt"]


def test_exported_files_do_not_depend_on_where_the_checkout_lives(exported: dict) -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("digits.onnx", "digits-int8.onnx"):
        data = (exported["root"] / "models" / name).read_bytes()
        assert str(root).encode() not in data and b"stack_trace" not in data
        assert str(exported["root"]).encode() not in data


def test_export_stage_writes_golden_vectors_that_verify_both_files(exported: dict) -> None:
    models = exported["root"] / "models"
    for name in ("digits.onnx", "digits-int8.onnx"):
        golden = read_golden(golden_path(models / name))
        assert golden.pixels.shape == (18, 784)  # 16 test images, an all-0 and an all-255 one
        np.testing.assert_array_equal(golden.pixels[:16], exported["x"][:16])
        result = CliRunner().invoke(cli, ["verify", str(models / name)])
        assert result.exit_code == 0, result.output
        assert "18 golden vectors agree" in result.output


def test_export_keeps_a_pca_map_apart_from_a_sparse_first_layer_and_counts_it(tmp_path):
    model = train_tiny(sparsity=0.9, whitening="pca", components=16)
    done = export_workspace(model, tmp_path)
    assert done["result"].exit_code == 0, done["result"].output
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["max_abs_prob_diff"] <= 1e-5 and report["argmax_agreement"] == 1
    nonzero = sum(int((lin.weight != 0).sum()) for lin in plain_copy(model).linears())
    assert report["deployed"] == {
        "weights_nonzero": nonzero,
        "preprocess_map_entries": 784 * 16,
        "macs_per_image": nonzero + 784 * 16,
        "nonzero_total": nonzero + 784 * 16,
        "graph_weights_nonzero": nonzero + 784 * 16,
    }
    graph = onnx.load(tmp_path / "models" / "digits.onnx").graph
    shapes = [tuple(init.dims) for init in graph.initializer]
    assert (784, 16) in shapes  # the fixed map, its own MatMul
    first = [shape for shape in shapes if len(shape) == 2 and 784 in shape and shape != (784, 16)]
    assert first == [], first  # no first layer over raw pixels: nothing was folded
    card = (tmp_path / "models" / "MODEL_CARD.md").read_text()
    assert "its own MatMul, 12,544 entries" in card and f"{nonzero + 784 * 16:,}" in card


def test_the_model_card_says_a_diagonal_map_was_folded(exported: dict) -> None:
    card = (exported["root"] / "models" / "MODEL_CARD.md").read_text()
    assert "| preprocessing map | folded into the first layer |" in card
    assert exported["result"].output.count("Error") == 0


def test_a_pruned_residual_noisy_relu_network_exports_with_plain_relu(tmp_path: Path) -> None:
    x, y = make_digits(300, seed=1)
    x = x.reshape(len(x), -1)
    transform, _ = fit_transform(x, scaling="standardize")
    torch.manual_seed(0)
    params = ModelParams(hidden=(16, 16, 16), residual=True, activation="noisy_relu")
    model = build_mlp(params, transform)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, Y = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(X), Y).backward()
        optimizer.step()
    prune_magnitude(model, 0.5)
    model.eval()
    to_onnx(model, tmp_path / "residual.onnx")
    ops = [node.op_type for node in onnx.load(tmp_path / "residual.onnx").graph.node]
    assert ops.count("Add") >= 2 and "Relu" in ops  # two skips; noise only while training
    assert not {op for op in ops if op.startswith("Random")}, ops
    got = plain_probabilities(tmp_path / "residual.onnx", x)
    assert np.abs(got - torch_probabilities(model, x)).max() <= 1e-5
