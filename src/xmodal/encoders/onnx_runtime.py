"""Frozen inference through ONNX Runtime: export a torch module once, then run the exported graph.

On a 2-core CPU ONNX Runtime runs the packaged EfficientNet-Lite0 about 6x faster than torch's
eager forward, with features equal to about 1e-5. Each exported graph is stored in the model
store (``$XMODAL_CACHE/onnx/``, see :func:`model_store`) under a name derived from the encoder's
cache key (weights digest + preprocessing) and the ONNX opset, written atomically under a lock
(two processes never export the same graph at once, and a half-written file is never read), and
reused by every later process. The batch axis (and for texts the sequence axis) is dynamic.

Which runtime an encoder uses is its ``runtime=`` argument (:data:`RUNTIMES`):

* ``"torch"``: eager torch (what training and fine-tuning use).
* ``"onnx"``: ONNX Runtime, or a ``ValueError`` saying why it cannot be used.
* ``"auto"`` (the default): ONNX Runtime on a CPU, or on CUDA when ONNX Runtime's CUDA execution
  provider is installed (``onnxruntime-gpu``); torch otherwise.

The runtime never changes an encoder's cache key: both compute the same function of the same
weights and preprocessing, so features cached by either stay valid for the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmodal.io import atomic_write, default_cache_dir, exclusive_lock

__all__ = [
    "EXPORTERS",
    "OPSET",
    "RUNTIMES",
    "Export",
    "OnnxModel",
    "model_store",
    "onnx_available",
    "resolve_runtime",
]

#: ONNX opset of every exported graph (part of its file name).
OPSET = 18
#: Bump when the export recipe changes (part of the file name, so old graphs are not reused).
EXPORT_VERSION = 1
#: Accepted values of an encoder's ``runtime=`` argument.
RUNTIMES = ("auto", "onnx", "torch")
#: ONNX exporters an :class:`OnnxModel` can use: torch's ``torch.export``-based exporter (the
#: default), or its TorchScript-based one, which torch marks deprecated but whose BERT graph ONNX
#: Runtime runs about 25% faster on a 2-core CPU (benchmarks/encode_speed.py); an encoder that
#: asks for it falls back to ``"dynamo"`` once torch no longer ships it.
EXPORTERS = ("dynamo", "torchscript")

_log = logging.getLogger(__name__)


def _check_exporter(exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; choose one of {EXPORTERS}")


def onnx_available() -> bool:
    """Whether ONNX Runtime and the exporter's packages (``onnx``, ``onnxscript``) import."""
    return all(
        importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxscript")
    )


def _providers(device: torch.device) -> list[Any] | None:
    """ONNX Runtime execution providers for ``device``; ``None`` when it cannot run there."""
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0})]
    return None


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """``"onnx"`` or ``"torch"`` for an encoder asked for ``runtime`` on ``device``.

    Raises:
        ValueError: ``runtime`` is not one of :data:`RUNTIMES`, or ``"onnx"`` was asked for where
            ONNX Runtime cannot run (not installed, or no CUDA execution provider on a GPU).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return "torch"
    if not onnx_available():
        if runtime == "onnx":
            raise ValueError(
                "runtime 'onnx' needs onnxruntime, onnx and onnxscript: pip install onnxruntime "
                "onnx onnxscript (or use runtime='torch')"
            )
        return "torch"
    if _providers(device) is None:
        if runtime == "onnx":
            raise ValueError(
                f"ONNX Runtime has no execution provider for device {device} (for CUDA install "
                "onnxruntime-gpu); use runtime='torch'"
            )
        return "torch"
    return "onnx"


def model_store(cache_dir: str | Path | None = None) -> Path:
    """Folder of exported graphs: ``<cache_dir>/onnx`` (default ``$XMODAL_CACHE/onnx``)."""
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / "onnx"


@dataclass(frozen=True)
class Export:
    """What to export: a torch module, example inputs and the names and dynamic axes of the graph.

    Attributes:
        module: The module to export (eval mode, on the CPU); called as ``module(*inputs)``.
        inputs: Example inputs, one per graph input, each at least 2 along its dynamic axes.
        input_names: Graph input names (the keys :meth:`OnnxModel.run` takes).
        dynamic: For each input, its dynamic axes as ``{axis: name}`` (same name = same size).
        output_name: Name of the single graph output.
    """

    module: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    dynamic: tuple[Mapping[int, str], ...]
    output_name: str = "features"

    def write(self, path: Path, exporter: str = "dynamo") -> None:
        """Export to ``path`` with ``exporter`` (one of :data:`EXPORTERS`; not atomic:
        :class:`OnnxModel` writes to a temporary file)."""
        _check_exporter(exporter)
        quiet = logging.getLogger("torch.onnx")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..." and the like
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(_Discard()):
                warnings.simplefilter("ignore")
                if exporter == "torchscript":
                    try:
                        self._write_torchscript(path)
                        return
                    except Exception as e:  # a torch without the legacy exporter
                        _log.warning("TorchScript ONNX export failed (%s); using dynamo", e)
                self._write_dynamo(path)
        finally:
            quiet.setLevel(level)

    def _write_dynamo(self, path: Path) -> None:
        dims: dict[str, torch.export.Dim] = {}
        shapes = tuple(
            {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in axes.items()}
            for axes in self.dynamic
        )
        self._torch_export(
            path, dynamo=True, dynamic_shapes=shapes, external_data=False, verbose=False
        )

    def _write_torchscript(self, path: Path) -> None:
        axes = dict(zip(self.input_names, map(dict, self.dynamic), strict=True))
        self._torch_export(path, dynamo=False, dynamic_axes=axes)

    def _torch_export(self, path: Path, **exporter_options: Any) -> None:
        torch.onnx.export(
            self.module,
            self.inputs,
            str(path),
            input_names=list(self.input_names),
            output_names=[self.output_name],
            opset_version=OPSET,
            **exporter_options,
        )


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _write_int8(spec: Export, path: Path, exporter: str) -> None:
    """Export ``spec`` to a scratch float graph, then write its int8 quantisation to ``path``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # quantize_dynamic warns on the root logger about pre-processing
    level = root.level
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        float_graph = Path(scratch) / "float.onnx"
        spec.write(float_graph, exporter)
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                float_graph,
                path,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                per_channel=True,
            )
        finally:
            root.setLevel(level)


class OnnxModel:
    """An exported graph in the model store and the ONNX Runtime session that runs it.

    The graph is exported on first use (``build()`` supplies the :class:`Export`), then reused by
    every process that asks for the same ``key``. Sessions use ``torch.get_num_threads()``
    intra-op threads (as the torch path would) and, unless ``spin``, do not spin idle threads,
    so data-loader workers keep the cores they need. ``run`` is thread-safe.

    Args:
        key: Identity of the graph: the encoder's cache key (weights digest + preprocessing).
        build: Returns the :class:`Export` (called only when the graph is not in the store yet).
        device: Where the session runs (CPU, or CUDA with ``onnxruntime-gpu``).
        cache_dir: Cache root (default ``$XMODAL_CACHE``); graphs go to its ``onnx/`` folder.
        exporter: Which torch exporter writes the graph (:data:`EXPORTERS`; part of its name).
        spin: Let idle intra-op threads spin between operators. Off by default so that image
            data-loader workers keep the cores; on for an encoder whose pipeline has no such
            workers (MiniLM: its tokeniser thread is light), where it saves the threads'
            wake-up at every operator.
        int8: Store the graph with its ``MatMul`` weights quantised to int8, one scale per
            output channel, and activations quantised at run time (ONNX Runtime's dynamic
            quantisation; part of the graph's name). A CPU with VNNI runs MiniLM's about 2.4x
            faster, but the features change (mean cosine about 0.994 to the float graph's), so
            an encoder that uses it needs a cache key of its own.
    """

    def __init__(
        self,
        key: str,
        build: Callable[[], Export],
        device: torch.device,
        cache_dir: str | Path | None = None,
        exporter: str = "dynamo",
        spin: bool = False,
        int8: bool = False,
    ) -> None:
        _check_exporter(exporter)
        self.key, self.device, self._build, self.exporter = key, device, build, exporter
        self.spin, self.int8 = spin, int8
        ident = f"{key}|opset{OPSET}|export-v{EXPORT_VERSION}"
        if exporter != "dynamo":  # the default's names predate the choice: keep them
            ident += f"|{exporter}"
        if int8:
            ident += "|int8-dynamic-per-channel"
        digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
        name = key.split("@", 1)[0].replace("/", "_").replace(":", "_")
        self.path = model_store(cache_dir) / f"{name}-{digest}.onnx"
        self._session: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OnnxModel({self.key!r}, path={str(self.path)!r})"

    def _export(self) -> None:
        _log.info("exporting %s to ONNX (once) at %s", self.key, self.path)
        spec = self._build()
        write = _write_int8 if self.int8 else Export.write
        atomic_write(self.path, lambda tmp: write(spec, tmp, self.exporter))
        self.path.chmod(0o644)  # mkstemp made it private; the store is shared like the cache

    def _open(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(self.spin)))
        options.log_severity_level = 3
        return ort.InferenceSession(str(self.path), options, providers=_providers(self.device))

    @property
    def session(self) -> Any:
        """The ``onnxruntime.InferenceSession`` (exporting the graph first if needed)."""
        with self._lock:
            if self._session is None:
                self._session = self._load()
            return self._session

    def _load(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.path.with_suffix(".lock")):
            if not self.path.is_file():
                self._export()
            try:
                return self._open()
            except Exception as e:  # a damaged file in the store: export it again, once
                _log.warning("re-exporting unreadable ONNX graph %s (%s)", self.path, e)
                self._export()
                return self._open()

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the graph on named NumPy inputs; the single output as float32."""
        out = self.session.run(None, dict(inputs))[0]
        return np.asarray(out, dtype=np.float32)
