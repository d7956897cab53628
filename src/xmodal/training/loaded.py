"""A trained run opened for use: its method, config, split and encoders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from xmodal.datasets import Dataset, Split
from xmodal.embedding import embed_pairs, score_embeddings
from xmodal.encoders.base import TextEncoder, resolve_device
from xmodal.methods import Method
from xmodal.querybank import QueryBank
from xmodal.training.data import PairedFeatures
from xmodal.training.encoded import EncodedDataset, encode_dataset, run_text_encoder
from xmodal.training.run import RunConfig, load_method, load_run_query_bank

__all__ = ["LoadedRun"]


@dataclass
class LoadedRun:
    """A trained run ready to embed: its method, config, encoders and split."""

    run_dir: Path
    method: Method
    config: RunConfig
    split: Split
    device: torch.device
    text_encoder: TextEncoder = field(repr=False)
    query_bank: QueryBank | None = field(default=None, repr=False)

    @classmethod
    def open(cls, run_dir: str | Path, device: str | None = None) -> LoadedRun:
        """Load the run's selected checkpoint, its text encoder and its query bank (if any)."""
        run_dir = Path(run_dir)
        dev = resolve_device(device)
        method, config = load_method(run_dir, dev)
        split = Split.from_json(run_dir / "split.json")
        return cls(
            run_dir,
            method,
            config,
            split,
            dev,
            run_text_encoder(config.text_encoder, run_dir, dev),
            load_run_query_bank(run_dir),
        )

    def encode(
        self, dataset: Dataset, cache_dir: str | Path | None = None, progress: bool = True
    ) -> EncodedDataset:
        """Frozen features of ``dataset`` with this run's encoders."""
        return encode_dataset(
            dataset,
            self.config.image_encoder,
            self.text_encoder,
            cache_dir,
            str(self.device),
            progress,
        )

    def embed(self, features: PairedFeatures) -> PairedFeatures:
        """Joint-space embeddings of a split."""
        return embed_pairs(self.method, features, self.device)

    def score(self, features: PairedFeatures) -> dict[str, float]:
        """The standard metrics of a split, with the run's query-bank normalisation if any
        (:func:`xmodal.embedding.score_embeddings`)."""
        return score_embeddings(self.embed(features), query_bank=self.query_bank)
