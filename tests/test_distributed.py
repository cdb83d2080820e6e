"""Rank-aware data and the launch decisions, in one process: the batch sampler's shares, evaluation shards, which
launcher started us, the backend, and per-rank RNG states in checkpoints."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from ignite_app import distributed
from ignite_app.data import EpochShuffleBatchSampler, TensorSplit, check_global_batch, shard
from ignite_app.errors import UserError
from ignite_app.state import RNGStates


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 300), batch_size=st.integers(1, 64), world=st.integers(1, 5), seed=st.integers(0, 2**32 - 1),
       epoch=st.integers(1, 50), start=st.integers(0, 20))
def test_ranks_together_take_exactly_the_one_process_batches(size, batch_size, world, seed, epoch, start):
    last = size % batch_size or batch_size
    if world > 1 and min(batch_size, last) < world:
        with pytest.raises(UserError, match="global batch"):
            check_global_batch(size, batch_size, world)
        return
    check_global_batch(size, batch_size, world)

    def batches(num_replicas: int, rank: int) -> list[list[int]]:
        sampler = EpochShuffleBatchSampler(size, batch_size, seed, num_replicas, rank)
        sampler.set_epoch(epoch)
        sampler.start_batch = start
        assert len(sampler) == -(-size // batch_size)  # the same count on every rank
        return list(sampler)

    one = batches(1, 0)
    shares = [batches(world, r) for r in range(world)]
    assert all(len(s) == len(one) for s in shares)
    for i, batch in enumerate(one):
        parts = [s[i] for s in shares]
        assert all(parts)  # every rank gets samples of every batch
        assert sorted(x for p in parts for x in p) == sorted(batch)  # nothing lost, nothing twice
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_one_process_batches_are_those_of_before():
    sampler = EpochShuffleBatchSampler(100, 10, seed=3)
    sampler.set_epoch(2)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(3 * 1_000_003 + 2))
    assert list(sampler) == [order[i : i + 10].tolist() for i in range(0, 100, 10)]


@pytest.mark.parametrize("n, world", [(359, 2), (144, 3), (7, 7), (10, 4)])
def test_evaluation_shards_cover_the_split_once(n, world):
    split = TensorSplit(torch.zeros(n, 1, 28, 28, dtype=torch.uint8), torch.arange(n))
    labels = torch.cat([shard(split, r, world).labels for r in range(world)])
    assert torch.equal(labels, torch.arange(n))  # no sample padded or repeated


def test_which_launcher_started_this_process():
    assert distributed.launched_world_size({}) == 1
    assert distributed.launched_world_size({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == 4
    srun = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "8", "SLURM_PROCID": "3"}
    assert distributed.launched_world_size(srun) == 8 and distributed.process_rank(srun) == 3
    # a batch script's own shell is no task of srun: one process, whatever --ntasks the job has
    assert distributed.launched_world_size({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8"}) == 1


def test_kubeflow_environment_without_local_rank_gets_local_rank_zero():
    env = {"RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "trainer-master-0", "MASTER_PORT": "23456"}
    assert "LOCAL_RANK" in distributed.complete_env(env) and env["LOCAL_RANK"] == "0"
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    assert distributed.complete_env(torchrun) is None and torchrun["LOCAL_RANK"] == "1"


def test_backend_is_nccl_on_gpus_and_gloo_on_the_cpu():
    assert distributed.resolve_backend("auto", "cpu") == "gloo"
    assert distributed.resolve_backend("auto", "auto") == ("nccl" if torch.cuda.is_available() else "gloo")
    assert distributed.resolve_backend("gloo", "cuda") == "gloo"


def test_nproc_per_node_under_a_launcher_is_a_user_error(monkeypatch):
    from ignite_app.cli import parse

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="drop --nproc-per-node"):
        distributed.launch(parse(["--nproc-per-node", "2"]), lambda rank: None)


def test_rng_states_of_several_ranks_each_restore_their_own():
    rng = RNGStates()
    torch.manual_seed(1)
    first = rng.local_state_dict()
    torch.manual_seed(2)
    second = rng.local_state_dict()
    rng.load_state_dict({"world_size": 2, "ranks": [first, second]})  # this process is rank 0
    assert torch.equal(torch.get_rng_state(), first["torch"]) and rng.saved_world_size == 2
    rng.load_state_dict(second)  # a one-process checkpoint
    assert torch.equal(torch.get_rng_state(), second["torch"]) and rng.saved_world_size == 1
    assert rng.state_dict().keys() == first.keys()  # one process writes the format it always wrote


def test_share_weighted_losses_average_to_the_whole_batch_gradient():
    """What DDP computes with ShareWeightedLoss (the mean over ranks of each share's gradient) is the one-process
    gradient of the global batch, for shares of unequal size (a global batch of 5 over 2 ranks: 3 and 2)."""
    from ignite.engine import Engine

    from ignite_app.data import EpochShuffleBatchSampler
    from ignite_app.distributed import ShareWeightedLoss

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    whole = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), model.weight)[0]
    sampler = EpochShuffleBatchSampler(size=12, batch_size=5, seed=0, num_replicas=2)  # batches of 5, 5 and 2
    engine = Engine(lambda e, b: None)
    engine.state.iteration = 2  # the second global batch: 5 samples
    loss = ShareWeightedLoss(torch.nn.CrossEntropyLoss(), world_size=2)
    loss.weigh(engine, sampler)
    shares = [torch.autograd.grad(loss(model(x[s]), y[s]), model.weight)[0] for s in (slice(0, 3), slice(3, 5))]
    assert torch.allclose((shares[0] + shares[1]) / 2, whole, atol=1e-6)
    engine.state.iteration = 3  # the epoch's last global batch holds 2
    loss.weigh(engine, sampler)
    assert loss.global_len == 2


def test_a_batch_smaller_than_the_process_count_says_so():
    with pytest.raises(UserError, match="--batch-size 1 is the global batch, split across 2 processes: each needs at "
                                        "least one sample of it. Use a --batch-size of at least 2."):
        check_global_batch(1294, 1, 2)
