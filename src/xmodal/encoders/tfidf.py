"""``tfidf``: TF-IDF text features, reduced by truncated SVD (LSA) to a fixed size.

A baseline that needs fitting: ``fit`` learns the vocabulary, IDF weights and SVD basis from
training captions; ``save``/``load`` keep that state next to a trained run so that queries can be
encoded later with exactly the same transform. The cache key carries a hash of the fitted state.

The saved state is data, never code: a zip holding ``state.json`` (format, config, vocabulary,
digest) and ``idf.npy`` / ``components.npy`` read with ``allow_pickle=False``. A pickle (the
joblib states of earlier xmodal versions) is refused unread, naming the file.

Rows are L2-normalised (cosine similarity = dot product).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from xmodal.encoders.base import TextEncoder, check_texts, register_text_encoder
from xmodal.errors import BadInputError
from xmodal.integrity import refuse_pickle
from xmodal.io import atomic_write

__all__ = ["TfidfConfig", "TfidfEncoder"]

_FORMAT = "xmodal-tfidf"
_FORMAT_VERSION = 2
_STATE, _IDF, _COMPONENTS = "state.json", "idf.npy", "components.npy"


@dataclass(frozen=True)
class TfidfConfig:
    """Options of :class:`TfidfEncoder`.

    Attributes:
        dim: Output size with ``svd`` (capped at ``min(vocabulary - 1, n_texts)`` when fitting on
            fewer texts or words, with a warning).
        svd: Reduce with ``TruncatedSVD`` to ``dim``; ``False`` keeps one column per term.
        max_features: Vocabulary size limit (most frequent terms), ``None`` for no limit.
        min_df: Ignore terms in fewer than this many texts.
        ngram_max: Use word n-grams of length 1..``ngram_max``.
        sublinear_tf: ``1 + log(tf)`` instead of raw counts.
        use_idf: Weight terms by inverse document frequency (``False``: term counts only).
        binary: Count a term once per text (presence), before any weighting.
        seed: Random state of the randomized SVD (fitting is deterministic given the seed).
    """

    dim: int = 512
    svd: bool = True
    max_features: int | None = 50_000
    min_df: int = 1
    ngram_max: int = 1
    sublinear_tf: bool = True
    use_idf: bool = True
    binary: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"tfidf dim must be >= 1, got {self.dim}")
        if self.max_features is not None and self.max_features < 1:
            raise ValueError(f"tfidf max_features must be >= 1 or None, got {self.max_features}")
        if self.min_df < 1:
            raise ValueError(f"tfidf min_df must be >= 1, got {self.min_df}")
        if self.ngram_max < 1:
            raise ValueError(f"tfidf ngram_max must be >= 1, got {self.ngram_max}")


class TfidfEncoder(TextEncoder):
    """TF-IDF (+ SVD) text encoder: :meth:`fit` it on training texts, or :meth:`load` a fitted one.

    ``dim`` is the requested size before fitting and the actual size after.

    Example:
        >>> enc = TfidfEncoder(TfidfConfig(dim=2)).fit(["a red car", "a blue car", "a dog"])
        >>> enc.encode(["red car"], progress=False).shape
        (1, 2)
    """

    name = "tfidf"

    def __init__(self, config: TfidfConfig | None = None, name: str = "tfidf") -> None:
        self.name = name  # the registered name (tfidf, bow) for messages; keys keep "tfidf"
        self.config = config or TfidfConfig()
        self.dim = self.config.dim
        self._vectorizer: Any = None
        self._components: Any = None
        self._digest: str | None = None

    @property
    def needs_fit(self) -> bool:
        """Always true: the vocabulary comes from training texts."""
        return True

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` or :meth:`load` has run."""
        return self._vectorizer is not None

    @property
    def key(self) -> str:
        """``tfidf@<hash of vocabulary, IDF and SVD basis>/d<dim>``; only once fitted."""
        if self._digest is None:
            raise RuntimeError(
                f"{self.name} encoder is not fitted: call fit(texts) or TfidfEncoder.load(path)"
            )
        return f"{TfidfEncoder.name}@{self._digest}/d{self.dim}"

    def fit(self, texts: Sequence[str]) -> TfidfEncoder:
        """Learn vocabulary, IDF and (with ``svd``) the projection from ``texts``; returns self."""
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = check_texts(texts)
        if not texts:
            raise ValueError("cannot fit tfidf on zero texts")
        cfg = self.config
        vectorizer = TfidfVectorizer(
            max_features=cfg.max_features,
            min_df=cfg.min_df,
            ngram_range=(1, cfg.ngram_max),
            sublinear_tf=cfg.sublinear_tf,
            use_idf=cfg.use_idf,
            binary=cfg.binary,
            dtype=np.float32,
        )
        try:
            x = vectorizer.fit_transform(texts)
        except ValueError as e:  # "empty vocabulary; perhaps the documents only contain stop words"
            raise ValueError(f"cannot fit tfidf on these {len(texts)} texts: {e}") from e
        svd = None
        dim = x.shape[1]
        if cfg.svd:
            dim = min(cfg.dim, x.shape[1] - 1, x.shape[0])
            if dim < 1:
                raise ValueError(
                    f"tfidf with svd needs at least 2 vocabulary terms and 1 text; got "
                    f"{x.shape[1]} terms from {x.shape[0]} texts"
                )
            if dim < cfg.dim:
                warnings.warn(
                    f"tfidf: only {x.shape[1]} terms and {x.shape[0]} texts, so dim is {dim} "
                    f"instead of {cfg.dim}",
                    stacklevel=2,
                )
            svd = TruncatedSVD(n_components=dim, algorithm="randomized", random_state=cfg.seed).fit(
                x
            )
            svd = svd.components_  # TruncatedSVD.transform(x) is x @ components_.T
        self._vectorizer, self._components, self.dim = vectorizer, svd, dim
        self._digest = self._state_digest()
        return self

    def _state_digest(self) -> str:
        config = dataclasses.asdict(self.config)
        for option, default in (("use_idf", True), ("binary", False)):
            if config[option] == default:  # options added later: digests of older states hold
                del config[option]
        h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
        vocab = sorted((term, int(col)) for term, col in self._vectorizer.vocabulary_.items())
        h.update(json.dumps(vocab).encode())
        if self.config.use_idf:
            h.update(np.ascontiguousarray(self._vectorizer.idf_, dtype=np.float64).tobytes())
        if self._components is not None:
            h.update(np.ascontiguousarray(self._components, dtype=np.float64).tobytes())
        return h.hexdigest()[:12]

    def encode(
        self, texts: Sequence[str], batch_size: int = 4096, progress: bool = True
    ) -> np.ndarray:
        """Encode ``texts`` into ``[len(texts), dim]`` float32 L2-normalised rows.

        Texts with no known term map to the zero vector.
        """
        if not self.is_fitted:
            raise RuntimeError(
                f"{self.name} encoder is not fitted: call fit(texts) or TfidfEncoder.load(path)"
            )
        texts = check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with tqdm(total=len(texts), unit="text", desc=self.name, disable=not progress) as bar:
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                x = self._vectorizer.transform(chunk)
                z = x @ self._components.T if self._components is not None else x.toarray()
                z = np.asarray(z, dtype=np.float32)
                norms = np.linalg.norm(z, axis=1, keepdims=True)
                out[start : start + len(chunk)] = z / np.where(norms > 0, norms, 1.0)
                bar.update(len(chunk))
        return out

    def save(self, path: str | Path) -> Path:
        """Write the fitted state to ``path`` (a zip of JSON and ``.npy``), atomically."""
        if not self.is_fitted:
            raise RuntimeError(f"cannot save an unfitted {self.name} encoder")
        state = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
            "dim": self.dim,
            "digest": self._digest,
            "vocabulary": {term: int(col) for term, col in self._vectorizer.vocabulary_.items()},
        }
        arrays = {_COMPONENTS: self._components}
        if self.config.use_idf:
            arrays[_IDF] = self._vectorizer.idf_

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
                z.writestr(_STATE, json.dumps(state, ensure_ascii=False, sort_keys=True))
                for name, arr in arrays.items():
                    if arr is not None:
                        buf = io.BytesIO()
                        np.save(buf, np.asarray(arr), allow_pickle=False)
                        z.writestr(name, buf.getvalue())

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path, name: str = "tfidf") -> TfidfEncoder:
        """Read a state written by :meth:`save` (no code is ever run: JSON and ``.npy`` only).

        Raises:
            BadInputError: ``path`` is missing, is a pickle, or is not an xmodal tfidf state.
        """
        path = Path(path)
        if not path.is_file():
            raise BadInputError(path, f"{name} state file not found")
        refuse_pickle(path, f"{name} state")
        try:
            with zipfile.ZipFile(path) as z:
                state = json.loads(z.read(_STATE).decode("utf-8"))
                arrays = {
                    n: np.load(io.BytesIO(z.read(n)), allow_pickle=False)
                    for n in (_IDF, _COMPONENTS)
                    if n in z.namelist()
                }
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
            raise BadInputError(
                path, f"not a readable {name} state ({e.__class__.__name__}: {e})"
            ) from e
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise BadInputError(path, f"not an xmodal {name} state (written by TfidfEncoder.save)")
        if state.get("version") != _FORMAT_VERSION:
            raise BadInputError(
                path, f"{name} state version {state.get('version')}, expected {_FORMAT_VERSION}"
            )
        try:
            enc = cls(TfidfConfig(**state["config"]), name=name)
            enc._restore(state["vocabulary"], arrays.get(_IDF), arrays.get(_COMPONENTS))
            enc.dim = int(state["dim"])
        except (KeyError, TypeError, ValueError) as e:
            raise BadInputError(path, f"malformed {name} state ({e})") from e
        enc._digest = enc._state_digest()
        if enc._digest != state["digest"]:
            raise BadInputError(path, f"{name} state is inconsistent (its digest does not match)")
        return enc

    def _restore(
        self, vocabulary: dict[str, int], idf: np.ndarray | None, components: np.ndarray | None
    ) -> None:
        """Rebuild the fitted vectorizer from its vocabulary and IDF weights (no pickles)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        cfg = self.config
        vectorizer = TfidfVectorizer(
            vocabulary={str(t): int(c) for t, c in vocabulary.items()},
            ngram_range=(1, cfg.ngram_max),
            sublinear_tf=cfg.sublinear_tf,
            use_idf=cfg.use_idf,
            binary=cfg.binary,
            dtype=np.float32,
        )
        vectorizer.fit([" ".join(vocabulary)])  # a fixed vocabulary: only marks it fitted
        if cfg.use_idf:
            if idf is None:
                raise ValueError("the state has no IDF weights")
            vectorizer.idf_ = idf
        if cfg.svd and components is None:
            raise ValueError("the state has no SVD components")
        self._vectorizer = vectorizer
        self._components = components if cfg.svd else None


def _build(options: dict[str, Any], path: str | Path | None, name: str) -> TfidfEncoder:
    if path is not None:
        if options:
            raise ValueError(f"{name}: options {sorted(options)} cannot be combined with path=")
        return TfidfEncoder.load(path, name=name)
    known = {f.name for f in dataclasses.fields(TfidfConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {name} option(s) {unknown}; known: {sorted(known)}")
    return TfidfEncoder(TfidfConfig(**options), name=name)


@register_text_encoder("tfidf")
def _tfidf(
    device: str | torch.device | None = None, path: str | Path | None = None, **options: Any
) -> TfidfEncoder:
    """``get_text_encoder("tfidf", dim=256)`` (unfitted) or ``("tfidf", path=...)`` (fitted)."""
    del device  # CPU only
    return _build(options, path, "tfidf")


#: Bag of words: word presence per text, no IDF weighting, L2-normalised, reduced by SVD.
BOW_DEFAULTS: dict[str, Any] = {"binary": True, "use_idf": False, "sublinear_tf": False}


@register_text_encoder("bow")
def _bow(
    device: str | torch.device | None = None, path: str | Path | None = None, **options: Any
) -> TfidfEncoder:
    """``get_text_encoder("bow")``: the TF-IDF encoder with :data:`BOW_DEFAULTS` (fit it first)."""
    del device  # CPU only
    return _build(options if path is not None else {**BOW_DEFAULTS, **options}, path, "bow")
