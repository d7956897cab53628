"""ONNX Runtime inference of the packaged encoders equals the torch path on real images and texts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xmodal.encoders import encode_images, get_image_encoder, get_text_encoder
from xmodal.encoders.onnx_runtime import OnnxModel, resolve_runtime

pytest.importorskip("onnxruntime", reason="ONNX Runtime is a dependency; not installed here")

DATA = Path(__file__).parents[1].parent / "shared" / "data"


def _slice(folder: str, n: int) -> list[Path]:
    images = DATA / folder / "images"
    if not images.is_dir():
        return []
    return sorted(p for p in images.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[:n]


@pytest.fixture(scope="module")
def real_images() -> list[Path]:
    paths = _slice("openmoji", 12) + _slice("flickr8k-1k", 6)
    if not paths:
        pytest.skip(f"no OpenMoji or flickr8k-1k images under {DATA}")
    return paths


@pytest.fixture(scope="module")
def captions() -> list[str]:
    path = DATA / "flickr8k-1k" / "data.jsonl"
    if not path.is_file():
        pytest.skip(f"flickr8k-1k captions not found at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()[:8]
    texts = [c for line in lines for c in json.loads(line)["captions"]]
    return [*texts, "", "a " * 300]  # empty and over-long (truncated) texts too


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_runtime_choice_and_errors() -> None:
    cpu = torch.device("cpu")
    assert resolve_runtime("auto", cpu) == "onnx"
    assert resolve_runtime("torch", cpu) == "torch"
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        resolve_runtime("tensorrt", cpu)
    with pytest.raises(ValueError, match="no execution provider for device meta"):
        resolve_runtime("onnx", torch.device("meta"))


def test_image_features_equal_torch(real_images: list[Path], one_torch_thread: None) -> None:
    fast = get_image_encoder("efficientnet-lite0", device="cpu")
    slow = get_image_encoder("efficientnet-lite0", device="cpu", runtime="torch")
    assert (fast.runtime, slow.runtime) == ("onnx", "torch")
    assert fast.key == slow.key  # cached features stay valid across the runtime switch
    # batches of 5 (a partial last one): the exported batch axis is dynamic
    a = encode_images(fast, real_images, batch_size=5, num_workers=0, progress=False)
    b = encode_images(slow, real_images, batch_size=5, num_workers=0, progress=False)
    assert a.shape == (len(real_images), 1280)
    assert _row_cosines(a, b).min() >= 0.9999
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_text_features_equal_torch(captions: list[str], one_torch_thread: None) -> None:
    fast = get_text_encoder("minilm", device="cpu")
    slow = get_text_encoder("minilm", device="cpu", runtime="torch")
    assert (fast.runtime, slow.runtime) == ("onnx", "torch")
    assert fast.key == slow.key
    a = fast.encode(captions, batch_size=16, progress=False)
    b = slow.encode(captions, batch_size=16, progress=False)
    assert a.shape == (len(captions), 384)
    assert _row_cosines(a, b).min() >= 0.9999
    np.testing.assert_allclose(a, b, atol=1e-5)


class _Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


def test_graph_is_exported_once_and_a_damaged_one_again(tmp_path: Path) -> None:
    from xmodal.encoders.onnx_runtime import Export

    calls = []

    def build() -> Export:
        calls.append(1)
        return Export(_Double(), (torch.ones(2, 3),), ("x",), ({0: "batch"},))

    model = OnnxModel("double@1/v1", build, torch.device("cpu"), cache_dir=tmp_path)
    out = model.run({"x": np.arange(12, dtype=np.float32).reshape(4, 3)})
    np.testing.assert_array_equal(out, np.arange(12, dtype=np.float32).reshape(4, 3) * 2)
    again = OnnxModel("double@1/v1", build, torch.device("cpu"), cache_dir=tmp_path)
    again.run({"x": np.ones((1, 3), np.float32)})
    assert len(calls) == 1 and again.path == model.path and model.path.parent == tmp_path / "onnx"
    assert not list(model.path.parent.glob("*.tmp"))  # written atomically, nothing left over
    model.path.write_bytes(b"not a graph")
    damaged = OnnxModel("double@1/v1", build, torch.device("cpu"), cache_dir=tmp_path)
    assert damaged.run({"x": np.ones((2, 3), np.float32)}).tolist() == [[2.0] * 3] * 2
    assert len(calls) == 2


def test_exporters_name_their_graphs_and_torchscript_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xmodal.encoders.onnx_runtime import Export

    def build() -> Export:
        return Export(_Double(), (torch.ones(2, 3),), ("x",), ({0: "batch"},))

    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    dynamo = OnnxModel("double@1/v1", build, torch.device("cpu"), cache_dir=tmp_path)
    legacy = OnnxModel("double@1/v1", build, torch.device("cpu"), tmp_path, "torchscript")
    assert legacy.path != dynamo.path  # a graph per exporter, never one read as the other
    np.testing.assert_array_equal(legacy.run({"x": x}), x * 2)  # batch axis dynamic there too
    with pytest.raises(ValueError, match="unknown ONNX exporter 'jit'"):
        OnnxModel("double@1/v1", build, torch.device("cpu"), tmp_path, "jit")

    def unavailable(self: Export, path: Path) -> None:
        raise RuntimeError("this torch has no TorchScript exporter")

    monkeypatch.setattr(Export, "_write_torchscript", unavailable)
    later = OnnxModel("double@2/v1", build, torch.device("cpu"), tmp_path, "torchscript")
    np.testing.assert_array_equal(later.run({"x": x}), x * 2)  # written by dynamo instead


def test_int8_graph_is_quantised_and_named_apart(tmp_path: Path) -> None:
    import onnx

    from xmodal.encoders.onnx_runtime import Export

    linear = torch.nn.Linear(64, 32, bias=False).eval()

    def build() -> Export:
        return Export(linear, (torch.ones(2, 64),), ("x",), ({0: "batch"},))

    x = np.random.default_rng(0).standard_normal((7, 64)).astype(np.float32)
    exact = OnnxModel("linear@1/v1", build, torch.device("cpu"), cache_dir=tmp_path)
    int8 = OnnxModel("linear@1/v1", build, torch.device("cpu"), cache_dir=tmp_path, int8=True)
    assert int8.path != exact.path  # a quantised graph is never read as the float one
    want = x @ linear.weight.detach().numpy().T
    np.testing.assert_allclose(exact.run({"x": x}), want, atol=1e-5)
    got = int8.run({"x": x})  # batch 7: the batch axis stays dynamic
    assert got.shape == want.shape and not np.allclose(got, want, atol=1e-5)
    assert _row_cosines(got, want).min() >= 0.99
    ops = {n.op_type for n in onnx.load(str(int8.path)).graph.node}
    assert "MatMulInteger" in ops and "MatMul" not in ops
    assert not list(tmp_path.rglob("float.onnx"))  # the float scratch graph is cleaned up


def test_minilm_int8_has_its_own_key_and_close_features(captions: list[str]) -> None:
    exact = get_text_encoder("minilm", device="cpu")
    int8 = get_text_encoder("minilm-int8", device="cpu")
    assert int8.name == "minilm-int8" and int8.runtime == "onnx"
    assert int8.key.startswith("minilm-int8@") and int8.key != exact.key
    a = int8.encode(captions, batch_size=16, progress=False)
    b = exact.encode(captions, batch_size=16, progress=False)
    cos = _row_cosines(a, b)
    assert a.shape == (len(captions), 384)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert cos.mean() >= 0.98 and cos.min() >= 0.95 and cos.max() < 0.99999  # close, not equal
    with pytest.raises(ValueError, match="minilm-int8 runs only on ONNX Runtime"):
        get_text_encoder("minilm-int8", device="cpu", runtime="torch")
