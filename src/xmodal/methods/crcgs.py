"""CRCGS: contrastive learning with auxiliary generative features and support-set regularisation.

Schedule inside the one trainer:

1. Stage ``"generators"`` (not selected on validation): two :class:`FeatureGenerator` teachers,
   image → text and text → image (encoder to ``generator_hidden``, decoder to the other
   modality's features), trained with an L1 loss on the training pairs. They stay frozen after.
2. Stage ``"main"`` (selected on validation): student MLPs, one private layer per modality
   (``hidden``, 512 by default) and one *shared* layer to the ``embed_dim`` (1024) common space,
   and a label classifier.

Notation for a pair ``(x, y)``: students ``u = E_I(x)``, ``v = E_T(y)``; teacher features are the
students' view of the teachers' generated features, ``t_I = E_I(G_t2i(y))`` (image-side feature
generated from the text) and ``t_T = E_T(G_i2t(x))`` (text-side feature generated from the
image). ``S`` = "shares at least one label", ``n`` = number of shared labels. Loss terms (each with
its weight in :class:`CRCGSConfig`):

* ``label`` — multi-label BCE of the classifier on ``u`` and ``v``;
* ``pairwise`` — the pairwise label likelihood ``log(1 + e^θ) − S·θ``, ``θ = cos / 2``, over
  image–image, image–text and text–text pairs of the batch (:func:`pairwise_label_likelihood`);
* ``paired`` — squared L2 distance between the normalised ``u`` and ``v`` of a pair;
* ``teacher`` — squared error between each student feature and the teacher feature of its
  modality (``u`` vs ``t_I``, ``v`` vs ``t_T``, both L2-normalised; summed over dimensions,
  averaged over rows, like ``paired``);
* ``adversarial`` — two small discriminators on the common space behind gradient reversal: a
  modality discriminator (image vs text features) and a source discriminator (features of real
  vs generated inputs); the discriminators learn to tell, the students learn to confuse;
* ``contrastive`` — InfoNCE with temperature ``temperature`` over the four teacher/student pairs
  ``(u, t_I), (u, t_T), (v, t_I), (v, t_T)``; rows of the same image are positives;
* ``support`` — the support-set term ``−log(mean cos(f, f_sup))`` both ways, where ``f_sup`` is
  the sum of the other modality's in-batch features sharing a label with ``f``, weighted by
  ``n · exp(cos / support_temperature)`` normalised to one (:func:`support_set_loss`).

The **binary layer** (the shared :class:`~xmodal.models.hashing.HashHead`, ``tanh``) maps the
retrieval embedding of either modality to ``bits``: the halved inner products ``h·h'/(2·bits)``
regress ``cos/2`` of the *fused* pair features ``normalise(e_img + e_txt)`` (image and text
codes together; the fused features are centred over the batch first by default, see below), with
the label BCE (a code classifier) and the pairwise likelihood on codes, and an optional
quantisation term.

Retrieval embeddings may fuse the student feature with the feature of the generated other
modality: ``e_img = normalise((1 − α)·ū + α·t̄_T)`` and ``e_txt = normalise((1 − α)·v̄ + α·t̄_I)``
with ``α = generated_weight`` (bars: L2-normalised). The default ``α = 0`` keeps the teachers out
of inference (embeddings are the students' ``ū``, ``v̄``): on validation, ``α = 0`` was best on
Flickr8k-1k (rsum 348 vs 331 at 0.25 and ~313 at 0.5) and on par on OpenMoji (mAP).

Labels come from ``Batch.labels``. **Without labels** (e.g. Flickr8k, or an all-zero label
matrix) every training image is its own class: ``S`` is "same image", ``n = 1`` for those pairs,
and the classifier has one output per training image (up to ``max_instance_classes``; above that
the two classifier terms are skipped, the other terms are unchanged). The classifier's size is
fixed in :meth:`CRCGS.prepare`; loading a checkpoint resizes it to the checkpoint's.

Where this implementation had to choose (documented; the published code was not available):
    * The "teacher features" are the students' images of the teachers' *generated* features, so
      all four teacher/student pairs of the contrastive term live in the one common space.
    * ``center_hash_target=True`` (default) centres the fused features over the batch before
      taking the cosine target of the binary layer: their cosines share a common offset that
      would otherwise be spent on bits constant over all items (OpenMoji validation Hamming mAP
      i2t 0.38 → 0.42). ``False`` is the literal description.
    * The binary layer is trained during stage ``"main"`` on detached embeddings, not in a
      stage of its own: the trainer reloads the checkpoint selected on validation at the end,
      which would discard a later non-selecting stage. Its gradient never reaches the students.
    * The support-set log is guarded: for ``m = mean cos(f, f_sup)`` below ``eps = 1e-4`` the
      loss continues linearly, ``−log eps + (eps − m)/eps``, so it stays finite and keeps the
      gradient of ``−log`` at ``eps`` (a plain clamp would zero it). Rows whose label set
      shares nothing with the other modality's batch (possible only with labels) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from xmodal.methods.base import Batch, Method, MethodConfig, Outputs, Stage, Terms, TrainingData
from xmodal.methods.infonce import multi_positive_infonce
from xmodal.methods.registry import register_method
from xmodal.models.generators import Discriminator, FeatureGenerator, grad_reverse
from xmodal.models.hashing import (
    HashHead,
    binarize,
    cosine_target,
    quantization_loss,
    similarity_matching_loss,
)
from xmodal.models.heads import l2_normalize

__all__ = [
    "CRCGS",
    "CRCGSConfig",
    "guarded_neg_log",
    "pairwise_label_likelihood",
    "support_set_loss",
]


@dataclass
class CRCGSConfig(MethodConfig):
    """Options of :class:`CRCGS`.

    Attributes:
        embed_dim: Size of the common space.
        hidden: Hidden sizes of each student's private layers (the last layer, to the common
            space, is shared by both modalities).
        dropout: Dropout in the students and the generators.
        generator_hidden: Hidden size of the generators' encoders.
        generator_fraction: Share of the epochs spent pre-training the generators.
        temperature: Temperature of the contrastive (NCE) term.
        support_temperature: ``t_ssl`` of the support-set softmax.
        generated_weight: ``α``, weight of the generated-feature view in the embeddings.
        label_weight, pairwise_weight, paired_weight, teacher_weight, adversarial_weight,
        contrastive_weight, support_weight: Weights of the loss terms (module docstring).
        bits: Hash code length.
        hash_hidden: Hidden sizes of the binary layer (empty: one linear layer and ``tanh``).
        hash_weight: Weight of the code-similarity term.
        hash_label_weight: Weight of the label terms (BCE + pairwise likelihood) on codes.
        quantization_weight: Weight of the optional quantisation term (0 disables it).
        center_hash_target: Centre the fused features before taking the binary layer's cosine
            target (``False``: the raw cosine matrix).
        max_instance_classes: Largest training set for which instance labels get a classifier.
    """

    embed_dim: int = 1024
    hidden: tuple[int, ...] = (512,)
    dropout: float = 0.1
    generator_hidden: int = 1024
    generator_fraction: float = 0.2
    temperature: float = 0.05
    support_temperature: float = 0.1
    generated_weight: float = 0.0
    label_weight: float = 1.0
    pairwise_weight: float = 1.0
    paired_weight: float = 1.0
    teacher_weight: float = 1.0
    adversarial_weight: float = 0.1
    contrastive_weight: float = 1.0
    support_weight: float = 1.0
    bits: int = 64
    hash_hidden: tuple[int, ...] = ()
    hash_weight: float = 1.0
    hash_label_weight: float = 1.0
    quantization_weight: float = 0.0
    center_hash_target: bool = True
    max_instance_classes: int = 20000

    def __post_init__(self) -> None:
        if self.bits <= 0:
            raise ValueError(f"bits must be > 0, got {self.bits}")
        if not 0.0 < self.generator_fraction < 1.0:
            raise ValueError(f"generator_fraction must be in (0, 1), got {self.generator_fraction}")
        if self.temperature <= 0 or self.support_temperature <= 0:
            raise ValueError(
                "temperature and support_temperature must be > 0, got "
                f"{self.temperature} and {self.support_temperature}"
            )
        if not 0.0 <= self.generated_weight <= 1.0:
            raise ValueError(f"generated_weight must be in [0, 1], got {self.generated_weight}")


# --- pure loss terms --------------------------------------------------------------------------
def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return l2_normalize(a) @ l2_normalize(b).T


def pairwise_label_likelihood(
    a: torch.Tensor, b: torch.Tensor, similar: torch.Tensor
) -> torch.Tensor:
    """Mean of ``log(1 + e^θ) − S·θ`` with ``θ_ij = cos(a_i, b_j) / 2`` and ``S = similar``.

    The negative log-likelihood of ``S`` under ``P(S_ij = 1) = σ(θ_ij)``: it falls as similar
    pairs align (``cos → 1``) and dissimilar pairs point apart (``cos → −1``).
    """
    theta = _cosine(a, b) / 2
    return (F.softplus(theta) - similar.to(theta.dtype) * theta).mean()


def guarded_neg_log(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``−log x`` for ``x ≥ eps``; below, its tangent at ``eps``: ``−log eps + (eps − x) / eps``.

    Finite for every real ``x`` (cosines may be ≤ 0) and with a gradient that keeps pushing
    ``x`` up.
    """
    safe = x.clamp(min=eps)
    linear = -torch.log(torch.tensor(eps, dtype=x.dtype, device=x.device)) + (eps - x) / eps
    return torch.where(x >= eps, -torch.log(safe), linear)


def support_set_loss(
    features: torch.Tensor,
    others: torch.Tensor,
    shared: torch.Tensor,
    temperature: float,
    eps: float = 1e-4,
) -> torch.Tensor:
    """``−log(mean_i cos(f_i, f_sup_i))`` over rows with at least one label-sharing partner.

    ``f_sup_i = Σ_j w_ij ō_j`` with ``w_ij ∝ n_ij · exp(cos(f_i, o_j) / temperature)`` over the
    ``j`` with ``n_ij > 0`` (``n`` = ``shared``, the number of shared labels), normalised to one;
    ``ō`` are the L2-normalised ``others``. The log is guarded by :func:`guarded_neg_log`. A batch
    in which no row has a partner gives 0.

    Args:
        features: ``[B, d]`` features ``f``.
        others: ``[M, d]`` features of the other modality.
        shared: ``[B, M]`` non-negative counts of shared labels.
        temperature: ``t_ssl``.
    """
    if shared.shape != (features.shape[0], others.shape[0]):
        raise ValueError(
            f"shared has shape {tuple(shared.shape)}, expected "
            f"{(features.shape[0], others.shape[0])}"
        )
    has_support = (shared > 0).any(1)
    if not has_support.any():
        return features.sum() * 0.0
    f, o, n = features[has_support], others, shared[has_support].to(features.dtype)
    logits = _cosine(f, o) / temperature + torch.log(n.clamp(min=0))  # log 0 = -inf: masked out
    weights = torch.softmax(logits, dim=1)
    support = weights @ l2_normalize(o)
    mean_cos = F.cosine_similarity(f, support, dim=1, eps=1e-8).mean()
    return guarded_neg_log(mean_cos, eps)


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


# --- the method -------------------------------------------------------------------------------
class _Student(nn.Module):
    """Private MLP of one modality; the last (shared) layer is passed in."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)]
        prev = in_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.GELU(), nn.Dropout(dropout)]
            prev = h
        self.net = nn.Sequential(*layers)
        self.out_dim = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_method
class CRCGS(Method[CRCGSConfig]):
    """Generators as teachers, label-aware students, contrastive and support-set terms, hashing.

    See the module docstring for the objective and the documented choices. The forward pass
    of stage ``"generators"`` is the two generators' output (``Outputs.image``: the image-side
    features generated from the texts, ``text``: the text-side features generated from the
    images); that of ``"main"`` the students' and teachers' common-space features and the
    relaxed codes. Every term is a function of the whole batch, so under DDP the objective sees
    the global batch (``global_negatives``).
    """

    name = "crcgs"
    Config = CRCGSConfig
    global_negatives = True

    def __init__(self, config: CRCGSConfig, image_dim: int, text_dim: int) -> None:
        super().__init__(config, image_dim, text_dim)
        c = config
        self.gen_i2t = FeatureGenerator(image_dim, text_dim, c.generator_hidden, c.dropout)
        self.gen_t2i = FeatureGenerator(text_dim, image_dim, c.generator_hidden, c.dropout)
        self.image_student = _Student(image_dim, tuple(c.hidden), c.dropout)
        self.text_student = _Student(text_dim, tuple(c.hidden), c.dropout)
        if self.image_student.out_dim != self.text_student.out_dim:  # pragma: no cover
            raise ValueError("students must end in the same width")
        self.shared = nn.Linear(self.image_student.out_dim, c.embed_dim)
        self.modality_discriminator = Discriminator(c.embed_dim)
        self.source_discriminator = Discriminator(c.embed_dim)
        self.hash_head = HashHead(c.embed_dim, c.bits, c.hash_hidden)
        # Sized in prepare() (labels or instance classes); resized when a checkpoint is loaded.
        self.register_module("classifier", None)
        self.register_module("code_classifier", None)
        self.register_load_state_dict_pre_hook(_resize_classifiers)
        self.label_mode = "unprepared"

    # --- trainer hooks ------------------------------------------------------------------------
    def prepare(self, data: TrainingData) -> None:
        """Choose label or instance mode and size the classifiers."""
        if data.labels is not None and bool((data.labels > 0).any()):
            self.label_mode, n_classes = "labels", int(data.labels.shape[1])
        else:
            self.label_mode, n_classes = "instance", int(data.image_features.shape[0])
            if n_classes > self.config.max_instance_classes:
                n_classes = 0
        device = self.shared.weight.device
        self.classifier = (
            nn.Linear(self.config.embed_dim, n_classes).to(device) if n_classes else None
        )
        self.code_classifier = (
            nn.Linear(self.config.bits, n_classes).to(device) if n_classes else None
        )

    def stages(self) -> list[Stage]:
        frac = self.config.generator_fraction
        generators = [*self.gen_i2t.parameters(), *self.gen_t2i.parameters()]
        main = [
            p
            for name, p in self.named_parameters()
            if not name.startswith(("gen_i2t.", "gen_t2i."))
        ]
        return [
            Stage("generators", generators, frac, select=False),
            Stage("main", main, 1.0 - frac),
        ]

    def forward(self, batch: Batch, stage: str = "main") -> Outputs:
        if stage == "generators":
            gen_text = self.gen_i2t(batch.image)
            gen_image = self.gen_t2i(batch.text)
            return Outputs(image_index=batch.image_index, image=gen_image, text=gen_text)
        if stage == "main":
            return self._main_forward(batch)
        raise ValueError(f"unknown stage {stage!r} for {self.name}; known: generators, main")

    def objective(self, outputs: Outputs, batch: Batch, stage: str = "main") -> Terms:
        if stage == "generators":
            gen_image, gen_text = outputs.embeddings()
            i2t = F.l1_loss(gen_text, batch.text)
            t2i = F.l1_loss(gen_image, batch.image)
            return Terms().add("l1_i2t", i2t).add("l1_t2i", t2i)
        if stage == "main":
            return self._main_objective(outputs, batch)
        raise ValueError(f"unknown stage {stage!r} for {self.name}; known: generators, main")

    # --- features -----------------------------------------------------------------------------
    def student_image(self, x: torch.Tensor) -> torch.Tensor:
        """Common-space feature of image features (not normalised)."""
        return self.shared(self.image_student(x))

    def student_text(self, y: torch.Tensor) -> torch.Tensor:
        """Common-space feature of text features (not normalised)."""
        return self.shared(self.text_student(y))

    def teacher_features(
        self, image: torch.Tensor, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t_I, t_T)``: students applied to features generated by the frozen teachers.

        ``t_I = E_I(G_t2i(text))`` and ``t_T = E_T(G_i2t(image))``; no gradient reaches the
        generators.
        """
        with torch.no_grad():
            gen_image = self._frozen(self.gen_t2i, text)
            gen_text = self._frozen(self.gen_i2t, image)
        return self.student_image(gen_image), self.student_text(gen_text)

    @staticmethod
    def _frozen(generator: FeatureGenerator, x: torch.Tensor) -> torch.Tensor:
        was = generator.training
        generator.eval()
        try:
            return generator(x)
        finally:
            generator.train(was)

    def _fuse(self, student: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        a = self.config.generated_weight
        return l2_normalize((1 - a) * l2_normalize(student) + a * l2_normalize(generated))

    # --- labels -------------------------------------------------------------------------------
    def _labels(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(multi-hot targets for the classifier or None, [B, B] shared-label counts)``."""
        if self.label_mode == "unprepared":
            raise RuntimeError(f"{self.name}: call prepare() with the training data first")
        if self.label_mode == "labels":
            if batch.labels is None:
                raise ValueError(f"{self.name} was prepared with labels but the batch has none")
            labels = (batch.labels > 0).to(batch.image.dtype)
            return labels, labels @ labels.T
        shared = batch.positives().to(batch.image.dtype)
        if self.classifier is None:
            return None, shared
        return F.one_hot(batch.image_index, self.classifier.out_features).to(shared.dtype), shared

    # --- the main objective -------------------------------------------------------------------
    def _main_forward(self, batch: Batch) -> Outputs:
        if self.label_mode == "unprepared":
            raise RuntimeError(f"{self.name}: call prepare() with the training data first")
        u, v = self.student_image(batch.image), self.student_text(batch.text)
        t_img, t_txt = self.teacher_features(batch.image, batch.text)
        e_img = self._fuse(u, t_txt).detach()
        e_txt = self._fuse(v, t_img).detach()
        # the binary layer on detached embeddings: its gradient never reaches the students
        h_img, h_txt = self.hash_head(torch.cat([e_img, e_txt])).chunk(2)
        return Outputs(
            image_index=batch.image_index,
            image=e_img,
            text=e_txt,
            image_codes=h_img,
            text_codes=h_txt,
            extra={
                "student_image": u,
                "student_text": v,
                "teacher_image": t_img,
                "teacher_text": t_txt,
            },
        )

    def _main_objective(self, outputs: Outputs, batch: Batch) -> Terms:
        cfg = self.config
        targets, shared = self._labels(batch)
        similar = shared > 0
        u, v = outputs.get("student_image"), outputs.get("student_text")
        t_img, t_txt = outputs.get("teacher_image"), outputs.get("teacher_text")
        zero = u.sum() * 0.0

        label = zero
        if targets is not None and self.classifier is not None:
            label = (_bce(self.classifier(u), targets) + _bce(self.classifier(v), targets)) / 2
        pairwise = (
            pairwise_label_likelihood(u, u, similar)
            + pairwise_label_likelihood(u, v, similar)
            + pairwise_label_likelihood(v, v, similar)
        ) / 3
        nu, nv = l2_normalize(u), l2_normalize(v)
        paired = (nu - nv).pow(2).sum(1).mean()
        teacher = (
            (nu - l2_normalize(t_img)).pow(2).sum(1).mean()
            + (nv - l2_normalize(t_txt)).pow(2).sum(1).mean()
        ) / 2
        adversarial = self._adversarial(u, v, t_img, t_txt)
        positives = outputs.positives()
        scale = 1.0 / cfg.temperature
        contrastive = torch.stack(
            [_symmetric_nce(s, t, positives, scale) for s in (u, v) for t in (t_img, t_txt)]
        ).mean()
        support = (
            support_set_loss(u, v, shared, cfg.support_temperature)
            + support_set_loss(v, u, shared.T, cfg.support_temperature)
        ) / 2
        hashing, hash_label, quant = self._hash_terms(outputs, targets, similar)
        return (
            Terms()
            .add("label", label, cfg.label_weight)
            .add("pairwise", pairwise, cfg.pairwise_weight)
            .add("paired", paired, cfg.paired_weight)
            .add("teacher", teacher, cfg.teacher_weight)
            .add("adversarial", adversarial, cfg.adversarial_weight)
            .add("contrastive", contrastive, cfg.contrastive_weight)
            .add("support", support, cfg.support_weight)
            .add("hash", hashing, cfg.hash_weight)
            .add("hash_label", hash_label, cfg.hash_label_weight)
            .add("quantization", quant, cfg.quantization_weight)
        )

    def _adversarial(
        self, u: torch.Tensor, v: torch.Tensor, t_img: torch.Tensor, t_txt: torch.Tensor
    ) -> torch.Tensor:
        """BCE of the modality (image 0, text 1) and source (real 0, generated 1) discriminators.

        The features pass a gradient-reversal layer: the discriminators descend this loss, the
        students ascend it.
        """
        real = grad_reverse(torch.cat([u, v]))
        generated = grad_reverse(torch.cat([t_img, t_txt]))
        b = u.shape[0]
        modality_target = torch.cat([torch.zeros(b), torch.ones(b)]).to(u)
        modality = _bce(self.modality_discriminator(real), modality_target)
        source_logits = self.source_discriminator(torch.cat([real, generated]))
        source_target = torch.cat([torch.zeros(2 * b), torch.ones(2 * b)]).to(u)
        return (modality + _bce(source_logits, source_target)) / 2

    def _hash_terms(
        self, outputs: Outputs, targets: torch.Tensor | None, similar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Binary-layer terms on the detached embeddings: similarity, labels, quantisation."""
        e_img, e_txt = outputs.embeddings()
        if outputs.image_codes is None or outputs.text_codes is None:
            raise ValueError("crcgs's main stage needs the relaxed codes of its forward pass")
        h_img, h_txt = outputs.image_codes, outputs.text_codes
        fused = l2_normalize(e_img + e_txt)
        target = cosine_target(fused, self.config.center_hash_target).repeat(2, 2)
        h = torch.cat([h_img, h_txt])
        # MSE between θ_codes = h·h'/(2·bits) and θ_fused = cos/2: a quarter of the unhalved MSE.
        hashing = 0.25 * similarity_matching_loss(h, h, target)
        hash_label = (
            pairwise_label_likelihood(h_img, h_img, similar)
            + pairwise_label_likelihood(h_img, h_txt, similar)
            + pairwise_label_likelihood(h_txt, h_txt, similar)
        ) / 3
        if targets is not None and self.code_classifier is not None:
            logits = self.code_classifier(h)
            hash_label = hash_label + _bce(logits, targets.repeat(2, 1))
        return hashing, hash_label, quantization_loss(h)

    # --- evaluation and search ----------------------------------------------------------------
    def _generated_text(self, image: torch.Tensor) -> torch.Tensor:
        return self.student_text(self._frozen(self.gen_i2t, image))

    def _generated_image(self, text: torch.Tensor) -> torch.Tensor:
        return self.student_image(self._frozen(self.gen_t2i, text))

    def embed_image(self, features: torch.Tensor) -> torch.Tensor:
        student = self.student_image(features)
        if self.config.generated_weight == 0:
            return l2_normalize(student)
        return self._fuse(student, self._generated_text(features))

    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        student = self.student_text(features)
        if self.config.generated_weight == 0:
            return l2_normalize(student)
        return self._fuse(student, self._generated_image(features))

    def hash_image(self, features: torch.Tensor) -> torch.Tensor:
        return binarize(self.hash_head(self.embed_image(features)))

    def hash_text(self, features: torch.Tensor) -> torch.Tensor:
        return binarize(self.hash_head(self.embed_text(features)))

    def extra_state_for_run(self) -> dict[str, Any]:
        n = 0 if self.classifier is None else self.classifier.out_features
        return {"label_mode": self.label_mode, "classes": n}


def _symmetric_nce(
    a: torch.Tensor, b: torch.Tensor, positives: torch.Tensor, scale: float
) -> torch.Tensor:
    logits = scale * _cosine(a, b)
    return (
        multi_positive_infonce(logits, positives) + multi_positive_infonce(logits.T, positives.T)
    ) / 2


def _resize_classifiers(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """Load-state-dict pre-hook: give the classifiers the checkpoint's shapes."""
    for name in ("classifier", "code_classifier"):
        weight = state_dict.get(f"{prefix}{name}.weight")
        current = getattr(module, name)
        if weight is None:
            if current is not None:
                setattr(module, name, None)
            continue
        if current is None or current.weight.shape != weight.shape:
            device = next(module.parameters()).device
            setattr(module, name, nn.Linear(weight.shape[1], weight.shape[0]).to(device))
