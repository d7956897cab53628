"""DDP over 2 CPU processes (gloo) equals one process with the doubled batch.

Each worker computes the loss of its half of a global batch with the embeddings gathered across
processes, back-propagates through DDP, and saves loss and (averaged) gradients; the reference is
one process on the whole batch (for ``vse`` the hardest negatives then come from the global
batch). Also: two epochs of :class:`Trainer` under DDP end in the same
parameters as one process with ``batch_size`` doubled.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gloo import run_in_gloo_group

from xmodal.distributed import gather, gather_with_grad, is_distributed, world
from xmodal.distributed.ddp import shard_slice, wrap_loss
from xmodal.methods import build_method
from xmodal.methods.base import Batch
from xmodal.training import PairedFeatures, TrainConfig, Trainer

D_IMG, D_TXT, B = 12, 10, 6
METHODS = {
    "infonce": {"dropout": 0.0, "embed_dim": 8, "hidden": (16,)},
    "cusa": {"dropout": 0.0, "embed_dim": 8, "hidden": (16,), "teacher_temperature": 0.1},
    "vse": {"dropout": 0.0, "embed_dim": 8, "hidden": (16,)},
}


def _global_batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    image_index = torch.tensor([0, 1, 2, 0, 3, 4, 5, 2, 6, 7, 1, 8])  # positives across ranks
    images = torch.randn(9, D_IMG, generator=g)
    return Batch(
        image=images[image_index],
        text=torch.randn(2 * B, D_TXT, generator=g),
        image_index=image_index,
        text_index=torch.arange(2 * B),
    )


def _half(batch: Batch, part: slice) -> Batch:
    return Batch(
        batch.image[part], batch.text[part], batch.image_index[part], batch.text_index[part]
    )


def _method(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method(name, D_IMG, D_TXT, **METHODS[name])


def _loss_and_grads(name: str, batch: Batch) -> tuple[float, dict[str, torch.Tensor]]:
    method = _method(name)
    module = wrap_loss(method, torch.device("cpu"))
    loss = module(batch)["loss"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def _paired(n_images: int = 24, captions: int = 2) -> PairedFeatures:
    rng = np.random.default_rng(3)
    return PairedFeatures(
        image=rng.standard_normal((n_images, D_IMG)).astype(np.float32),
        text=rng.standard_normal((n_images * captions, D_TXT)).astype(np.float32),
        text_to_image=np.repeat(np.arange(n_images), captions),
    )


def _train(name: str, batch_size: int) -> dict[str, torch.Tensor]:
    method = _method(name)
    cfg = TrainConfig(epochs=2, batch_size=batch_size, progress=False, device="cpu", seed=5)
    Trainer(method, cfg).fit(_paired())
    return {k: v.clone() for k, v in method.state_dict().items()}


def _worker(rank: int, size: int) -> dict:
    batch = _global_batch()
    mine = _half(batch, shard_slice(2 * B, rank, size))
    result = {}
    for name in METHODS:
        loss, grads = _loss_and_grads(name, mine)
        result[name] = {"loss": loss, "grads": grads, "train": _train(name, batch_size=4)}
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    y = gather_with_grad(x)
    (y * torch.arange(1.0, 5.0)[:, None]).sum().backward()
    result["gather"] = {"y": y.detach(), "grad": x.grad, "idx": gather(torch.tensor([rank]))}
    result["world"] = (world().rank, world().size, is_distributed())
    return result


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_in_gloo_group(_worker, tmp_path_factory.mktemp("ddp"))


pytestmark = pytest.mark.slow


def test_gather_outside_a_group_is_identity() -> None:
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x and gather(x) is x
    assert world().size == 1 and not is_distributed()


def test_gather_with_grad_sums_gradients_over_processes(ddp_results: list[dict]) -> None:
    for rank, res in enumerate(ddp_results):
        assert res["world"] == (rank, 2, True)
        g = res["gather"]
        assert torch.equal(g["y"], torch.tensor([[1.0] * 3] * 2 + [[2.0] * 3] * 2))
        assert g["idx"].tolist() == [0, 1]
        # d/dx of sum(y * w) on both processes, summed: 2 * w of this rank's rows
        w = torch.arange(1.0, 5.0)[2 * rank : 2 * rank + 2, None].expand(2, 3)
        assert torch.allclose(g["grad"], 2 * w)


@pytest.mark.parametrize("name", list(METHODS))
def test_ddp_loss_and_gradients_equal_one_process_with_double_batch(
    ddp_results: list[dict], name: str
) -> None:
    ref_loss, ref_grads = _loss_and_grads(name, _global_batch())
    assert ref_loss > 0 and len(ref_grads) >= 4
    for res in ddp_results:
        got = res[name]
        assert got["loss"] == pytest.approx(ref_loss, rel=1e-5)
        assert set(got["grads"]) == set(ref_grads)
        for key, ref in ref_grads.items():
            assert torch.allclose(got["grads"][key], ref, rtol=1e-4, atol=1e-6), key


@pytest.mark.parametrize("name", list(METHODS))
def test_ddp_training_equals_one_process_with_double_batch(
    ddp_results: list[dict], name: str
) -> None:
    ref = _train(name, batch_size=8)
    for res in ddp_results:
        got = res[name]["train"]
        for key, value in ref.items():
            assert torch.allclose(got[key], value, rtol=1e-4, atol=1e-5), key


def test_shard_slice_rejects_uneven_batches() -> None:
    assert shard_slice(8, 1, 2) == slice(4, 8)
    with pytest.raises(ValueError, match="equal shards"):
        shard_slice(7, 0, 2)
    with pytest.raises(ValueError, match="rank"):
        shard_slice(8, 2, 2)
