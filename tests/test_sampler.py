"""MultiDatasetSampler: determinism per seed and epoch, epoch coverage, fixed ratios per batch, ranks, resuming."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from bundle.data.sampler import MultiDatasetSampler

# 10 prognosis images, 27 severity images (about the paper's 942 : 2742), interleaved to catch index mix-ups.
IDS = ["aiforcovid" if i % 4 == 0 and i < 40 else "brixia" for i in range(37)]
SIZES = Counter(IDS)


@pytest.mark.parametrize("mode", ["proportional", "fixed_ratio"])
def test_deterministic_per_seed_and_epoch(mode: str) -> None:
    a = MultiDatasetSampler(IDS, batch_size=8, mode=mode, seed=3)
    b = MultiDatasetSampler(IDS, batch_size=8, mode=mode, seed=3)
    first = list(a)
    assert first == list(b)
    assert a.epoch == 1  # each pass moves to the next epoch: a plain DataLoader reshuffles every epoch
    second = list(a)
    assert second != first and second == list(b)
    a.set_epoch(0)
    assert list(a) == first
    assert list(MultiDatasetSampler(IDS, batch_size=8, mode=mode, seed=4)) != first
    # Through a DataLoader that never calls set_epoch (as MONAI's workflows do for non-distributed samplers).
    loader = DataLoader(range(len(IDS)), batch_size=8, sampler=MultiDatasetSampler(IDS, 8, mode=mode, seed=3))
    assert [[i for batch in loader for i in batch.tolist()] for _ in range(2)] == [first, second]


def test_proportional_covers_every_index_once() -> None:
    sampler = MultiDatasetSampler(IDS, batch_size=8)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(len(IDS))) and len(sampler) == len(IDS)
    unshuffled = MultiDatasetSampler(IDS, batch_size=8, shuffle=False)
    assert list(unshuffled) == list(range(len(IDS)))


def test_fixed_ratio_in_every_batch() -> None:
    sampler = MultiDatasetSampler(IDS, batch_size=8, mode="fixed_ratio", ratios={"aiforcovid": 1, "brixia": 1})
    assert sampler.counts == {"aiforcovid": 4, "brixia": 4}
    order = list(sampler)
    # Epoch: enough batches to see the dataset needing most of them once: brixia 27 / 4 per batch -> 7 batches.
    assert len(order) == len(sampler) == 7 * 8
    for start in range(0, len(order), 8):
        assert Counter(IDS[i] for i in order[start : start + 8]) == {"aiforcovid": 4, "brixia": 4}
    seen = Counter(order)
    assert {i for i, d in enumerate(IDS) if d == "brixia"} <= set(seen)  # every severity image seen
    assert max(seen[i] for i, d in enumerate(IDS) if d == "brixia") == 2  # 28 > 27: one repeat
    assert {i for i, d in enumerate(IDS) if d == "aiforcovid"} <= set(seen)  # smaller set: reshuffled repetition
    loader = DataLoader(IDS, batch_size=8, sampler=sampler)
    assert all(Counter(batch) == {"aiforcovid": 4, "brixia": 4} for batch in loader)


def test_fixed_ratio_defaults_to_dataset_sizes() -> None:
    sampler = MultiDatasetSampler(IDS, batch_size=10, mode="fixed_ratio")
    assert sampler.counts == {"aiforcovid": 3, "brixia": 7}  # 10 * 10/37 = 2.7 -> 3, 7.3 -> 7
    sampler = MultiDatasetSampler(IDS, batch_size=8, mode="fixed_ratio", ratios={"brixia": 1.0}, num_samples=20)
    order = list(sampler)
    assert len(order) == 24 and {IDS[i] for i in order} == {"brixia"}


@pytest.mark.parametrize("drop_last", [False, True])
def test_proportional_ranks_are_disjoint_and_cover_the_epoch(drop_last: bool) -> None:
    parts = [list(MultiDatasetSampler(IDS, 4, num_replicas=3, rank=r, drop_last=drop_last)) for r in range(3)]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == len(
        MultiDatasetSampler(IDS, 4, num_replicas=3, drop_last=drop_last)
    )
    everything = [i for p in parts for i in p]
    if drop_last:  # 37 = 3 * 12 + 1: one index dropped, none repeated
        assert len(everything) == 36 and len(set(everything)) == 36
    else:  # padded to 39 with repeats of the first two
        assert set(everything) == set(range(37)) and len(everything) == 39
    global_order = list(MultiDatasetSampler(IDS, 4, shuffle=True))
    interleaved = [parts[j % 3][j // 3] for j in range(len(everything))]
    assert interleaved[:36] == global_order[:36]


def test_fixed_ratio_ranks_share_the_mix_and_partition_global_batches() -> None:
    ratios = {"aiforcovid": 1, "brixia": 3}
    parts = [list(MultiDatasetSampler(IDS, 4, "fixed_ratio", ratios, num_replicas=2, rank=r)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 4 * 5  # brixia 27 / (3 * 2) -> 5 global batches
    for part in parts:
        for start in range(0, len(part), 4):
            assert Counter(IDS[i] for i in part[start : start + 4]) == {"aiforcovid": 1, "brixia": 3}
    # Within each global batch the two ranks' blocks are disjoint; over the epoch every severity image is seen.
    for start in range(0, 20, 4):
        assert not set(parts[0][start : start + 4]) & set(parts[1][start : start + 4])
    brixia_seen = [i for p in parts for i in p if IDS[i] == "brixia"]
    assert set(brixia_seen) == {i for i, d in enumerate(IDS) if d == "brixia"}


def test_state_dict_round_trip() -> None:
    sampler = MultiDatasetSampler(IDS, batch_size=8, mode="fixed_ratio", seed=7)
    sampler.set_epoch(5)
    list(sampler)  # epoch 5 done: a checkpoint saved now resumes at epoch 6
    state = sampler.state_dict()
    assert state == {"epoch": 6, "seed": 7}
    expected = list(sampler)
    resumed = MultiDatasetSampler(IDS, batch_size=8, mode="fixed_ratio")
    resumed.load_state_dict(state)
    assert list(resumed) == expected


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        MultiDatasetSampler(IDS, 8, mode="round_robin")
    with pytest.raises(ValueError, match="fixed_ratio"):
        MultiDatasetSampler(IDS, 8, ratios={"brixia": 1})
    with pytest.raises(ValueError, match="known datasets"):
        MultiDatasetSampler(IDS, 8, mode="fixed_ratio", ratios={"covidx": 1})
    with pytest.raises(ValueError, match="too small"):
        MultiDatasetSampler(IDS, 2, mode="fixed_ratio", ratios={"aiforcovid": 1, "brixia": 9})
    with pytest.raises(ValueError, match="rank"):
        MultiDatasetSampler(IDS, 8, num_replicas=2, rank=2)
    assert list(MultiDatasetSampler(torch.tensor([0, 1, 1]), 2, shuffle=False)) == [0, 1, 2]
