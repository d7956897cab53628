"""The method contract, checked the same way for every registered method (wrappers included).

For each name: it builds from its name; every stage's loss is finite and its backward reaches
every parameter of the stage; a state-dict round trip into a fresh instance reproduces the
embeddings (and hash codes); the embeddings are unit length. Wrappers run their base's forward
pass exactly once per step. For every method that declares global negatives, 2 gloo processes
with B rows each give the loss and the gradients of 1 process with the 2B rows; a method that
does not declare them is refused under DDP with a clear error.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from gloo import run_in_gloo_group

from xmodal.distributed.ddp import shard_slice, wrap_loss
from xmodal.methods import Batch, Method, TrainingData, build_method, list_methods
from xmodal.methods.base import WrappedConfig
from xmodal.methods.registry import get_method_class
from xmodal.training import PairedFeatures, TrainConfig, Trainer
from xmodal.training.data import UnpairedFeatures, iterate_batches

D_IMG, D_TXT, N_IMAGES, CAPTIONS, B = 12, 10, 10, 2, 6

#: Tiny sizes and no dropout (so two processes and one see the same function).
SHARED = {"embed_dim": 8, "hidden": (16,), "dropout": 0.0}
OWN = {
    "multitask": {"bits": 8, "hash_hidden": (8,), "correlation_hidden": 16},
    "crcgs": {"bits": 8, "generator_hidden": 16},
    "aeir": {"discriminator_hidden": (8,)},
    "ensemble": {"members": 2},
    "selftrain": {"warmup_epochs": 0.0, "csls_k": 2},
}
#: Wrappers around other bases than their default (the registered names cover the defaults).
COMPOSED = ["cusa(vse)", "aeir(vse)", "ensemble(vse)", "ensemble(cusa(infonce))"]


def _is_wrapper(name: str) -> bool:
    return issubclass(get_method_class(name).Config, WrappedConfig)


NAMES = list_methods() + COMPOSED
WRAPPERS = [n for n in NAMES if _is_wrapper(n)]


def _build(name: str, seed: int = 0) -> Method:
    torch.manual_seed(seed)
    outer = name.split("(")[0]
    return build_method(name, D_IMG, D_TXT, **SHARED, **OWN.get(outer, {}))


def _needs_target(method: Method) -> bool:
    if method.needs_target:
        return True
    inner = [getattr(method, "base", None), *getattr(method, "members", [])]
    return any(isinstance(m, Method) and _needs_target(m) for m in inner)


def _features() -> tuple[PairedFeatures, UnpairedFeatures]:
    rng = np.random.default_rng(0)
    image = rng.standard_normal((N_IMAGES, D_IMG)).astype(np.float32)
    t2i = np.repeat(np.arange(N_IMAGES), CAPTIONS)
    mix = rng.standard_normal((D_IMG, D_TXT)).astype(np.float32)
    text = (image[t2i] @ mix + 0.3 * rng.standard_normal((len(t2i), D_TXT))).astype(np.float32)
    target = UnpairedFeatures(
        image=(rng.standard_normal((16, D_IMG)) + 1.0).astype(np.float32),
        text=rng.standard_normal((16, D_TXT)).astype(np.float32),
    )
    return PairedFeatures(image, text, t2i), target


def _data(method: Method) -> TrainingData:
    paired, target = _features()
    return paired.to_training_data(torch.device("cpu"), target if _needs_target(method) else None)


def _global_batch(data: TrainingData) -> Batch:
    """``2B`` rows (positives across the two halves), with ``2B`` target rows when present."""
    text_index = torch.tensor([0, 3, 5, 1, 8, 10, 2, 4, 13, 16, 19, 6])
    image_index = data.text_to_image[text_index]
    target = data.target_image_features is not None
    return Batch(
        image=data.image_features[image_index],
        text=data.text_features[text_index],
        image_index=image_index,
        text_index=text_index,
        target_image=data.target_image_features[: 2 * B] if target else None,
        target_text=data.target_text_features[: 2 * B] if target else None,
    )


def _half(batch: Batch, part: slice) -> Batch:
    def cut(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[part]

    return dataclasses.replace(
        batch,
        image=batch.image[part],
        text=batch.text[part],
        image_index=batch.image_index[part],
        text_index=batch.text_index[part],
        target_image=cut(batch.target_image),
        target_text=cut(batch.target_text),
    )


def _prepared(name: str, seed: int = 0) -> tuple[Method, TrainingData]:
    method = _build(name, seed)
    data = _data(method)
    method.prepare(data)
    return method, data


def _loss_and_grads(
    name: str, batch: Batch | None, stage: str
) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss of ``stage`` through the trainer's loss module (DDP inside a group) and the grads."""
    method, data = _prepared(name)
    module = wrap_loss(method, torch.device("cpu"))
    loss = module(batch if batch is not None else _global_batch(data), stage=stage)["loss"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


# --- every method ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_builds_from_its_name_and_every_stage_trains_every_parameter(name: str) -> None:
    method, data = _prepared(name)
    outer = name.split("(")[0]
    assert method.name == outer
    if not method.trainable:
        method.fit(data)
        assert all(torch.isfinite(b).all() for b in method.buffers())
        return
    batch = _global_batch(data)
    for stage in method.stages():
        method.zero_grad(set_to_none=True)
        terms = method.loss(batch, stage.name)
        assert torch.isfinite(terms["loss"]), stage.name
        assert all(torch.isfinite(v).all() for v in terms.values()), stage.name
        terms["loss"].backward()
        missing = [i for i, p in enumerate(stage.parameters) if p.grad is None]
        assert not missing, f"{stage.name}: {len(missing)} parameters got no gradient"
        assert all(torch.isfinite(p.grad).all() for p in stage.parameters), stage.name
        assert any(p.grad.abs().sum() > 0 for p in stage.parameters), stage.name


def _one_epoch(method: Method) -> None:
    paired, target = _features()
    cfg = TrainConfig(epochs=1, batch_size=4, patience=0, progress=False, device="cpu", seed=1)
    Trainer(method, cfg).fit(paired, paired, unpaired=target if _needs_target(method) else None)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_reproduces_unit_length_embeddings(name: str) -> None:
    method = _build(name)
    _one_epoch(method)
    fresh, _ = _prepared(name, seed=1)
    fresh.load_state_dict(method.state_dict())
    paired, _ = _features()
    image, text = torch.from_numpy(paired.image), torch.from_numpy(paired.text)
    method.eval(), fresh.eval()
    with torch.no_grad():
        for embed in ("embed_image", "embed_text", "hash_image", "hash_text"):
            x = image if embed.endswith("image") else text
            ours, theirs = getattr(method, embed)(x), getattr(fresh, embed)(x)
            if ours is None:
                assert theirs is None
                continue
            assert torch.equal(ours, theirs), embed
            if embed.startswith("embed"):
                norms = ours.norm(dim=1)
                assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), embed
            else:
                assert set(ours.unique().tolist()) <= {-1.0, 1.0}, embed


@pytest.mark.parametrize("name", WRAPPERS)
def test_wrappers_run_their_base_forward_once_per_step(name: str) -> None:
    method = _build(name)
    inner = list(getattr(method, "members", [])) or [method.base]  # type: ignore[attr-defined]
    calls = [0] * len(inner)
    for i, module in enumerate(inner):
        module.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    steps = [0]
    method.register_forward_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    _one_epoch(method)
    n_batches = sum(1 for _ in iterate_batches(_data(method), 4, torch.Generator()))
    assert steps[0] == n_batches * len(method.stages())
    assert calls == [steps[0]] * len(inner)


def test_wrapper_terms_see_the_dropout_mask_of_the_base_terms() -> None:
    # with dropout, cusa's soft-label terms are computed on the very embeddings of the base loss
    torch.manual_seed(0)
    method = build_method("cusa(infonce)", D_IMG, D_TXT, embed_dim=8, hidden=(16,), dropout=0.5)
    data = _data(method)
    batch = _global_batch(data)
    seen: list[torch.Tensor] = []
    method.base.register_forward_hook(lambda _m, _a, out: seen.append(out.image))
    original = method.soft_label_terms

    def spy(outputs, batch):  # type: ignore[no-untyped-def]
        seen.append(outputs.image)
        return original(outputs, batch)

    method.soft_label_terms = spy  # type: ignore[method-assign]
    method.loss(batch)
    assert len(seen) == 2 and seen[0] is seen[1]


# --- DDP: 2 processes x B equal 1 process x 2B -------------------------------------------------
def _stages(name: str) -> list[str]:
    return [s.name for s in _build(name).stages()]


GLOBAL = [n for n in NAMES if _build(n).trainable and _build(n).gathers_global_batch()]
LOCAL = [n for n in NAMES if _build(n).trainable and not _build(n).gathers_global_batch()]
CASES = [(name, stage) for name in GLOBAL for stage in _stages(name)]


def test_every_method_declares_whether_it_needs_global_negatives() -> None:
    assert {"infonce", "vse", "cusa", "crcgs", "aeir", "ensemble"} <= set(GLOBAL)
    # multitask samples its own pairs from training-set tables, selftrain its pseudo-pairs, per
    # process
    assert LOCAL == ["multitask", "selftrain"]
    assert not build_method("cusa(multitask)", D_IMG, D_TXT).gathers_global_batch()
    assert not build_method("ensemble(multitask)", D_IMG, D_TXT).gathers_global_batch()


def _worker(rank: int, size: int) -> dict[str, object]:
    result: dict[str, object] = {}
    for name, stage in CASES:
        mine = _half(_global_batch(_data(_build(name))), shard_slice(2 * B, rank, size))
        result[f"{name}/{stage}"] = _loss_and_grads(name, mine, stage)
    for name in LOCAL:
        method, data = _prepared(name)
        try:
            method.loss(_half(_global_batch(data), shard_slice(2 * B, rank, size)))
            result[f"refused/{name}"] = ""
        except ValueError as e:
            result[f"refused/{name}"] = str(e)
    return result


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_in_gloo_group(_worker, tmp_path_factory.mktemp("contract-ddp"))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "stage"), CASES)
def test_two_processes_equal_one_with_the_double_batch(
    ddp_results: list[dict], name: str, stage: str
) -> None:
    ref_loss, ref_grads = _loss_and_grads(name, None, stage)
    assert np.isfinite(ref_loss) and ref_grads
    for res in ddp_results:
        loss, grads = res[f"{name}/{stage}"]
        assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-7)
        assert set(grads) == set(ref_grads)
        for key, ref in ref_grads.items():
            assert torch.allclose(grads[key], ref, rtol=1e-4, atol=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize("name", LOCAL)
def test_ddp_refuses_a_method_without_global_negatives(ddp_results: list[dict], name: str) -> None:
    for res in ddp_results:
        assert "global_negatives = False" in res[f"refused/{name}"]
        assert "without --ddp" in res[f"refused/{name}"]
