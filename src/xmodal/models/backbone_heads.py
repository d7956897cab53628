"""Heads that train the top layers of a backbone over its cached lower-layer features.

Partial fine-tuning without a second code path: the frozen lower layers run once (the
intermediate encoders of :mod:`xmodal.encoders.intermediate`, through the feature cache), and a
head holds copies of the pretrained TOP layers followed by the usual :class:`ProjectionHead`. The
trainer sees an ordinary head over ordinary 2-D feature rows; the copied layers learn at
``lr * lr_scale`` (:mod:`xmodal.models.param_groups`).

* ``mlp``: any ``[n, d]`` features; a :class:`ProjectionHead` only.
* ``minilm-top<k>``: ``minilm.tokens-l<6-k>`` features; MiniLM's last ``k`` transformer layers,
  masked mean pooling, L2 normalisation, then the projection.
* ``efficientnet-top<k>``: ``efficientnet-lite0.blocks-<16-k>`` features; EfficientNet-Lite0's
  last ``k`` MBConv blocks, head convolution, BN, ReLU6, global average pooling, then the
  projection.

With the copied layers unchanged, the backbone part reproduces the full frozen encoder's
features (``minilm``, ``efficientnet-lite0``) up to float rounding, so a ``*-top<k>`` tower
starts from exactly the frozen baseline's inputs.

Example::

    tower = build_tower("minilm-top2", 40 * 384, out_dim=256, lr_scale=0.1)
    emb = tower(torch.from_numpy(rows))            # rows: minilm.tokens-l4 features
    optimizer = torch.optim.AdamW(tower.parameter_groups(lr=1e-3))
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from xmodal.encoders.intermediate import token_mask
from xmodal.models.heads import ProjectionHead
from xmodal.models.param_groups import param_groups, set_lr_scale

__all__ = [
    "BackboneTop",
    "BackboneTopHead",
    "EfficientNetTop",
    "EfficientNetTopHead",
    "MiniLMTop",
    "MiniLMTopHead",
    "TransformerLayer",
    "build_tower",
    "list_towers",
    "tower_encoder",
]

_TOWER = re.compile(r"^(?P<family>[a-z]+)-top(?P<k>\d+)$")
#: Rows processed at once by a backbone part when no gradient is needed (bounds eval memory).
EVAL_CHUNK = 256


def _chunked(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int
) -> torch.Tensor:
    """``fn(x)``, in row chunks of ``chunk`` when gradients are off (evaluation of big splits)."""
    if torch.is_grad_enabled() or x.shape[0] <= chunk:
        return fn(x)
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


# --- MiniLM -----------------------------------------------------------------------------------
_BERT_NAMES = {  # TransformerLayer part -> BERT layer sub-module
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
    "ffn_norm": "output.LayerNorm",
}


class TransformerLayer(nn.Module):
    """A post-LayerNorm BERT encoder layer (self-attention + GELU feed-forward), in plain torch.

    Parameter names follow the layer's parts, not the ``transformers`` classes, so checkpoints do
    not depend on the ``transformers`` version; :meth:`load_bert` copies a BERT layer's weights.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        ffn_width: int,
        eps: float = 1e-12,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads, self.attention_dropout = heads, attention_dropout
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.attention_out = nn.Linear(width, width)
        self.attention_norm = nn.LayerNorm(width, eps=eps)
        self.ffn_in = nn.Linear(width, ffn_width)
        self.ffn_out = nn.Linear(ffn_width, width)
        self.ffn_norm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def load_bert(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Copy the weights of the BERT layer whose state-dict keys start with ``prefix``."""
        ours = {}
        for mine, theirs in _BERT_NAMES.items():
            for what in ("weight", "bias"):
                key = f"{prefix}{theirs}.{what}"
                if key not in state:
                    raise ValueError(f"BERT weights lack {key!r}")
                ours[f"{mine}.{what}"] = state[key]
        self.load_state_dict(ours, strict=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, width]`` tokens and ``[B, T]`` boolean mask (True = real) -> ``[B, T, width]``."""
        b, t, width = x.shape
        heads = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, heads, width // heads).transpose(1, 2)

        attn = F.scaled_dot_product_attention(
            split(self.query(x)),
            split(self.key(x)),
            split(self.value(x)),
            attn_mask=mask[:, None, None, :],
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        attn = attn.transpose(1, 2).reshape(b, t, width)
        x = self.attention_norm(x + self.dropout(self.attention_out(attn)))
        y = self.ffn_out(F.gelu(self.ffn_in(x)))
        return self.ffn_norm(x + self.dropout(y))


def _bert_state(model_path: Path) -> dict[str, torch.Tensor]:
    safetensors = model_path / "model.safetensors"
    if safetensors.is_file():
        from safetensors.torch import load_file

        state = load_file(str(safetensors))
    else:
        state = torch.load(model_path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    if not any(k.startswith("encoder.") for k in state):  # checkpoints saved from BertFor*
        state = {k.removeprefix("bert."): v for k, v in state.items()}
    return state


class BackboneTop(nn.Module):
    """Trainable copies of a frozen encoder's top layers, reading the features of its cut point."""

    def check_dim(self, in_dim: int) -> None:
        """Raise ``ValueError`` unless feature rows of width ``in_dim`` fit the cut point."""
        raise NotImplementedError


class MiniLMTop(BackboneTop):
    """The last ``top_layers`` layers of all-MiniLM-L6-v2, masked mean pooling, L2 normalisation.

    Input rows are ``minilm.tokens-l<L - top_layers>`` features: ``[B, T * width]`` (all-zero
    token rows are padding). Output: ``[B, width]`` unit vectors, equal to the ``minilm``
    encoder's while the layers are unchanged (and the text fits in ``T`` tokens).

    Args:
        top_layers: How many of the model's last layers to copy (0: pooling only).
        model_path: A sentence-transformers BERT folder (default: the packaged MiniLM).
        dropout: Dropout inside the copied layers while training (BERT's, 0.1 by default).
    """

    def __init__(
        self,
        top_layers: int,
        model_path: str | Path | None = None,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        from xmodal.encoders.minilm import default_model_path

        path = Path(model_path) if model_path is not None else default_model_path()
        config = json.loads((path / "config.json").read_text())
        pooling = path / "1_Pooling" / "config.json"
        if pooling.is_file() and not json.loads(pooling.read_text()).get(
            "pooling_mode_mean_tokens", False
        ):
            raise ValueError(f"{path} does not use mean pooling; MiniLMTop pools by the mean")
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: hidden_act {config['hidden_act']!r} is not 'gelu'")
        n_layers = int(config["num_hidden_layers"])
        if not 0 <= top_layers <= n_layers:
            raise ValueError(f"top_layers must be in 0..{n_layers}, got {top_layers}")
        self.width = int(config["hidden_size"])
        self.first_layer = n_layers - top_layers
        state = _bert_state(path)
        p_drop = config.get("hidden_dropout_prob", 0.1) if dropout is None else dropout
        a_drop = config.get("attention_probs_dropout_prob", 0.1) if dropout is None else dropout
        self.layers = nn.ModuleList()
        for i in range(self.first_layer, n_layers):
            layer = TransformerLayer(
                self.width,
                int(config["num_attention_heads"]),
                int(config["intermediate_size"]),
                eps=float(config.get("layer_norm_eps", 1e-12)),
                dropout=p_drop,
                attention_dropout=a_drop,
            )
            layer.load_bert(state, f"encoder.layer.{i}.")
            self.layers.append(layer)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.view(x.shape[0], -1, self.width)
        mask = token_mask(tokens)
        length = int(mask.sum(dim=1).max().clamp(min=1))
        tokens, mask = tokens[:, :length], mask[:, :length]  # padding is at the end: trim it
        for layer in self.layers:
            tokens = layer(tokens, mask)
        weights = mask.to(tokens.dtype)[..., None]
        pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def check_dim(self, in_dim: int) -> None:
        """``ValueError`` unless ``in_dim``-wide rows are ``T * width`` token rows."""
        if in_dim <= 0 or in_dim % self.width:
            raise ValueError(
                f"MiniLMTop needs [B, T * {self.width}] token rows "
                f"(minilm.tokens-l{self.first_layer} features), got {in_dim}-d rows"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_dim(x.shape[-1] if x.ndim == 2 else -1)
        return _chunked(self._forward, x, EVAL_CHUNK)


# --- EfficientNet-Lite0 -----------------------------------------------------------------------
class EfficientNetTop(BackboneTop):
    """The last ``top_blocks`` MBConv blocks of EfficientNet-Lite0, head conv, BN, ReLU6, pool.

    Input rows are ``efficientnet-lite0.blocks-<16 - top_blocks>`` features (``[B, C * H * W]``,
    NCHW order). Output: ``[B, 1280]``, equal to the ``efficientnet-lite0`` encoder's while the
    layers are unchanged. BatchNorm keeps its pretrained running statistics (``train_bn=False``:
    its layers stay in eval mode; their affine weights still learn); drop connect in the copied
    blocks is the pretrained model's, active while training.

    Args:
        top_blocks: How many of the 16 blocks to copy (0: head convolution only).
        weights: A state-dict file (default: the packaged ImageNet weights).
        train_bn: Let BatchNorm use batch statistics and update its running ones while training.
    """

    def __init__(
        self, top_blocks: int, weights: str | Path | None = None, train_bn: bool = False
    ) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        from xmodal.encoders.efficientnet import default_weights_path

        model = EfficientNet.from_name("efficientnet-lite0")
        path = Path(weights) if weights is not None else default_weights_path()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        n_blocks = len(model._blocks)
        if not 0 <= top_blocks <= n_blocks:
            raise ValueError(f"top_blocks must be in 0..{n_blocks}, got {top_blocks}")
        self.first_block = n_blocks - top_blocks
        self.train_bn = train_bn
        rate = model._global_params.drop_connect_rate or 0.0
        self.drop_connect = [rate * i / n_blocks for i in range(self.first_block, n_blocks)]
        self.blocks = copy.deepcopy(model._blocks[self.first_block :])
        self.conv_head, self.bn = copy.deepcopy(model._conv_head), copy.deepcopy(model._bn1)
        self.act = nn.ReLU6()
        self.in_channels = (
            self.blocks[0]._block_args.input_filters if top_blocks else self.conv_head.in_channels
        )
        self.out_dim = int(self.conv_head.out_channels)
        self.train(self.training)  # puts BatchNorm in eval mode unless train_bn

    def train(self, mode: bool = True) -> EfficientNetTop:
        super().train(mode)
        if not self.train_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        side = math.isqrt(x.shape[1] // self.in_channels)
        fmap = x.view(x.shape[0], self.in_channels, side, side)
        fmap = fmap.contiguous(memory_format=torch.channels_last)
        for block, rate in zip(self.blocks, self.drop_connect, strict=True):
            fmap = block(fmap, drop_connect_rate=rate)
        fmap = self.act(self.bn(self.conv_head(fmap)))
        return fmap.mean(dim=(2, 3))

    def check_dim(self, in_dim: int) -> None:
        """``ValueError`` unless ``in_dim``-wide rows are square ``C * H * W`` feature maps."""
        c = self.in_channels
        side = math.isqrt(in_dim // c) if in_dim > 0 else 0
        if side == 0 or c * side * side != in_dim:
            raise ValueError(
                f"EfficientNetTop needs [B, {c} * H * W] feature maps with H = W "
                f"(efficientnet-lite0.blocks-{self.first_block} features), got {in_dim}-d rows"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_dim(x.shape[-1] if x.ndim == 2 else -1)
        return _chunked(self._forward, x, EVAL_CHUNK)


# --- heads ------------------------------------------------------------------------------------
class BackboneTopHead(nn.Module):
    """A backbone part (trainable copies of pretrained top layers) followed by a projection.

    The backbone's parameters carry the learning-rate multiplier ``lr_scale``.

    Args:
        backbone: Maps feature rows ``[B, in_dim]`` to ``[B, backbone_dim]``.
        backbone_dim: Width of the backbone's output.
        out_dim, hidden, dropout: Those of the :class:`ProjectionHead`.
        lr_scale: Learning-rate multiplier of the backbone part (0 freezes it).
    """

    def __init__(
        self,
        backbone: BackboneTop,
        backbone_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (1024,),
        dropout: float = 0.1,
        lr_scale: float = 0.1,
    ) -> None:
        super().__init__()
        set_lr_scale(backbone, lr_scale)
        self.backbone = backbone
        if lr_scale == 0:
            backbone.requires_grad_(False)
        self.projection = ProjectionHead(backbone_dim, out_dim, hidden, dropout)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.backbone(x))

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups: the backbone at ``lr * lr_scale``, the projection at ``lr``."""
        return param_groups((p for p in self.parameters() if p.requires_grad), lr)


class MiniLMTopHead(BackboneTopHead):
    """:class:`MiniLMTop` (``top_layers`` trainable MiniLM layers) + :class:`ProjectionHead`."""

    def __init__(
        self,
        top_layers: int,
        out_dim: int,
        hidden: Sequence[int] = (1024,),
        dropout: float = 0.1,
        lr_scale: float = 0.1,
        model_path: str | Path | None = None,
    ) -> None:
        backbone = MiniLMTop(top_layers, model_path=model_path)
        super().__init__(backbone, backbone.width, out_dim, hidden, dropout, lr_scale)


class EfficientNetTopHead(BackboneTopHead):
    """:class:`EfficientNetTop` (last ``top_blocks`` blocks + head conv) + :class:`ProjectionHead`."""

    def __init__(
        self,
        top_blocks: int,
        out_dim: int,
        hidden: Sequence[int] = (1024,),
        dropout: float = 0.1,
        lr_scale: float = 0.1,
        weights: str | Path | None = None,
    ) -> None:
        backbone = EfficientNetTop(top_blocks, weights=weights)
        super().__init__(backbone, backbone.out_dim, out_dim, hidden, dropout, lr_scale)


# --- the tower factory ------------------------------------------------------------------------
#: Builds a top head from ``(layers, out_dim, hidden, dropout, lr_scale)``.
TopHeadFactory = Callable[[int, int, Sequence[int], float, float], BackboneTopHead]

_FAMILIES: dict[str, tuple[TopHeadFactory, str, int]] = {
    # family: (head class, encoder name template taking the cut point, number of layers)
    "minilm": (MiniLMTopHead, "minilm.tokens-l{}", 6),
    "efficientnet": (EfficientNetTopHead, "efficientnet-lite0.blocks-{}", 16),
}


def _parse(name: str) -> tuple[str, int]:
    m = _TOWER.match(name)
    if not m or m["family"] not in _FAMILIES:
        raise ValueError(f"unknown tower {name!r}; known: {', '.join(list_towers())}")
    family, k = m["family"], int(m["k"])
    depth = _FAMILIES[family][2]
    if k > depth:
        raise ValueError(f"tower {name!r}: {family} has {depth} layers, cannot train the top {k}")
    return family, k


def list_towers() -> list[str]:
    """Tower name patterns accepted by :func:`build_tower`."""
    return ["mlp", *(f"{f}-top<k>" for f in _FAMILIES)]


def tower_encoder(name: str) -> str | None:
    """The registered encoder whose features the tower ``name`` reads (``None`` for ``mlp``).

    Example:
        >>> tower_encoder("minilm-top2")
        'minilm.tokens-l4'
    """
    if name == "mlp":
        return None
    family, k = _parse(name)
    _, template, depth = _FAMILIES[family]
    return template.format(depth - k)


def build_tower(
    name: str,
    in_dim: int,
    out_dim: int,
    hidden: Sequence[int] = (1024,),
    dropout: float = 0.1,
    lr_scale: float = 0.1,
) -> nn.Module:
    """The head ``name`` from ``in_dim`` feature rows to ``out_dim`` (unnormalised) embeddings.

    Args:
        name: ``"mlp"`` (a :class:`ProjectionHead`), ``"minilm-top<k>"`` or
            ``"efficientnet-top<k>"`` (a :class:`BackboneTopHead` training the backbone's top
            ``k`` layers; its features must come from :func:`tower_encoder` ``(name)``).
        in_dim: Width of the feature rows.
        out_dim, hidden, dropout: Those of the projection.
        lr_scale: Learning-rate multiplier of the copied backbone layers.

    Raises:
        ValueError: an unknown tower, or features of the wrong width for it.
    """
    if name == "mlp":
        return ProjectionHead(in_dim, out_dim, hidden, dropout)
    family, k = _parse(name)
    cls = _FAMILIES[family][0]
    head = cls(k, out_dim, hidden, dropout, lr_scale)
    try:
        head.backbone.check_dim(in_dim)
    except ValueError as e:
        raise ValueError(f"tower {name!r} reads {tower_encoder(name)} features: {e}") from None
    return head
