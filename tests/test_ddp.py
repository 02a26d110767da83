"""DDP (configs/multi_gpu_train.yaml) under torchrun with 2 CPU processes (Gloo) on tiny data.

Two torchrun launches: the real ``python -m monai.bundle run training`` merged with the DDP override (2 iterations),
and this file run as a torchrun script (``_worker``) that checks, with the real config's objects, the sampler
partition, DDP gradients against the one-process gradient of the same global batch, a head with no sample in a step,
and the gradient averaging of learnable loss weights. The pytest side compares the workers' results with
one-process computations.

What "the same gradient" means: DDP averages the ranks' gradients, so it equals the gradient of the global batch when
every rank's loss is the same function of its share. Per-sample layers must not couple samples (the network runs in
eval mode: BatchNorm uses its running statistics, dropout is off; in train mode BatchNorm normalises per rank, as in
any DDP run without SyncBatchNorm). The loss reduction must then average consistently: ``batch_mean`` does whenever
the per-rank batches have equal sizes; ``task_mean`` (a mean over each task's own samples) does when every rank holds
the same number of each task's samples, which the ``fixed_ratio`` sampler guarantees (with ``proportional`` sampling
it holds in expectation only).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bundle.engine.checkpoint import load_checkpoint
from bundle.networks.multihead import MultiHeadNet
from bundle.tasks import TaskSet
from conftest import ROOT, TINY_NETWORK, TINY_TRAINING

pytestmark = pytest.mark.e2e

DDP_CONFIG = "['configs/train.yaml','configs/multi_gpu_train.yaml']"
WORLD_SIZE = 2
GLOBAL_BATCH = 8
# Gradient cases: which rows of the fixed global batch each rank holds, and the loss reduction.
#   equal_mix: every rank holds 2 prognosis and 2 severity samples (what fixed_ratio gives) -> task_mean matches;
#   one_task_per_rank: rank 0 only prognosis, rank 1 only severity (each rank has a head with no sample) -> batch_mean.
GRADIENT_CASES = {
    "equal_mix": ("task_mean", [[0, 1, 4, 5], [2, 3, 6, 7]]),
    "one_task_per_rank": ("batch_mean", [[0, 1, 2, 3], [4, 5, 6, 7]]),
}


def _tasks() -> TaskSet:
    from monai.bundle import ConfigParser

    return TaskSet(ConfigParser.load_config_file(ROOT / "configs" / "common.yaml")["tasks"])


def fixed_batch(tasks: TaskSet) -> tuple[torch.Tensor, torch.Tensor]:
    """A global batch of 8 images: rows 0-3 labelled for prognosis only, rows 4-7 for severity only."""
    images = torch.randn(GLOBAL_BATCH, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    records = [{"prognosis": i % 2, "brixia_zones": None} for i in range(4)]
    records += [{"prognosis": None, "brixia_zones": [i % 4, 1, 2, 3, 0, i % 3]} for i in range(4)]
    return images, torch.stack([tasks.pack(record) for record in records])


def torchrun(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node 2 ...`` from the bundle root; fail on error."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD_SIZE}", *args]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if completed.returncode != 0:
        pytest.fail(
            f"torchrun {' '.join(args)} exited {completed.returncode}\n"
            f"--- stdout (tail)\n{completed.stdout[-4000:]}\n--- stderr (tail)\n{completed.stderr[-6000:]}"
        )
    return completed


# ---- the real training command under torchrun --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddp_training(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """2 training iterations (then validation and checkpointing) of the real config merged with the DDP override."""
    out = tmp_path_factory.mktemp("ddp_training")
    completed = torchrun(
        "-m", "monai.bundle", "run", "training", "--config_file", DDP_CONFIG, "--dataset_dir", str(tiny_demo),
        "--ckpt_dir", str(out / "models"), "--output_dir", str(out / "runs"), *TINY_NETWORK, *TINY_TRAINING,
        "--max_epochs", "1", "--train#trainer#epoch_length", "2", "--cache", "none",
    )  # fmt: skip
    return out, completed.stdout + completed.stderr


def test_ddp_training_writes_one_checkpoint_set_from_rank_0(ddp_training: tuple[Path, str]) -> None:
    out, log = ddp_training
    assert sorted(p.name for p in (out / "models").iterdir()) == ["checkpoint_last.pt", "model.pt"]
    assert len(re.findall(r"new best prognosis_loss=\S+, saved", log)) == 1  # one writer, not one per rank
    writers = {p.name.split(".")[4] for p in (out / "runs").glob("events.out.tfevents.*")}
    assert len(writers) == 1  # TensorBoard files of a single process (rank 0)
    state = load_checkpoint(out / "models" / "checkpoint_last.pt")
    assert state["trainer"] == {"epoch": 1, "iteration": 2}
    weights = load_checkpoint(out / "models" / "model.pt")
    assert not any(key.startswith("module.") for key in weights)
    MultiHeadNet("resnet10", _tasks()).load_state_dict(weights)  # strict: the plain network's keys


def test_ddp_validation_metrics_equal_single_process(ddp_training: tuple[Path, str], tiny_demo: Path) -> None:
    """Validation split over the 2 ranks and gathered == one process validating the saved weights on the whole set."""
    from monai.bundle import ConfigParser

    out, log = ddp_training
    logged = re.search(r"Epoch\[1\] Metrics -- (.*)", log)
    assert logged, "rank 0 logged no validation metrics"
    ddp_metrics = {k: float(v) for k, v in re.findall(r"(\w+): (\S+)", logged.group(1))}
    parser = ConfigParser()
    parser.read_config(ROOT / "configs" / "train.yaml")
    overrides = dict(zip(TINY_NETWORK[::2], TINY_NETWORK[1::2], strict=True))
    parser.update({"dataset_dir": str(tiny_demo), "output_dir": str(out / "single"), "cache": "none"})
    parser.update({"num_workers": 0, "backbone": overrides["--backbone"], "image_size": int(overrides["--image_size"])})
    parser.get_parsed_content("network").load_state_dict(load_checkpoint(out / "models" / "model.pt"))
    evaluator = parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    single = evaluator.state.metrics
    assert set(ddp_metrics) == {k for k, v in single.items() if isinstance(v, float)}
    for name, value in ddp_metrics.items():
        assert value == pytest.approx(single[name], abs=6e-5, nan_ok=True), name  # logged with 4 decimals
    best = load_checkpoint(out / "models" / "checkpoint_last.pt")["checkpointer"]["best_score"]
    assert -best == pytest.approx(single["prognosis_loss"], rel=1e-5)  # full precision for the selection metric


# ---- the real config's objects in 2 processes (this file run by torchrun) -------------------------------------------


@pytest.fixture(scope="module")
def ddp_worker(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp_worker")
    torchrun(str(Path(__file__).resolve()), str(out), str(tiny_demo))
    return out


def test_ddp_sampler_gives_ranks_disjoint_parts_with_the_same_mix(ddp_worker: Path) -> None:
    result = json.loads((ddp_worker / "sampler.json").read_text())
    size = result["dataset_size"]
    for epoch in result["proportional"]["epochs"]:  # the config's default policy: one shuffle split over ranks
        assert len(epoch[0]) == len(epoch[1]) == -(-size // WORLD_SIZE)
        first, second = set(epoch[0]), set(epoch[1])
        assert first | second == set(range(size))
        # disjoint, but for the DistributedSampler-style padding that evens out the ranks' shares
        assert len(first & second) == len(epoch[0]) + len(epoch[1]) - size < WORLD_SIZE
    # fixed_ratio: every rank's batch holds the same number of each dataset's samples, and an epoch sees every sample
    for epoch in result["fixed_ratio"]["epochs"]:
        assert len(epoch[0]) == len(epoch[1]) and set(epoch[0]) | set(epoch[1]) == set(range(size))
    for batch_mix in result["fixed_ratio"]["batch_mix"]:
        assert batch_mix[0] == batch_mix[1] and len(set(batch_mix[0])) == 2


@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_ddp_gradients_equal_single_process_gradients(case: str, ddp_worker: Path) -> None:
    from bundle.losses.multidataset import MultiDatasetLoss

    tasks = _tasks()
    network = MultiHeadNet("resnet10", tasks)
    network.load_state_dict(torch.load(ddp_worker / "initial.pt", weights_only=True))
    network.eval()
    images, labels = fixed_batch(tasks)
    reduction, _ = GRADIENT_CASES[case]
    MultiDatasetLoss(tasks, reduction=reduction)(network(images), labels).backward()
    ddp = torch.load(ddp_worker / f"gradients_{case}.pt", weights_only=True)
    assert set(ddp) == {name for name, _ in network.named_parameters()}
    for name, parameter in network.named_parameters():
        torch.testing.assert_close(ddp[name], parameter.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_ddp_step_with_a_head_that_has_no_sample_completes_with_zero_gradient(ddp_worker: Path) -> None:
    """No rank has a severity sample: 2 DDP steps finish (no hang, no unused-parameter error), severity grads are 0."""
    gradients = torch.load(ddp_worker / "gradients_no_severity.pt", weights_only=True)
    severity = {k: v for k, v in gradients.items() if k.startswith("heads.severity.")}
    assert severity and all(torch.count_nonzero(v) == 0 for v in severity.values())
    assert any(torch.count_nonzero(v) > 0 for k, v in gradients.items() if k.startswith("heads.prognosis."))


def test_ddp_learnable_loss_weights_get_the_rank_average_gradient(ddp_worker: Path) -> None:
    result = torch.load(ddp_worker / "loss_weights.pt", weights_only=True)
    local, averaged = result["local"], result["averaged"]
    torch.testing.assert_close(averaged[0], averaged[1])
    torch.testing.assert_close(averaged[0], (local[0] + local[1]) / 2)
    assert not torch.equal(local[0], local[1])  # the ranks' batches differ, so the check is not vacuous


def _worker(out: Path, dataset_dir: Path) -> None:
    """Run by each torchrun process: real config objects under DDP; rank 0 writes what the tests compare."""
    import torch.distributed as dist
    from monai.bundle import ConfigWorkflow

    from bundle.engine.distributed import GradientAverager
    from bundle.losses.multidataset import MultiDatasetLoss

    overrides = {"dataset_dir": str(dataset_dir), "output_dir": str(out / "runs"), "ckpt_dir": str(out / "models")}
    overrides |= {"backbone": "resnet10", "image_size": 64, "batch_size": GLOBAL_BATCH, "num_workers": 0}
    workflow = ConfigWorkflow(config_file=[ROOT / "configs" / f for f in ("train.yaml", "multi_gpu_train.yaml")])
    workflow.parser.update(overrides)
    workflow.initialize()  # the config's own initialize: process group (gloo), per-rank seed
    parser = workflow.parser
    rank = parser.get_parsed_content("rank")
    assert parser.get_parsed_content("world_size") == WORLD_SIZE == dist.get_world_size()

    def gathered(obj: object) -> list:
        objects: list = [None] * WORLD_SIZE
        dist.all_gather_object(objects, obj)
        return objects

    # gradients: the config's plain network inside the config's DDP wrapper, eval mode, fixed global batch
    network, ddp_network = parser.get_parsed_content("network"), parser.get_parsed_content("ddp_network")
    initial = {k: v.clone() for k, v in network.state_dict().items()}  # rank 0's, broadcast by DDP
    network.eval()
    tasks = TaskSet(parser.get_parsed_content("tasks"))
    images, labels = fixed_batch(tasks)
    cases = {name: (reduction, rows[rank]) for name, (reduction, rows) in GRADIENT_CASES.items()}
    cases["no_severity"] = ("task_mean", [2 * rank, 2 * rank + 1])
    gradients = {}
    for name, (reduction, rows) in cases.items():
        loss = MultiDatasetLoss(tasks, reduction=reduction)
        for _ in range(2):  # a second step fails in DDP if the first left a gradient bucket unfinished
            network.zero_grad(set_to_none=True)
            loss(ddp_network(images[rows]), labels[rows]).backward()
        gradients[name] = {k: p.grad.clone() for k, p in network.named_parameters()}

    # learnable loss weights outside the DDP module: their gradients averaged by GradientAverager
    rows = GRADIENT_CASES["equal_mix"][1][rank]
    weighted = MultiDatasetLoss(tasks, weighting="uncertainty")
    weighted(network(images[rows]).detach(), labels[rows]).backward()
    local = gathered(torch.cat([p.grad.flatten() for p in weighted.parameters()]))
    GradientAverager(weighted)()
    averaged = gathered(torch.cat([p.grad.flatten() for p in weighted.parameters()]))

    # sampler: the real config's object, then the same config with the fixed_ratio policy
    records = parser.get_parsed_content("train#data")
    sampler_results: dict = {"dataset_size": len(records)}
    for mode in ("proportional", "fixed_ratio"):
        parser["sampler_mode"] = mode
        sampler = parser.get_parsed_content("train#sampler")
        epochs, batch_mix = [], []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            indices = gathered(list(sampler))
            epochs.append(indices)
            for start in range(0, len(indices[0]), sampler.batch_size):
                batch = [part[start : start + sampler.batch_size] for part in indices]
                batch_mix.append([sorted(records[i]["dataset"] for i in part) for part in batch])
        sampler_results[mode] = {"epochs": epochs, "batch_mix": batch_mix}

    if rank == 0:
        (out / "sampler.json").write_text(json.dumps(sampler_results))
        torch.save(initial, out / "initial.pt")
        for name, grads in gradients.items():
            torch.save(grads, out / f"gradients_{name}.pt")
        torch.save({"local": local, "averaged": averaged}, out / "loss_weights.pt")
    workflow.finalize()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
