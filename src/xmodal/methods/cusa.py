"""CUSA: cross-modal and uni-modal soft-label alignment (Huang et al., AAAI 2024), on any base.

``cusa(infonce)`` / ``cusa(vse)``: the base method's loss, unchanged, plus two distillation terms
whose soft labels come from frozen uni-modal teachers::

    L = L_base + csa_weight * L_CSA + usa_weight * L_USA

* **CSA** (cross-modal soft-label alignment). Image→text rows of the model's cross-modal logits
  ``cos(img_i, txt_j) / τ`` are taught by the image teacher's similarity of image ``i`` to the
  image of caption ``j``; text→image rows by the text teacher's similarity of the captions::

      L_CSA = ½ [KL(softmax(S^I / T) ‖ softmax(C / τ)) + KL(softmax(S^T / T) ‖ softmax(Cᵀ / τ))]

* **USA** (uni-modal soft-label alignment). The same KL on the model's own image–image and
  text–text logits, computed from separate uni-modal heads (``uni_head``) with their own
  learnable temperatures ``τ_I``, ``τ_T``.

KL is ``KL(teacher ‖ student)`` as in the paper: the teacher distribution is the target and the
loss is zero exactly when the student softmax equals the teacher softmax. ``S^I``, ``S^T`` are
cosine similarities of the teachers' features (default: the frozen input features of the batch,
i.e. the image encoder's and the text encoder's own features; any other encoder serves when its
features are given as ``PairedFeatures(image_extra={"teacher_image": ...}, text_extra=
{"teacher_text": ...})`` and named in ``teacher_image`` / ``teacher_text``). ``T`` is the
teacher temperature (fixed, 1.0), ``τ`` the learnable student temperature (init 0.45, kept in
[0.1, 0.99]; the uni-modal ones in [0.1, 1.0]), as in the published configuration.
The published code's other CSA soft labels (``cross_softlabel_mode`` ``add``: the mean of the
two teachers' similarities for both directions; ``dot``: their clipped geometric mean) are the
option ``cross_teacher``.

Duplicate images (two captions of one image in a batch) are handled with ``dedupe_images``
(default): an image counts once as an image→text query and once as a column of the text→image
and image–image distributions; a text→image teacher entry for image ``k`` is the mean of the
teacher similarities to the batch's captions of ``k``. Captions of the same image get equal
image-teacher mass, so they are never taught apart. ``dedupe_images=False`` is the published
behaviour (every batch row is its own image).

Tuning note (frozen features). The defaults are the paper's. With frozen encoder features the
teachers' cosines lie in a narrow range, so at ``teacher_temperature=1`` the soft labels are
almost uniform and the terms change little. On EfficientNet-Lite0 / MiniLM features the soft
labels become informative at ``teacher_temperature=0.1`` (chosen on validation, with
``csa_weight=1``, ``usa_weight=2``, ``uni_head="none"``).

Differences from the published code (``lerogo/aaai24_itr_cusa``); where one changes results, the
published behaviour is an option:

* The published contrastive loss uses ``contrastive_loss_mode: mean``: it averages
  ``-log p · target`` over the batch columns, i.e. the InfoNCE loss divided by the batch size B,
  so relative to the base loss the CUSA terms weigh B times more than the paper's weights say.
  Here the base loss is unchanged (the paper's intent); ``base_loss_scale="published"`` divides it
  by B to reproduce the published balance.
* The published temperatures are parameters clamped in place after each step; here each is a
  bounded parameter ``lo + (hi - lo) · sigmoid(θ)`` (same range, never stuck at a bound).
* The published uni-modal heads (LayerNorm + Linear) sit on the shared, fine-tuned backbone. Here
  the encoders are frozen, so a uni-modal head on the frozen features would never touch the
  retrieval embeddings; the shared trunk is the base's embedding, and the uni-modal heads
  (LayerNorm + Linear, ``uni_head="linear"``) sit on it. ``uni_head="none"`` applies USA to the
  base's embeddings directly.
* The CUSA terms are computed on the base's own forward pass (its outputs): the base loss and
  the soft-label terms see the same embeddings and the same dropout mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from xmodal.methods.base import Batch, Outputs, Terms, WrappedConfig, WrapperMethod
from xmodal.methods.registry import register_method
from xmodal.models.heads import l2_normalize

__all__ = [
    "CUSA",
    "BoundedTemperature",
    "CUSAConfig",
    "cosine_similarity_matrix",
    "first_occurrences",
    "soft_label_kl",
]


@dataclass
class CUSAConfig(WrappedConfig):
    """Options of :class:`CUSA` (defaults: the published ViT-B/32 configuration).

    Attributes:
        csa_weight: Weight of the cross-modal soft-label term (paper: 0.1).
        usa_weight: Weight of the uni-modal soft-label term (paper: 0.5).
        temperature: Initial student temperature τ of the cross-modal logits.
        min_temperature: Lower bound of every student temperature.
        max_temperature: Upper bound of τ.
        uni_temperature: Initial temperatures τ_I, τ_T of the uni-modal logits.
        uni_max_temperature: Upper bound of τ_I, τ_T.
        learn_temperature: Whether the student temperatures are trained.
        teacher_temperature: Temperature T of the teachers' softmax (fixed).
        teacher_image: ``"input"`` (the batch's image features) or the name of an ``extra``
            per-image array holding another encoder's features.
        teacher_text: Likewise for texts.
        cross_teacher: Soft labels of CSA: ``"each"`` (paper: image→text rows from the image
            teacher, text→image rows from the text teacher), ``"add"`` (both from the mean of the
            two teachers' similarities) or ``"dot"`` (both from ``sqrt(relu(S^I) · relu(S^T))``),
            the published code's ``cross_softlabel_mode``.
        uni_head: ``"linear"`` (LayerNorm + Linear on the base embedding, as published) or
            ``"none"`` (USA on the base embeddings themselves).
        dedupe_images: Count each distinct image of a batch once (see the module docstring);
            ``False`` is the published behaviour.
        base_loss_scale: ``"paper"`` keeps the base loss as is; ``"published"`` divides it by the
            batch size like the published code's ``mean`` contrastive mode.
    """

    csa_weight: float = 0.1
    usa_weight: float = 0.5
    temperature: float = 0.45
    min_temperature: float = 0.1
    max_temperature: float = 0.99
    uni_temperature: float = 0.45
    uni_max_temperature: float = 1.0
    learn_temperature: bool = True
    teacher_temperature: float = 1.0
    teacher_image: str = "input"
    teacher_text: str = "input"
    cross_teacher: Literal["each", "add", "dot"] = "each"
    uni_head: Literal["linear", "none"] = "linear"
    dedupe_images: bool = True
    base_loss_scale: Literal["paper", "published"] = "paper"

    def __post_init__(self) -> None:
        if self.csa_weight < 0 or self.usa_weight < 0:
            raise ValueError(
                f"csa_weight and usa_weight must be >= 0, got {self.csa_weight}, {self.usa_weight}"
            )
        if self.teacher_temperature <= 0:
            raise ValueError(f"teacher_temperature must be > 0, got {self.teacher_temperature}")
        for init, hi, name in (
            (self.temperature, self.max_temperature, "temperature"),
            (self.uni_temperature, self.uni_max_temperature, "uni_temperature"),
        ):
            if not 0 < self.min_temperature <= init <= hi:
                raise ValueError(
                    f"need 0 < min_temperature <= {name} <= its max, got "
                    f"{self.min_temperature}, {init}, {hi}"
                )
        if self.cross_teacher not in ("each", "add", "dot"):
            raise ValueError(
                f"cross_teacher must be 'each', 'add' or 'dot', got {self.cross_teacher!r}"
            )
        if self.uni_head not in ("linear", "none"):
            raise ValueError(f"uni_head must be 'linear' or 'none', got {self.uni_head!r}")
        if self.base_loss_scale not in ("paper", "published"):
            raise ValueError(
                f"base_loss_scale must be 'paper' or 'published', got {self.base_loss_scale!r}"
            )


def soft_label_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(teacher) ‖ softmax(student))`` per row, averaged over rows.

    The teacher is the target and gets no gradient. Zero exactly when the two softmaxes are
    equal, i.e. when the rows of the logits differ by a constant.

    Example:
        >>> soft_label_kl(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])).item()
        0.0
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    target = F.softmax(teacher_logits.detach(), dim=1)
    return F.kl_div(F.log_softmax(student_logits, dim=1), target, reduction="batchmean")


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``[n, m]`` cosines between the rows of ``a`` and of ``b`` (default ``a``)."""
    a = l2_normalize(a.float())
    return a @ (a if b is None else l2_normalize(b.float())).T


def first_occurrences(index: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each distinct value of ``index``, in batch order.

    Example:
        >>> first_occurrences(torch.tensor([4, 2, 4, 7, 2])).tolist()
        [0, 1, 3]
    """
    n = index.numel()
    same = index[:, None] == index[None, :]
    earlier = torch.ones(n, n, dtype=torch.bool, device=index.device).tril(-1)
    return torch.nonzero(~(same & earlier).any(dim=1)).flatten()


class BoundedTemperature(nn.Module):
    """A learnable temperature kept in ``[low, high]``: ``low + (high - low) · sigmoid(θ)``."""

    def __init__(self, init: float, low: float, high: float, learn: bool = True) -> None:
        super().__init__()
        if not 0 < low <= init <= high:
            raise ValueError(f"need 0 < low <= init <= high, got {low}, {init}, {high}")
        self.low, self.high = low, high
        frac = (init - low) / (high - low) if high > low else 0.5
        frac = min(max(frac, 1e-6), 1 - 1e-6)
        self.theta = nn.Parameter(torch.tensor(math.log(frac / (1 - frac))), requires_grad=learn)

    def forward(self) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(self.theta)


@register_method
class CUSA(WrapperMethod[CUSAConfig]):
    """The base objective plus cross-modal (CSA) and uni-modal (USA) soft-label alignment.

    Terms: the base's, then ``csa`` and ``usa`` at their weights; ``base_loss`` (the base's
    weighted sum) and the four halves are logged. Under DDP all of them see the global batch
    when the base does (``global_negatives``).
    """

    name = "cusa"
    Config = CUSAConfig
    global_negatives = True

    def __init__(self, config: CUSAConfig, image_dim: int, text_dim: int) -> None:
        super().__init__(config, image_dim, text_dim)
        lo, learn = config.min_temperature, config.learn_temperature
        self.cross_temperature = BoundedTemperature(
            config.temperature, lo, config.max_temperature, learn
        )
        self.image_temperature = BoundedTemperature(
            config.uni_temperature, lo, config.uni_max_temperature, learn
        )
        self.text_temperature = BoundedTemperature(
            config.uni_temperature, lo, config.uni_max_temperature, learn
        )
        d = config.embed_dim
        if config.uni_head == "linear":
            self.uni_image_head: nn.Module = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))
            self.uni_text_head: nn.Module = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))
        else:
            self.uni_image_head = nn.Identity()
            self.uni_text_head = nn.Identity()

    # --- uni-modal embeddings ---------------------------------------------------------------
    def embed_image_unimodal(self, features: torch.Tensor) -> torch.Tensor:
        """Image features -> the uni-modal (image–image) embedding the USA term trains."""
        return l2_normalize(self.uni_image_head(self.base.embed_image(features)))

    def embed_text_unimodal(self, features: torch.Tensor) -> torch.Tensor:
        """Text features -> the uni-modal (text–text) embedding the USA term trains."""
        return l2_normalize(self.uni_text_head(self.base.embed_text(features)))

    # --- the loss ---------------------------------------------------------------------------
    def _teacher(self, batch: Batch, which: str, features: torch.Tensor) -> torch.Tensor:
        if which == "input":
            return features
        if which not in batch.extra:
            raise ValueError(
                f"teacher features {which!r} are not in the batch (extra has "
                f"{sorted(batch.extra)}); pass them as PairedFeatures image_extra / text_extra"
            )
        return batch.extra[which]

    def soft_label_terms(self, outputs: Outputs, batch: Batch) -> dict[str, torch.Tensor]:
        """The CSA and USA terms (unweighted) of the base's ``outputs`` on ``batch``, and their
        four halves (the global batch under DDP)."""
        cfg = self.config
        img, txt = outputs.embeddings()
        image_index = outputs.image_index
        with torch.no_grad():
            t_img = self._teacher(batch, cfg.teacher_image, batch.image)
            t_txt = self._teacher(batch, cfg.teacher_text, batch.text)
            sim_ii = cosine_similarity_matrix(t_img)
            sim_tt = cosine_similarity_matrix(t_txt)
            if cfg.cross_teacher == "each":
                cross_i2t, cross_t2i = sim_ii, sim_tt
            elif cfg.cross_teacher == "add":
                cross_i2t = cross_t2i = (sim_ii + sim_tt) / 2
            else:
                cross_i2t = cross_t2i = (sim_ii.clamp(min=0) * sim_tt.clamp(min=0)).sqrt()
            if cfg.dedupe_images:
                keep = first_occurrences(image_index)
                member = (image_index[:, None] == image_index[keep][None, :]).float()
                cross_t2i = cross_t2i.T @ member / member.sum(dim=0, keepdim=True)
            else:
                keep = torch.arange(img.shape[0], device=img.device)
                cross_t2i = cross_t2i.T
            temp = cfg.teacher_temperature
            teach_ii, teach_tt = sim_ii / temp, sim_tt / temp
        cross = img @ txt.T / self.cross_temperature()
        i2t = soft_label_kl(cross[keep], cross_i2t[keep] / temp)
        t2i = soft_label_kl(cross.T[:, keep], cross_t2i / temp)
        uni_img = l2_normalize(self.uni_image_head(img[keep]))
        uni_txt = l2_normalize(self.uni_text_head(txt))
        ii = soft_label_kl(uni_img @ uni_img.T / self.image_temperature(), teach_ii[keep][:, keep])
        tt = soft_label_kl(uni_txt @ uni_txt.T / self.text_temperature(), teach_tt)
        return {
            "csa": (i2t + t2i) / 2,
            "usa": (ii + tt) / 2,
            "csa_i2t": i2t,
            "csa_t2i": t2i,
            "usa_i2i": ii,
            "usa_t2t": tt,
        }

    def objective(self, outputs: Outputs, batch: Batch, stage: str = "main") -> Terms:
        cfg = self.config
        terms = self.base.objective(outputs, batch, stage)
        if not self.adds_terms(stage):
            return terms
        base_loss = terms.total()
        if cfg.base_loss_scale == "published":
            terms = terms.scaled(1.0 / outputs.image_index.shape[0])  # the (global) batch size
        soft = self.soft_label_terms(outputs, batch)
        csa, usa = soft.pop("csa"), soft.pop("usa")
        return (
            terms.add("csa", csa, cfg.csa_weight)
            .add("usa", usa, cfg.usa_weight)
            .log(base_loss=base_loss, **soft)
        )

    def extra_state_for_run(self) -> dict[str, Any]:
        return {
            **super().extra_state_for_run(),
            "cusa_temperature": float(self.cross_temperature().detach()),
            "cusa_image_temperature": float(self.image_temperature().detach()),
            "cusa_text_temperature": float(self.text_temperature().detach()),
        }
