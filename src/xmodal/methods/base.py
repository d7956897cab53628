"""What every training objective provides to the one trainer: the method contract.

A method is a :class:`torch.nn.Module` that owns its heads. Its hyper-parameters live in a config
dataclass (``Method[InfoNCEConfig]``: ``self.config`` is typed). Each step is two calls:

* ``forward(batch, stage) -> Outputs``: the one forward pass of the step: embeddings (and codes,
  and whatever else the objective reads) of the batch's rows;
* ``objective(outputs, batch, stage) -> Terms``: named loss terms with their weights (the loss is
  their weighted sum) and logged-only diagnostics.

:meth:`Method.loss` joins them. Under ``torch.distributed`` it gathers the outputs (with
gradients) and the batch from every process once, between the two calls, so the objective sees
the *global* batch and :meth:`Outputs.positives` spans it; a method declares with
``global_negatives`` that its objective is written for that (a method that does not is refused
under DDP, see :meth:`Method.gathers_global_batch`). Wrappers (``cusa(·)``, ``aeir``,
``ensemble(·)``) call their base's ``forward`` once and hand its outputs to the base's
``objective``: one forward pass per step, one dropout mask for every term.

The trainer knows nothing of any one method: it asks for the method's :meth:`Method.stages`,
optimises each stage's parameters on :meth:`Method.loss`, and selects checkpoints on validation
retrieval. Closed-form methods (``cca``) set ``trainable = False`` and implement
:meth:`Method.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import nn

from xmodal.distributed.gather import gather_fields, is_distributed

__all__ = [
    "SHARED_OPTIONS",
    "Batch",
    "Method",
    "MethodConfig",
    "Outputs",
    "Stage",
    "Terms",
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
        return _same_image(self.image_index)

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


def _same_image(image_index: torch.Tensor) -> torch.Tensor:
    return image_index[:, None] == image_index[None, :]


@dataclass
class Outputs:
    """What a method's forward pass produced for one batch: one row per batch row.

    Under ``torch.distributed`` (for methods with ``global_negatives``) every tensor here is
    gathered along its first dimension from every process before the objective sees it, so
    every tensor must have the same shape on every process.

    Attributes:
        image_index: ``[B]`` training-set index of each row's image (rows with equal index are
            positives of each other).
        image: ``[B, d]`` image-side embeddings the objective compares (L2-normalised for the
            methods whose retrieval embeddings are).
        text: ``[B, d]`` text-side embeddings.
        image_codes: Optional ``[B, bits]`` relaxed (``tanh``) hash codes of the images.
        text_codes: Optional ``[B, bits]`` relaxed hash codes of the texts.
        extra: Further tensors the objective needs, by name (e.g. unnormalised features, the
            embeddings of the batch's target-domain rows).
        members: The outputs of sub-models (the members of an ensemble), each like this one.
    """

    image_index: torch.Tensor
    image: torch.Tensor | None = None
    text: torch.Tensor | None = None
    image_codes: torch.Tensor | None = None
    text_codes: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    members: tuple[Outputs, ...] = ()

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, text)``; an error when this forward pass produced no embeddings."""
        if self.image is None or self.text is None:
            raise ValueError("these outputs hold no image and text embeddings")
        return self.image, self.text

    def positives(self) -> torch.Tensor:
        """``[B, B]`` boolean matrix: row i and column j show the same image (global under DDP)."""
        return _same_image(self.image_index)

    def rows(self, part: slice) -> Outputs:
        """The outputs of the rows ``part`` only (every tensor sliced along its first dimension,
        members too): how a forward pass over two row sets joined is split again."""

        def cut(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[part]

        return Outputs(
            image_index=self.image_index[part],
            image=cut(self.image),
            text=cut(self.text),
            image_codes=cut(self.image_codes),
            text_codes=cut(self.text_codes),
            extra={k: v[part] for k, v in self.extra.items()},
            members=tuple(m.rows(part) for m in self.members),
        )

    def get(self, name: str) -> torch.Tensor:
        """``extra[name]``, with an error naming what there is."""
        if name not in self.extra:
            raise KeyError(f"outputs have no {name!r}; extra has {sorted(self.extra)}")
        return self.extra[name]


@dataclass
class Terms:
    """Named loss terms, their weights and logged-only diagnostics of one step.

    The loss is ``Σ weight · value`` (:meth:`total`); the trainer logs every value unweighted,
    with the total as ``loss``.

    Attributes:
        values: Loss terms by name, in the order they are summed.
        weights: Weight of each term (``1.0`` when missing).
        logs: Diagnostics that are logged but not summed (accuracies, the parts of a term).
    """

    values: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    logs: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, name: str, value: torch.Tensor, weight: float = 1.0) -> Terms:
        """Add the term ``name`` (returns ``self``, so calls chain)."""
        if name in self.values or name in self.logs:
            raise ValueError(f"loss term {name!r} is already there")
        self.values[name] = value
        self.weights[name] = float(weight)
        return self

    def log(self, **values: torch.Tensor) -> Terms:
        """Add logged-only diagnostics (returns ``self``)."""
        clash = sorted(set(values) & set(self.values))
        if clash:
            raise ValueError(f"diagnostics {clash} clash with loss terms")
        self.logs.update(values)
        return self

    def scaled(self, factor: float) -> Terms:
        """The same terms with every weight multiplied by ``factor``."""
        return Terms(
            dict(self.values),
            {k: self.weights.get(k, 1.0) * factor for k in self.values},
            dict(self.logs),
        )

    def total(self) -> torch.Tensor:
        """``Σ weight · value`` in insertion order (a weight of exactly 1 multiplies nothing)."""
        total: torch.Tensor | None = None
        for name, value in self.values.items():
            weight = self.weights.get(name, 1.0)
            part = value if weight == 1.0 else weight * value
            total = part if total is None else total + part
        if total is None:
            raise ValueError("an objective returned no loss terms")
        return total

    def as_dict(self) -> dict[str, torch.Tensor]:
        """``{"loss": total, **values, **logs}``: what the trainer logs."""
        return {"loss": self.total(), **self.values, **self.logs}


@dataclass(frozen=True)
class Stage:
    """One phase of a method's training schedule.

    Attributes:
        name: Passed to :meth:`Method.forward` and :meth:`Method.objective` so the method
            knows what to compute.
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


C = TypeVar("C", bound=MethodConfig)


class Method(nn.Module, Generic[C]):
    """Base class of training objectives, generic over their config (``Method[InfoNCEConfig]``).

    Subclasses set ``name`` and ``Config`` and implement :meth:`forward`, :meth:`objective`,
    :meth:`embed_image` and :meth:`embed_text`; multi-stage methods override :meth:`stages`;
    methods that need training-set statistics (neighbours, teachers, label priors) override
    :meth:`prepare`. Closed-form methods set ``trainable = False`` and implement :meth:`fit`.

    Class attributes:
        global_negatives: The objective is a function of the whole batch written for the global
            batch: under DDP, :meth:`loss` gathers every process's outputs and rows first, and
            ``P`` processes with ``B`` rows each train exactly like one process with ``P·B``.
            ``False`` (the default) means the objective is per process (e.g. it samples its own
            pairs from training-set tables); such a method is refused under DDP with an error
            rather than silently trained on per-process negatives.
        needs_target: Training needs unpaired target-domain rows (``Batch.target_*``).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    trainable: ClassVar[bool] = True
    global_negatives: ClassVar[bool] = False
    needs_target: ClassVar[bool] = False

    def __init__(self, config: C, image_dim: int, text_dim: int) -> None:
        super().__init__()
        self.config: C = config
        self.image_dim, self.text_dim = image_dim, text_dim

    # --- what the trainer calls -------------------------------------------------------------
    def prepare(self, data: TrainingData) -> None:
        """Look at the training set once before training (default: nothing)."""

    def stages(self) -> list[Stage]:
        """The training schedule; default one stage over all parameters."""
        return [Stage("main", [p for p in self.parameters() if p.requires_grad])]

    def forward(self, batch: Batch, stage: str = "main") -> Outputs:
        """The step's one forward pass over ``batch`` (``stage`` names what is trained)."""
        raise NotImplementedError

    def objective(self, outputs: Outputs, batch: Batch, stage: str = "main") -> Terms:
        """The loss terms of ``outputs`` (global under DDP, see :meth:`loss`) for ``batch``."""
        raise NotImplementedError

    def gathers_global_batch(self) -> bool:
        """Whether this method's objective (and every objective it wraps) is written for the
        global batch (``global_negatives``): the condition for training it under DDP."""
        return type(self).global_negatives

    def loss(self, batch: Batch, stage: str = "main") -> dict[str, torch.Tensor]:
        """One step: :meth:`forward`, then (under DDP) the global batch, then :meth:`objective`.

        Inside a ``torch.distributed`` group with more than one process the outputs are
        gathered with gradients, and the batch without, from every process, once (see
        :mod:`xmodal.distributed.gather` for why the gradients then equal one process's on the
        concatenated batch). Returns ``{"loss": Σ weight · term, **terms, **diagnostics}``.

        Raises:
            ValueError: under DDP, for a method that does not declare ``global_negatives``.
        """
        outputs = self(batch, stage)
        if is_distributed():
            if not self.gathers_global_batch():
                raise ValueError(
                    f"method {self.name!r} computes its objective per process "
                    "(global_negatives = False): under --ddp it would train on per-process "
                    "batches, a different objective than one process; train it without --ddp"
                )
            outputs, batch = gather_fields(outputs), gather_fields(batch)
        return self.objective(outputs, batch, stage).as_dict()

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


def build_base(
    wrapper: str, config: WrappedConfig, image_dim: int, text_dim: int
) -> Method[MethodConfig]:
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


W = TypeVar("W", bound=WrappedConfig)


class WrapperMethod(Method[W]):
    """A method that wraps a trainable base method and adds loss terms of its own.

    Embeddings, hash codes and :meth:`prepare` are the base's. Stages are the base's, with this
    method's own parameters added to every selecting stage (stages that only pre-train an
    auxiliary network of the base are left as they are). :meth:`forward` is the base's one
    forward pass (subclasses may add to its outputs); subclasses implement :meth:`objective`,
    usually as ``self.base.objective(outputs, batch, stage)`` plus their terms, on the same
    outputs. Under DDP a wrapper gathers the global batch when it and its base both declare
    ``global_negatives``.
    """

    Config: ClassVar[type[MethodConfig]] = WrappedConfig

    def __init__(self, config: W, image_dim: int, text_dim: int) -> None:
        super().__init__(config, image_dim, text_dim)
        self.base = build_base(self.name, config, image_dim, text_dim)

    def gathers_global_batch(self) -> bool:
        return type(self).global_negatives and self.base.gathers_global_batch()

    def forward(self, batch: Batch, stage: str = "main") -> Outputs:
        outputs: Outputs = self.base(batch, stage)
        return outputs

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
