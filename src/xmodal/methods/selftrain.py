"""Self-training on pseudo-pairs mined in an unpaired target domain (``selftrain(<base>)``).

What the transfer literature does when feature alignment alone does not carry a cross-modal
space over to a new domain: trust the joint space where it is most confident, and learn from
that. Target images and target texts are matched by **mutual nearest neighbours** under
**CSLS** (cross-domain similarity local scaling, Conneau et al., "Word translation without
parallel data", ICLR 2018, eq. 6), which discounts "hub" items that are near everything::

    r_T(u) = mean of the k largest cos(u, w) over target texts w     (u's text neighbourhood)
    r_I(w) = mean of the k largest cos(u, w) over target images u
    CSLS(u, w) = 2 cos(u, w) − r_T(u) − r_I(w)

A pair ``(u, w)`` is a pseudo-pair when ``w`` is ``u``'s best text and ``u`` is ``w``'s best
image under CSLS; its CSLS value is its confidence, and the ``top_fraction`` most confident
pairs (optionally only those above ``min_score``) are kept. Training then adds the base's own
objective on a batch of pseudo-pairs to the base's objective on the source pairs
(pseudo-labelling / self-training, as in the "refinement" rounds of the same paper and in
self-training for domain adaptation, e.g. Zou et al., ECCV 2018)::

    L = L_base(source batch) + pseudo_weight · L_base(pseudo-pair batch)

The first ``warmup_epochs`` train on the source alone; then the pairs are mined again from the
current embeddings every ``refresh_epochs`` (each mining is one self-training round), so
pseudo-pairs that the improving space now contradicts drop out. Target pairs are never used:
the miner sees the target images and texts separately (``Trainer.fit(..., unpaired=...)``), and
checkpoints are selected on the source validation split like any other run. Choose the
confidence threshold ``min_score`` on the source validation split with
:func:`calibrate_min_score` (mined there from a source-only model, where the true pairs are
known), or ``top_fraction`` from :func:`pseudo_pair_precision`.

The base must be a pairwise objective that needs neither labels nor per-row extras (``infonce``,
``vse``, ``cusa(...)``); the pseudo-pair batch carries neither.

One forward pass per step: the source rows and the pseudo-pair rows go through the base's
forward together, and its outputs are split into the two row sets (``Outputs.members``: source,
pseudo-pairs), on which the base's objective is computed separately. The pseudo-pairs are drawn
with each process's own generator, so the objective is per process (``global_negatives`` is
``False``: ``--ddp`` refuses it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xmodal.methods.base import Batch, Outputs, Terms, TrainingData, WrappedConfig, WrapperMethod
from xmodal.methods.registry import register_method

__all__ = [
    "PseudoPairs",
    "SelfTrain",
    "SelfTrainConfig",
    "calibrate_min_score",
    "mutual_nearest_pairs",
    "pseudo_pair_precision",
]


@dataclass(frozen=True)
class PseudoPairs:
    """Mutual-nearest-neighbour pairs, most confident first.

    Attributes:
        image: ``[n_pairs]`` row of each pair's image.
        text: ``[n_pairs]`` row of each pair's text.
        score: ``[n_pairs]`` CSLS value of each pair (descending).
    """

    image: torch.Tensor
    text: torch.Tensor
    score: torch.Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def top(self, fraction: float = 1.0, min_score: float | None = None) -> PseudoPairs:
        """The ``ceil(fraction · n)`` most confident pairs, then only those scoring ≥ ``min_score``."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        n = int(np.ceil(fraction * len(self)))
        keep = torch.arange(len(self), device=self.score.device) < n
        if min_score is not None:
            keep &= self.score >= min_score
        return PseudoPairs(self.image[keep], self.text[keep], self.score[keep])


def _neighbourhood(query: torch.Tensor, db: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Mean cosine of each query row's ``k`` nearest ``db`` rows (0 when ``k == 0``)."""
    if k == 0:
        return torch.zeros(query.shape[0], dtype=query.dtype, device=query.device)
    k = min(k, db.shape[0])
    return torch.cat(
        [
            (query[s : s + chunk] @ db.T).topk(k, dim=1).values.mean(1)
            for s in range(0, len(query), chunk)
        ]
    )


def _best(
    query: torch.Tensor, db: torch.Tensor, db_penalty: torch.Tensor, chunk: int
) -> torch.Tensor:
    """For each query row, the ``db`` row maximising ``2 cos − db_penalty`` (first on ties)."""
    return torch.cat(
        [
            (2 * (query[s : s + chunk] @ db.T) - db_penalty[None, :]).argmax(dim=1)
            for s in range(0, len(query), chunk)
        ]
    )


@torch.no_grad()
def mutual_nearest_pairs(
    image_emb: torch.Tensor | np.ndarray,
    text_emb: torch.Tensor | np.ndarray,
    k: int = 10,
    chunk_size: int = 2048,
) -> PseudoPairs:
    """Pairs ``(u, w)`` that are each other's best match under CSLS with ``k`` neighbours.

    Args:
        image_emb: ``[n_images, d]`` L2-normalised image embeddings.
        text_emb: ``[n_texts, d]`` L2-normalised text embeddings.
        k: CSLS neighbourhood size; ``0`` ranks by plain cosine.
        chunk_size: Rows scored at once (memory ``chunk_size × max(n_images, n_texts)``).

    Returns:
        The pairs, sorted by descending CSLS value (ties by image row).

    Example:
        >>> img = torch.eye(3)
        >>> txt = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
        >>> pairs = mutual_nearest_pairs(img, txt, k=0)
        >>> pairs.image.tolist(), pairs.text.tolist()
        ([0, 1], [1, 0])
    """
    img = torch.as_tensor(image_emb, dtype=torch.float32)
    txt = torch.as_tensor(text_emb, dtype=torch.float32)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise ValueError(
            f"need [n, d] embeddings of one size, got {tuple(img.shape)}, {tuple(txt.shape)}"
        )
    if k < 0 or chunk_size < 1:
        raise ValueError(f"k must be >= 0 and chunk_size >= 1, got {k}, {chunk_size}")
    empty = torch.zeros(0, dtype=torch.long, device=img.device)
    if len(img) == 0 or len(txt) == 0:
        return PseudoPairs(empty, empty, torch.zeros(0, device=img.device))
    r_img = _neighbourhood(img, txt, k, chunk_size)  # r_T(u)
    r_txt = _neighbourhood(txt, img, k, chunk_size)  # r_I(w)
    best_text = _best(img, txt, r_txt, chunk_size)
    best_image = _best(txt, img, r_img, chunk_size)
    rows = torch.arange(len(img), device=img.device)
    mutual = best_image[best_text] == rows
    u, w = rows[mutual], best_text[mutual]
    score = 2 * (img[u] * txt[w]).sum(1) - r_img[u] - r_txt[w]
    order = torch.argsort(score, descending=True, stable=True)
    return PseudoPairs(u[order], w[order], score[order])


def pseudo_pair_precision(
    pairs: PseudoPairs, text_to_image: np.ndarray | torch.Tensor, fractions: Sequence[float]
) -> dict[float, float]:
    """Share of correct pairs (``text_to_image[text] == image``) among the ``fraction`` most
    confident ones, for each fraction: how far the miner can be trusted where pairs are known."""
    t2i = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
    correct = (t2i[pairs.text.cpu()] == pairs.image.cpu()).float()
    out = {}
    for f in fractions:
        n = len(pairs.top(f))
        out[float(f)] = float(correct[:n].mean()) if n else 0.0
    return out


def calibrate_min_score(
    pairs: PseudoPairs, text_to_image: np.ndarray | torch.Tensor, min_precision: float = 0.5
) -> float:
    """The lowest CSLS value such that the pairs scoring at least that are right at least
    ``min_precision`` of the time, measured where the true pairs are known (the source
    validation split); ``inf`` when no prefix is that precise. Use it as ``min_score``: a
    target pair is kept only when the space is as confident about it as about source pairs
    that were mostly right, so a target the space does not understand yields few pairs."""
    if not 0 < min_precision <= 1:
        raise ValueError(f"min_precision must be in (0, 1], got {min_precision}")
    t2i = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
    correct = (t2i[pairs.text.cpu()] == pairs.image.cpu()).double()
    precision = correct.cumsum(0) / torch.arange(1, len(correct) + 1, dtype=torch.double)
    ok = torch.nonzero(precision >= min_precision).flatten()
    return float(pairs.score[int(ok[-1])]) if len(ok) else float("inf")


@dataclass
class SelfTrainConfig(WrappedConfig):
    """Options of :class:`SelfTrain`.

    Attributes:
        warmup_epochs: Epochs of source-only training before the first mining.
        refresh_epochs: Pairs are mined again after every this many epochs (one round each).
        csls_k: CSLS neighbourhood size (0: plain cosine).
        top_fraction: Share of the mutual-nearest-neighbour pairs kept, most confident first.
        min_score: Optional lower bound on a kept pair's CSLS value.
        pseudo_weight: Weight of the base objective on pseudo-pairs.
        pseudo_batch: Pseudo-pairs per step (default: as many as the source batch has rows).
    """

    warmup_epochs: float = 1.0
    refresh_epochs: float = 1.0
    csls_k: int = 10
    top_fraction: float = 0.5
    min_score: float | None = None
    pseudo_weight: float = 1.0
    pseudo_batch: int | None = None

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0 or self.refresh_epochs <= 0:
            raise ValueError(
                "warmup_epochs must be >= 0 and refresh_epochs > 0, got "
                f"{self.warmup_epochs}, {self.refresh_epochs}"
            )
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if self.csls_k < 0 or self.pseudo_weight < 0:
            raise ValueError(
                f"csls_k and pseudo_weight must be >= 0, got {self.csls_k}, {self.pseudo_weight}"
            )
        if self.pseudo_batch is not None and self.pseudo_batch < 2:
            raise ValueError(f"pseudo_batch must be >= 2 (or None), got {self.pseudo_batch}")


@register_method
class SelfTrain(WrapperMethod[SelfTrainConfig]):
    """The base objective on source pairs plus the same objective on mined target pseudo-pairs.

    After training, :attr:`pseudo_pairs` holds the last mined (kept) pairs, as target-row indices.
    """

    name = "selftrain"
    Config = SelfTrainConfig
    needs_target = True

    def __init__(self, config: SelfTrainConfig, image_dim: int, text_dim: int) -> None:
        super().__init__(config, image_dim, text_dim)
        self.pseudo_pairs: PseudoPairs | None = None
        self.rounds = 0
        self._target: tuple[torch.Tensor, torch.Tensor] | None = None
        self._rows_per_epoch = 0
        self._rows_seen = 0

    def prepare(self, data: TrainingData) -> None:
        super().prepare(data)
        if data.target_image_features is None or data.target_text_features is None:
            raise ValueError(
                "selftrain needs unpaired target images and texts: train with "
                "Trainer.fit(train, val, unpaired=UnpairedFeatures(image=..., text=...))"
            )
        self._target = (data.target_image_features, data.target_text_features)
        self._rows_per_epoch = int(data.text_features.shape[0])
        self._rows_seen = 0
        self.pseudo_pairs, self.rounds = None, 0

    def _embed_all(self, features: torch.Tensor, modality: str, chunk: int = 8192) -> torch.Tensor:
        fn = self.embed_image if modality == "image" else self.embed_text
        return torch.cat([fn(features[s : s + chunk]) for s in range(0, len(features), chunk)])

    @torch.no_grad()
    def mine(self) -> PseudoPairs:
        """Mine and keep pseudo-pairs from the current embeddings of the whole target set."""
        cfg = self.config
        if self._target is None:
            raise RuntimeError("selftrain.mine() before prepare(): no target data")
        was_training = self.training
        self.eval()
        try:
            img = self._embed_all(self._target[0], "image")
            txt = self._embed_all(self._target[1], "text")
        finally:
            self.train(was_training)
        pairs = mutual_nearest_pairs(img, txt, k=cfg.csls_k).top(cfg.top_fraction, cfg.min_score)
        self.pseudo_pairs, self.rounds = pairs, self.rounds + 1
        return pairs

    def _due(self) -> bool:
        cfg = self.config
        start = cfg.warmup_epochs * self._rows_per_epoch
        if self._rows_seen < start:
            return False
        return self.rounds <= (self._rows_seen - start) // (
            cfg.refresh_epochs * self._rows_per_epoch
        )

    def _pseudo_batch(self, n: int) -> Batch:
        assert self.pseudo_pairs is not None and self._target is not None
        pick = torch.randint(len(self.pseudo_pairs), (min(n, len(self.pseudo_pairs)),))
        pick = pick.to(self.pseudo_pairs.image.device)
        img_rows, txt_rows = self.pseudo_pairs.image[pick], self.pseudo_pairs.text[pick]
        return Batch(
            image=self._target[0][img_rows],
            text=self._target[1][txt_rows],
            image_index=img_rows,
            text_index=txt_rows,
        )

    def forward(self, batch: Batch, stage: str = "main") -> Outputs:
        """The base's one forward pass over the source rows and (once mined) a batch of
        pseudo-pairs; ``members`` are the two row sets' outputs."""
        cfg = self.config
        if not self.adds_terms(stage):
            return super().forward(batch, stage)
        if self._target is None:
            raise ValueError(
                "selftrain was not prepared with target data (Trainer.fit(..., unpaired=...))"
            )
        if self.training:
            self._rows_seen += int(batch.text.shape[0])
            if self._due():
                self.mine()
        n_pairs = 0 if self.pseudo_pairs is None else len(self.pseudo_pairs)
        if n_pairs < 2 or cfg.pseudo_weight <= 0:
            source: Outputs = self.base(batch, stage)
            return Outputs(
                image_index=source.image_index,
                image=source.image,
                text=source.text,
                members=(source,),
            )
        pseudo = self._pseudo_batch(cfg.pseudo_batch or len(batch.text))
        joint = Batch(
            image=torch.cat([batch.image, pseudo.image]),
            text=torch.cat([batch.text, pseudo.text]),
            image_index=torch.cat([batch.image_index, pseudo.image_index]),
            text_index=torch.cat([batch.text_index, pseudo.text_index]),
        )
        both: Outputs = self.base(joint, stage)
        n = int(batch.text.shape[0])
        source, pseudo_out = both.rows(slice(0, n)), both.rows(slice(n, None))
        return Outputs(
            image_index=source.image_index,
            image=source.image,
            text=source.text,
            members=(source, pseudo_out),
            extra={
                "pseudo_image": pseudo.image,
                "pseudo_text": pseudo.text,
                "pseudo_text_index": pseudo.text_index,
            },
        )

    def objective(self, outputs: Outputs, batch: Batch, stage: str = "main") -> Terms:
        if not self.adds_terms(stage):
            return self.base.objective(outputs, batch, stage)
        terms = self.base.objective(outputs.members[0], batch, stage)
        n_pairs = 0 if self.pseudo_pairs is None else len(self.pseudo_pairs)
        logs = {"base_loss": terms.total(), "pseudo_pairs": torch.tensor(float(n_pairs))}
        if len(outputs.members) > 1:
            pseudo_out = outputs.members[1]
            pseudo_batch = Batch(
                image=outputs.get("pseudo_image"),
                text=outputs.get("pseudo_text"),
                image_index=pseudo_out.image_index,
                text_index=outputs.get("pseudo_text_index"),
            )
            pseudo = self.base.objective(pseudo_out, pseudo_batch, stage).total()
            terms.add("pseudo_loss", pseudo, self.config.pseudo_weight)
        return terms.log(**logs)

    def extra_state_for_run(self) -> dict[str, object]:
        n = 0 if self.pseudo_pairs is None else len(self.pseudo_pairs)
        return {**super().extra_state_for_run(), "pseudo_pairs": n, "rounds": self.rounds}
