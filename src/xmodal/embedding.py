"""From a trained method to embeddings, and from embeddings to the standard metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from xmodal.methods.base import Method

if TYPE_CHECKING:
    from xmodal.querybank import QueryBank
    from xmodal.training.data import PairedFeatures

__all__ = ["embed_features", "embed_pairs", "score_embeddings"]


@torch.inference_mode()
def embed_features(
    method: Method,
    features: np.ndarray | torch.Tensor,
    modality: Literal["image", "text"],
    batch_size: int = 8192,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Run ``method.embed_image`` or ``embed_text`` over ``features`` in batches, in eval mode."""
    if modality not in ("image", "text"):
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
    device = (
        torch.device(device)
        if device is not None
        else next(iter(list(method.parameters()) + list(method.buffers())), torch.zeros(0)).device
    )
    fn = method.embed_image if modality == "image" else method.embed_text
    was_training = method.training
    method.eval()
    try:
        out = [
            fn(
                # np.array copies: cached features are read-only memory maps
                torch.from_numpy(np.array(features[i : i + batch_size], dtype=np.float32)).to(
                    device
                )
            )
            .float()
            .cpu()
            .numpy()
            for i in range(0, len(features), batch_size)
        ]
    finally:
        method.train(was_training)
    dim = method.config.embed_dim
    return np.concatenate(out) if out else np.zeros((0, dim), dtype=np.float32)


def embed_pairs(
    method: Method, features: PairedFeatures, device: torch.device | str | None = None
) -> PairedFeatures:
    """Embed both modalities of one split: the same container, with L2-normalised joint-space
    embeddings as ``image`` and ``text`` (``text_to_image`` and ``labels`` kept, extras dropped)."""
    from xmodal.training.data import PairedFeatures

    return PairedFeatures(
        image=embed_features(method, features.image, "image", device=device),
        text=embed_features(method, features.text, "text", device=device),
        text_to_image=features.text_to_image,
        labels=features.labels,
    )


def score_embeddings(
    emb: PairedFeatures, with_map: bool = True, query_bank: QueryBank | None = None
) -> dict[str, float]:
    """Recall@K both ways and rsum; with labels also ``map_i2t``, ``map_t2i``, ``map_i2i``, ``map_t2t``.

    Similarity is the cosine (embeddings are normalised). With a ``query_bank`` the recalls
    rank by the query-bank normalised score (:mod:`xmodal.querybank`) and ``rsum_cosine``
    keeps the plain-cosine rsum beside them; mAP stays on the cosine. mAP uses multi-label
    relevance (shares at least one label), ties averaged; a caption inherits its image's labels.
    """
    from xmodal.evaluation import cross_modal_map, retrieval_recall

    sim = emb.image @ emb.text.T
    metrics = retrieval_recall(sim, emb.text_to_image)
    if query_bank is not None:
        plain = metrics["rsum"]
        metrics = retrieval_recall(query_bank.similarity(emb.image, emb.text), emb.text_to_image)
        metrics["rsum_cosine"] = plain
    if with_map and emb.labels is not None and emb.labels.any():
        text_labels = emb.labels[emb.text_to_image]
        metrics.update(cross_modal_map(emb.image, emb.text, emb.labels, text_labels))
    return {k: float(v) for k, v in metrics.items()}
