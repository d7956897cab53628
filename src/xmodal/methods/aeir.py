"""AEIR: transfer image–sentence alignment to a target domain without pairs (Yang et al., 2024).

"Alignment Efficient Image-Sentence Retrieval considering transferable cross-modal representation
learning" (Frontiers of Computer Science 18:181335). A paired **source** domain teaches the
alignment; a **target** domain has images and sentences but no pairs. This implementation is
designed from the paper's abstract (no published code): the base objective (``infonce`` by
default, ``aeir(vse)`` etc.) learns the alignment on the source pairs, and two terms transfer it::

    L = L_base(source pairs) + adversarial_weight * L_adv + structure_weight * L_struct

**Semantic transfer (intra-modal domain adversarial loss).** For each modality a discriminator
``D_m`` (an MLP on the L2-normalised embedding) tells source from target rows; it sees the
embeddings through a gradient reversal layer (identity forward, ``-reversal`` times the gradient
backward). One minimisation then trains ``D_m`` to separate the domains and the embedding heads
to make them inseparable (DANN)::

    L_adv = ½ Σ_m ½ [BCE(D_m(R(e_src)), 1) + BCE(D_m(R(e_tgt)), 0)],   m ∈ {image, text}

The logged ``adv`` is the discriminators' loss (``log 2 ≈ 0.69`` when they are at chance) and
``domain_accuracy`` their accuracy.

**Structural transfer (cross-domain cross-modal metric constraint).** The source pairs of the
batch are anchors ``(v_j, t_j)``. A target image ``u`` has no caption, but it has a uni-modal
neighbourhood among the source images, and the source pairing carries that neighbourhood over to
the source captions (pseudo-pairs via source neighbours): the ranking of ``u``'s cross-modal
similarities to the source captions should follow the ranking of its similarities to their
images. Symmetrically, a target text ``w`` should rank source images as it ranks their captions.
With anchors detached (the source structure is the reference; only target embeddings move)::

    structure="listwise" (default):
        L_struct = ½ [KL(softmax(u·v_jᵀ / τ_s) ‖ softmax(u·t_jᵀ / τ_s))
                      + KL(softmax(w·t_jᵀ / τ_s) ‖ softmax(w·v_jᵀ / τ_s))]
    structure="triplet":
        p = argmax_j u·v_j (the nearest source image: its caption t_p is u's pseudo-positive);
        L = mean_u max_{j: img(j) ≠ img(p)} [α − u·t_p + u·t_j]₊, and the same for w with the
        nearest source caption's image as pseudo-positive.

The teacher (uni-modal) similarities are, by default, those of the current embeddings, detached
(``structure_teacher="embedding"``); ``structure_teacher="input"`` takes them from the frozen input
features instead (cosines, at ``structure_teacher_temperature``), so that the neighbourhoods come
from the general-purpose encoders rather than from heads trained on the source only. Target
rows arrive in ``Batch.target_image`` / ``Batch.target_text`` (``Trainer.fit(..., unpaired=
UnpairedFeatures(image=..., text=...))``, ``pipeline.train(..., target=DIR)``, ``xmodal train
--target DIR``); training without them is an error. The forward pass is the base's (one pass
over the source rows, whose outputs the base loss and the transfer terms share) plus the
embeddings of the target rows (``extra["target_image"]``, ``extra["target_text"]``).

The adversarial weight is constant (no DANN λ ramp: a method does not know the run's length).
Target pairs are never used; checkpoints are selected on the source validation split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from xmodal.methods.base import Batch, Outputs, Terms, WrappedConfig, WrapperMethod
from xmodal.methods.cusa import cosine_similarity_matrix, soft_label_kl
from xmodal.methods.registry import register_method
from xmodal.models.generators import Discriminator, grad_reverse

__all__ = [
    "AEIR",
    "AEIRConfig",
    "DomainDiscriminator",
    "domain_adversarial_loss",
    "grad_reverse",
    "pseudo_pair_triplet",
    "ranking_consistency",
]


@dataclass
class AEIRConfig(WrappedConfig):
    """Options of :class:`AEIR`.

    Attributes:
        adversarial_weight: Weight of the domain-adversarial term.
        reversal: Gradient reversal coefficient λ (the heads receive ``-λ`` times the
            discriminator's gradient).
        discriminator_hidden: Hidden sizes of each modality's domain discriminator.
        structure_weight: Weight of the structural (cross-domain cross-modal) term.
        structure: ``"listwise"`` (KL between rankings) or ``"triplet"`` (pseudo-pair hinge).
        structure_temperature: τ_s of the listwise rankings.
        margin: α of the triplet variant.
        structure_teacher: Where the uni-modal neighbourhoods come from: ``"embedding"`` (the
            current embeddings) or ``"input"`` (the frozen input features).
        structure_teacher_temperature: Temperature of the uni-modal (teacher) ranking; ``None``
            is ``structure_temperature``.
    """

    adversarial_weight: float = 0.1
    reversal: float = 1.0
    discriminator_hidden: tuple[int, ...] = (256,)
    structure_weight: float = 1.0
    structure: Literal["listwise", "triplet"] = "listwise"
    structure_temperature: float = 0.05
    margin: float = 0.2
    structure_teacher: Literal["embedding", "input"] = "embedding"
    structure_teacher_temperature: float | None = None

    def __post_init__(self) -> None:
        if self.adversarial_weight < 0 or self.structure_weight < 0:
            raise ValueError(
                "adversarial_weight and structure_weight must be >= 0, got "
                f"{self.adversarial_weight}, {self.structure_weight}"
            )
        if self.structure not in ("listwise", "triplet"):
            raise ValueError(f"structure must be 'listwise' or 'triplet', got {self.structure!r}")
        if self.structure_teacher not in ("embedding", "input"):
            raise ValueError(
                f"structure_teacher must be 'embedding' or 'input', got {self.structure_teacher!r}"
            )
        if (
            self.structure_teacher_temperature is not None
            and self.structure_teacher_temperature <= 0
        ):
            raise ValueError(
                "structure_teacher_temperature must be > 0 (or None), got "
                f"{self.structure_teacher_temperature}"
            )
        if self.structure_temperature <= 0:
            raise ValueError(f"structure_temperature must be > 0, got {self.structure_temperature}")


# One discriminator per modality; gradient reversal makes the heads fool it (DANN).
DomainDiscriminator = Discriminator


def domain_adversarial_loss(
    source_logits: torch.Tensor, target_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced BCE of a domain discriminator (source = 1, target = 0) and its accuracy."""
    loss = (
        F.binary_cross_entropy_with_logits(source_logits, torch.ones_like(source_logits))
        + F.binary_cross_entropy_with_logits(target_logits, torch.zeros_like(target_logits))
    ) / 2
    with torch.no_grad():
        acc = ((source_logits > 0).float().mean() + (target_logits <= 0).float().mean()) / 2
    return loss, acc


def ranking_consistency(
    query: torch.Tensor,
    same_modality_anchors: torch.Tensor,
    other_modality_anchors: torch.Tensor,
    temperature: float,
    teacher_similarity: torch.Tensor | None = None,
    teacher_temperature: float | None = None,
) -> torch.Tensor:
    """``KL(softmax(q·aᵀ/τ) ‖ softmax(q·bᵀ/τ))``: cross-modal ranking follows uni-modal ranking.

    Row ``j`` of ``same_modality_anchors`` and of ``other_modality_anchors`` is one source pair.
    The uni-modal (teacher) side is detached; the anchors get no gradient. A given
    ``teacher_similarity`` ``[n_query, n_anchors]`` replaces ``q·aᵀ`` (divided by
    ``teacher_temperature``, default ``temperature``).
    """
    if teacher_similarity is None:
        teacher_similarity = query @ same_modality_anchors.T
    t_temp = temperature if teacher_temperature is None else teacher_temperature
    teacher = teacher_similarity.detach() / t_temp
    student = query @ other_modality_anchors.detach().T / temperature
    return soft_label_kl(student, teacher)


def pseudo_pair_triplet(
    query: torch.Tensor,
    same_modality_anchors: torch.Tensor,
    other_modality_anchors: torch.Tensor,
    anchor_image_index: torch.Tensor,
    margin: float,
    teacher_similarity: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hinge on pseudo-pairs: the nearest same-modality anchor's partner is the positive.

    For each query, ``p`` is its most similar row of ``same_modality_anchors`` (detached; or the
    argmax of a given ``teacher_similarity``); the loss is the largest
    ``[margin − q·b_p + q·b_j]₊`` over anchors ``j`` of another image than ``p``'s
    (``anchor_image_index``), averaged over queries. Anchors get no gradient.
    """
    with torch.no_grad():
        if teacher_similarity is None:
            teacher_similarity = query @ same_modality_anchors.T
        nearest = teacher_similarity.argmax(dim=1)
    sim = query @ other_modality_anchors.detach().T
    pos = sim.gather(1, nearest[:, None])
    same = anchor_image_index[nearest][:, None] == anchor_image_index[None, :]
    cost = (margin - pos + sim).clamp(min=0).masked_fill(same, 0)
    return cost.max(dim=1).values.mean()


@register_method
class AEIR(WrapperMethod[AEIRConfig]):
    """The base objective on source pairs plus adversarial and structural transfer to a target.

    Terms: the base's, then ``adv`` and ``structure`` at their weights; ``base_loss``, the
    per-modality parts and ``domain_accuracy`` are logged.
    """

    name = "aeir"
    Config = AEIRConfig
    needs_target = True
    global_negatives = True

    def __init__(self, config: AEIRConfig, image_dim: int, text_dim: int) -> None:
        super().__init__(config, image_dim, text_dim)
        hidden = tuple(config.discriminator_hidden)
        self.image_discriminator = DomainDiscriminator(config.embed_dim, hidden)
        self.text_discriminator = DomainDiscriminator(config.embed_dim, hidden)

    def forward(self, batch: Batch, stage: str = "main") -> Outputs:
        outputs: Outputs = self.base(batch, stage)
        if not self.adds_terms(stage):
            return outputs
        if batch.target_image is None or batch.target_text is None:
            raise ValueError(
                "aeir needs unpaired target images and texts: train with "
                "Trainer.fit(train, val, unpaired=UnpairedFeatures(image=..., text=...)), "
                "pipeline.train(..., target=DIR) or xmodal train --target DIR"
            )
        target = {
            "target_image": self.base.embed_image(batch.target_image),
            "target_text": self.base.embed_text(batch.target_text),
        }
        return dataclasses.replace(outputs, extra={**outputs.extra, **target})

    def transfer_terms(self, outputs: Outputs, batch: Batch) -> dict[str, torch.Tensor]:
        """The adversarial and structural terms (unweighted) of ``outputs`` and their parts."""
        cfg = self.config
        src_img, src_txt = outputs.embeddings()
        tgt_img, tgt_txt = outputs.get("target_image"), outputs.get("target_text")

        adv_i, acc_i = domain_adversarial_loss(
            self.image_discriminator(grad_reverse(src_img, cfg.reversal)),
            self.image_discriminator(grad_reverse(tgt_img, cfg.reversal)),
        )
        adv_t, acc_t = domain_adversarial_loss(
            self.text_discriminator(grad_reverse(src_txt, cfg.reversal)),
            self.text_discriminator(grad_reverse(tgt_txt, cfg.reversal)),
        )
        near_i: torch.Tensor | None = None
        near_t: torch.Tensor | None = None
        if cfg.structure_teacher == "input":
            if batch.target_image is None or batch.target_text is None:
                raise ValueError("structure_teacher='input' needs the batch's target rows")
            with torch.no_grad():
                near_i = cosine_similarity_matrix(batch.target_image, batch.image)
                near_t = cosine_similarity_matrix(batch.target_text, batch.text)
        if cfg.structure == "listwise":
            tau, t_tau = cfg.structure_temperature, cfg.structure_teacher_temperature
            st_i = ranking_consistency(tgt_img, src_img, src_txt, tau, near_i, t_tau)
            st_t = ranking_consistency(tgt_txt, src_txt, src_img, tau, near_t, t_tau)
        else:
            idx = outputs.image_index
            st_i = pseudo_pair_triplet(tgt_img, src_img, src_txt, idx, cfg.margin, near_i)
            st_t = pseudo_pair_triplet(tgt_txt, src_txt, src_img, idx, cfg.margin, near_t)
        return {
            "adv": (adv_i + adv_t) / 2,
            "structure": (st_i + st_t) / 2,
            "adv_image": adv_i,
            "adv_text": adv_t,
            "structure_image": st_i,
            "structure_text": st_t,
            "domain_accuracy": (acc_i + acc_t) / 2,
        }

    def objective(self, outputs: Outputs, batch: Batch, stage: str = "main") -> Terms:
        cfg = self.config
        terms = self.base.objective(outputs, batch, stage)
        if not self.adds_terms(stage):
            return terms
        base_loss = terms.total()
        transfer = self.transfer_terms(outputs, batch)
        adv, structure = transfer.pop("adv"), transfer.pop("structure")
        return (
            terms.add("adv", adv, cfg.adversarial_weight)
            .add("structure", structure, cfg.structure_weight)
            .log(base_loss=base_loss, **transfer)
        )
