"""What every training objective provides to the one trainer.

A method is a :class:`torch.nn.Module` that owns its heads and computes its loss on a
:class:`Batch` of frozen features. Its hyper-parameters live in a config dataclass. The trainer
knows nothing of any one method: it asks for the method's :meth:`Method.stages`, optimises each
stage's parameters on :meth:`Method.loss`, and selects checkpoints on validation retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["Batch", "Method", "MethodConfig", "Stage", "TrainingData"]


@dataclass(frozen=True)
class TrainingData:
    """Everything a method may look at before training (:meth:`Method.prepare`).

    Attributes:
        image_features: ``[n_images, d_image]`` frozen image features of the training split.
        text_features: ``[n_texts, d_text]`` frozen text features (all captions, flattened).
        text_to_image: ``[n_texts]`` index of each caption's image.
        labels: Optional ``[n_images, n_labels]`` float multi-hot label matrix.
    """

    image_features: torch.Tensor
    text_features: torch.Tensor
    text_to_image: torch.Tensor
    labels: torch.Tensor | None = None


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
    """

    image: torch.Tensor
    text: torch.Tensor
    image_index: torch.Tensor
    text_index: torch.Tensor
    labels: torch.Tensor | None = None

    def positives(self) -> torch.Tensor:
        """``[B, B]`` boolean matrix: row i and column j show the same image."""
        return self.image_index[:, None] == self.image_index[None, :]

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device``."""
        return Batch(
            image=self.image.to(device, non_blocking=True),
            text=self.text.to(device, non_blocking=True),
            image_index=self.image_index.to(device, non_blocking=True),
            text_index=self.text_index.to(device, non_blocking=True),
            labels=None if self.labels is None else self.labels.to(device, non_blocking=True),
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
    """Hyper-parameters shared by every method."""

    embed_dim: int = 256
    hidden: tuple[int, ...] = (1024,)
    dropout: float = 0.1


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
