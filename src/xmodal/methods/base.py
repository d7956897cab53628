"""What every training objective provides to the one trainer.

A method is a :class:`torch.nn.Module` that owns its heads and computes its loss on a
:class:`Batch` of frozen features. Its hyper-parameters live in a config dataclass. The trainer
knows nothing of any one method: it asks for the method's :meth:`Method.stages`, optimises each
stage's parameters on :meth:`Method.loss`, and selects checkpoints on validation retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = [
    "SHARED_OPTIONS",
    "Batch",
    "Method",
    "MethodConfig",
    "Stage",
    "TrainingData",
    "WrappedConfig",
    "WrapperMethod",
    "build_base",
]


@dataclass(frozen=True)
class TrainingData:
    """Everything a method may look at before training (:meth:`Method.prepare`).

    Attributes:
        image_features: ``[n_images, d_image]`` frozen image features of the training split.
        text_features: ``[n_texts, d_text]`` frozen text features (all captions, flattened).
        text_to_image: ``[n_texts]`` index of each caption's image.
        labels: Optional ``[n_images, n_labels]`` float multi-hot label matrix.
        image_extra: Further per-image arrays (first dimension ``n_images``) by name, e.g. the
            features of another frozen encoder used as a teacher (``"teacher_image"``).
        text_extra: Further per-text arrays (first dimension ``n_texts``) by name.
        target_image_features: Optional ``[n_target_images, d_image]`` features of unpaired
            images of a target domain (no caption is known to match any of them).
        target_text_features: Optional ``[n_target_texts, d_text]`` features of unpaired texts
            of the target domain.
    """

    image_features: torch.Tensor
    text_features: torch.Tensor
    text_to_image: torch.Tensor
    labels: torch.Tensor | None = None
    image_extra: dict[str, torch.Tensor] = field(default_factory=dict)
    text_extra: dict[str, torch.Tensor] = field(default_factory=dict)
    target_image_features: torch.Tensor | None = None
    target_text_features: torch.Tensor | None = None


@dataclass
class Batch:
    """A mini-batch of caption–image pairs (one row per caption).

    Attributes:
        image: ``[B, d_image]`` features of each caption's image (rows repeat when two captions
            of one image are drawn).
        text: ``[B, d_text]`` caption features.
        image_index: ``[B]`` training-set index of each row's image; rows with equal index are
            positives of each other (all captions of an image are positives).
        text_index: ``[B]`` training-set index of each caption.
        labels: Optional ``[B, n_labels]`` multi-hot labels of each row's image.
        extra: The rows of :attr:`TrainingData.image_extra` (taken at each row's image) and
            :attr:`TrainingData.text_extra` (at each row's caption), by name.
        target_image: Optional ``[B_t, d_image]`` unpaired target-domain images, drawn at random
            for this step (present only when the trainer was given unpaired data).
        target_text: Optional ``[B_t', d_text]`` unpaired target-domain texts, likewise.
    """

    image: torch.Tensor
    text: torch.Tensor
    image_index: torch.Tensor
    text_index: torch.Tensor
    labels: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    target_image: torch.Tensor | None = None
    target_text: torch.Tensor | None = None

    def positives(self) -> torch.Tensor:
        """``[B, B]`` boolean matrix: row i and column j show the same image."""
        return self.image_index[:, None] == self.image_index[None, :]

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device``."""

        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.to(device, non_blocking=True)

        return Batch(
            image=self.image.to(device, non_blocking=True),
            text=self.text.to(device, non_blocking=True),
            image_index=self.image_index.to(device, non_blocking=True),
            text_index=self.text_index.to(device, non_blocking=True),
            labels=move(self.labels),
            extra={k: v.to(device, non_blocking=True) for k, v in self.extra.items()},
            target_image=move(self.target_image),
            target_text=move(self.target_text),
        )


@dataclass(frozen=True)
class Stage:
    """One phase of a method's training schedule.

    Attributes:
        name: Passed to :meth:`Method.loss` so the method knows which terms to compute.
        parameters: What this stage optimises (everything else stays fixed).
        epoch_fraction: Share of the run's epochs spent on this stage.
        select: Whether checkpoints are selected on validation during this stage (stages that
            only pre-train an auxiliary network set ``False``).
    """

    name: str
    parameters: list[nn.Parameter]
    epoch_fraction: float = 1.0
    select: bool = True


@dataclass
class MethodConfig:
    """Hyper-parameters shared by every method.

    Attributes:
        embed_dim: Size of the joint embedding space.
        hidden: Hidden sizes of the projection MLPs.
        dropout: Dropout of the projection MLPs.
        image_tower: Head of the image features, for methods with one head per modality:
            ``"mlp"`` (a projection of frozen features) or ``"efficientnet-top<k>"`` (trains
            EfficientNet-Lite0's top ``k`` blocks; needs ``efficientnet-lite0.blocks-<16-k>``
            features). See :func:`xmodal.models.build_tower`.
        text_tower: Likewise for texts: ``"mlp"`` or ``"minilm-top<k>"`` (needs
            ``minilm.tokens-l<6-k>`` features).
        tower_lr_scale: Learning-rate multiplier of the pretrained layers inside a tower.
        tower_probe_fraction: Share of the epochs during which the towers' pretrained layers
            stay fixed before they are fine-tuned (0: trained from the start).
    """

    embed_dim: int = 256
    hidden: tuple[int, ...] = (1024,)
    dropout: float = 0.1
    image_tower: str = "mlp"
    text_tower: str = "mlp"
    tower_lr_scale: float = 0.1
    tower_probe_fraction: float = 0.0


class Method(nn.Module):
    """Base class of training objectives. Subclasses set ``name`` and ``Config``.

    Subclasses implement :meth:`embed_image`, :meth:`embed_text` and :meth:`loss`; multi-stage
    methods override :meth:`stages`; methods that need training-set statistics (neighbours,
    teachers, label priors) override :meth:`prepare`. Closed-form methods set ``trainable =
    False`` and implement :meth:`fit`.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    trainable: ClassVar[bool] = True
    #: Whether training needs unpaired target-domain images and texts (``Batch.target_*``).
    needs_target: ClassVar[bool] = False

    def __init__(self, config: MethodConfig, image_dim: int, text_dim: int) -> None:
        super().__init__()
        self.config = config
        self.image_dim, self.text_dim = image_dim, text_dim

    # --- what the trainer calls -------------------------------------------------------------
    def prepare(self, data: TrainingData) -> None:
        """Look at the training set once before training (default: nothing)."""

    def stages(self) -> list[Stage]:
        """The training schedule; default one stage over all parameters."""
        return [Stage("main", [p for p in self.parameters() if p.requires_grad])]

    def loss(self, batch: Batch, stage: str = "main") -> dict[str, torch.Tensor]:
        """Loss terms for ``batch``; key ``"loss"`` holds the total that is minimised."""
        raise NotImplementedError

    def fit(self, data: TrainingData) -> None:
        """Closed-form fitting for methods with ``trainable = False``."""
        raise NotImplementedError(f"method {self.name!r} is trained by gradient descent")

    # --- what evaluation and search call ----------------------------------------------------
    def embed_image(self, features: torch.Tensor) -> torch.Tensor:
        """Image features -> joint-space embeddings (L2-normalised)."""
        raise NotImplementedError

    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        """Text features -> joint-space embeddings (L2-normalised)."""
        raise NotImplementedError

    def hash_image(self, features: torch.Tensor) -> torch.Tensor | None:
        """Image features -> {-1,+1} codes from the method's own hash head, or ``None``."""
        return None

    def hash_text(self, features: torch.Tensor) -> torch.Tensor | None:
        """Text features -> {-1,+1} codes from the method's own hash head, or ``None``."""
        return None

    def extra_state_for_run(self) -> dict[str, Any]:
        """JSON-able facts to record in the run directory (e.g. learned temperature)."""
        return {}


#: The :class:`MethodConfig` options a wrapper method passes on to its base.
SHARED_OPTIONS = tuple(f.name for f in fields(MethodConfig))


@dataclass
class WrappedConfig(MethodConfig):
    """Options of a method that adds terms to another (base) method's loss.

    The shared options (:data:`SHARED_OPTIONS`: ``embed_dim``, ``hidden``, ``dropout`` and the
    towers) are passed on to the base.

    Attributes:
        base: Registered name of the base method (``"cusa(vse)"`` sets ``base="vse"``).
        base_options: The base's own options, e.g. ``{"temperature": 0.05}`` for ``infonce``.
    """

    base: str = "infonce"
    base_options: dict[str, Any] = field(default_factory=dict)


def build_base(wrapper: str, config: WrappedConfig, image_dim: int, text_dim: int) -> Method:
    """A fresh, trainable instance of ``config.base`` for the wrapper method named ``wrapper``.

    The shared options (:data:`SHARED_OPTIONS`) come from ``config`` itself and the base's own
    options from ``config.base_options``; a wrapper may not wrap itself, set a shared option in
    ``base_options`` or wrap a closed-form method.
    """
    from xmodal.methods.registry import build_method, parse_method_name

    outer, _ = parse_method_name(config.base)
    if outer == wrapper:
        raise ValueError(f"{wrapper} cannot wrap itself (base={config.base!r})")
    shared = {name: getattr(config, name) for name in SHARED_OPTIONS}
    clash = sorted(set(shared) & set(config.base_options))
    if clash:
        raise ValueError(
            f"base_options {clash} of {wrapper} are shared options: set them on "
            f"{wrapper} itself, not in base_options"
        )
    base = build_method(config.base, image_dim, text_dim, **shared, **config.base_options)
    if not base.trainable:
        raise ValueError(f"{wrapper} trains its base; {config.base!r} is closed-form")
    return base


class WrapperMethod(Method):
    """A method that wraps a trainable base method and adds loss terms of its own.

    Embeddings, hash codes and :meth:`prepare` are the base's. Stages are the base's, with this
    method's own parameters added to every selecting stage (stages that only pre-train an
    auxiliary network of the base are left as they are). Subclasses implement :meth:`loss`,
    usually as ``self.base.loss(batch, stage)`` plus their terms.
    """

    Config: ClassVar[type[MethodConfig]] = WrappedConfig

    def __init__(self, config: WrappedConfig, image_dim: int, text_dim: int) -> None:
        super().__init__(config, image_dim, text_dim)
        self.base = build_base(self.name, config, image_dim, text_dim)

    def own_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of this method that are not the base's."""
        return [
            p for n, p in self.named_parameters() if not n.startswith("base.") and p.requires_grad
        ]

    def prepare(self, data: TrainingData) -> None:
        self.base.prepare(data)

    def stages(self) -> list[Stage]:
        own = self.own_parameters()
        return [
            Stage(
                s.name,
                [*s.parameters, *own] if s.select else list(s.parameters),
                s.epoch_fraction,
                s.select,
            )
            for s in self.base.stages()
        ]

    def adds_terms(self, stage: str) -> bool:
        """Whether this method's own terms join the base's loss in ``stage`` (selecting ones)."""
        return any(s.name == stage and s.select for s in self.base.stages())

    def embed_image(self, features: torch.Tensor) -> torch.Tensor:
        return self.base.embed_image(features)

    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        return self.base.embed_text(features)

    def hash_image(self, features: torch.Tensor) -> torch.Tensor | None:
        return self.base.hash_image(features)

    def hash_text(self, features: torch.Tensor) -> torch.Tensor | None:
        return self.base.hash_text(features)

    def extra_state_for_run(self) -> dict[str, Any]:
        return dict(self.base.extra_state_for_run())
