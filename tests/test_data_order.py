"""The data order: deterministic from the seed, resumable at any step (a fresh loader fed the state_dict
yields exactly what the uninterrupted loader yields next, across epoch ends), independent of the rank
count, and refused when the checkpoint's data differs. In-memory rows and memory-mapped shards. ~5 s."""
import numpy as np
import pytest
import torch
from helpers import SPECIALS, random_views

from megajepa.data.examples import Example
from megajepa.data.loader import DistributedRowLoader, PackedEpochs
from megajepa.data.packing import LayoutConfig
from megajepa.data.shards import ShardRows, ShardWriter, write_manifest

SEQ = 64


def examples(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return [Example(random_views(rng, n_views=int(rng.integers(1, 4))), f"t:{i}", i) for i in range(n)]


def in_memory(seed=5, n=120):
    return PackedEpochs(examples(n), SPECIALS, LayoutConfig(), SEQ, seed, jepa_dropout=0.3)


def on_disk(tmp_path, seed=5, n=120):
    """The rows written once per directory, then opened afresh: rewriting files that an earlier reader's
    prefetch thread still maps would pull them from under it (SIGBUS)."""
    if not tmp_path.exists():
        rows = in_memory(0, n).rows(0)
        writer = ShardWriter(str(tmp_path), SEQ, rows_per_shard=7)
        for row in rows:
            writer.add(row)
        write_manifest(str(tmp_path), {"packing": {"seq_len": SEQ}, "shards": writer.close()})
    return ShardRows(str(tmp_path), seed)


@pytest.fixture(params=["memory", "shards"])
def source(request, tmp_path):
    return (lambda seed=5, n=120: in_memory(seed, n)) if request.param == "memory" else \
        (lambda seed=5, n=120: on_disk(tmp_path / f"s{seed}_{n}", seed, n))


def take(loader, n):
    return [loader.next_batch() for _ in range(n)]


def same(a, b):
    return all(x.keys() == y.keys() and all(x[k].equal(y[k]) for k in x) for x, y in zip(a, b, strict=True))


def test_same_seed_same_order_other_seed_other_order(source):
    a, b, c = (DistributedRowLoader(source(seed), 3) for seed in (5, 5, 6))
    first = take(a, 40)
    assert a.epoch >= 2  # several epoch ends crossed
    assert same(first, take(b, 40))
    assert not same(first, take(c, 40))


def test_resume_at_a_random_step_continues_the_uninterrupted_order(source):
    rng = np.random.default_rng(0)
    for _ in range(3):
        step = int(rng.integers(1, 60))
        straight = DistributedRowLoader(source(), 3)
        reference = take(straight, step + 15)
        interrupted = DistributedRowLoader(source(), 3)
        take(interrupted, step)
        resumed = DistributedRowLoader(source(), 3)  # a fresh process: new row source, new loader
        resumed.load_state_dict(interrupted.state_dict())
        assert same(take(resumed, 15), reference[step:])


def global_rows(loaders, steps):
    """input_ids of every rank's micro-batches, concatenated in rank order per step."""
    out = []
    for _ in range(steps):
        out.append(torch.cat([loader.next_batch()["input_ids"] for loader in loaders]))
    return torch.cat(out)


def test_rank_count_does_not_change_the_global_order(source):
    one = global_rows([DistributedRowLoader(source(), 4)], 30)
    two = global_rows([DistributedRowLoader(source(), 2, rank, 2) for rank in range(2)], 30)
    assert one.equal(two)


def test_every_step_reads_the_same_rows_on_any_ranks_x_accumulation_split(source):
    """1 rank x 4 micro-batches and 2 ranks x 2 read the same 8 rows per step, also at every epoch end
    (the tail is dropped a whole step at a time; per micro-batch, 1 rank would read 2 more rows whenever an
    epoch's row count is 2 or 3 mod 4)."""
    one = DistributedRowLoader(source(), 2, grad_accum=4)
    two = [DistributedRowLoader(source(), 2, rank, 2, grad_accum=2) for rank in range(2)]
    n = one.rows.num_rows(0)
    steps = 3 * n // 8  # about three epochs
    assert any(one.rows.num_rows(e) % 8 for e in range(4)), "the test needs an epoch with a partial step"
    for _ in range(steps):
        a = torch.cat([one.next_batch()["input_ids"] for _ in range(4)])
        b = torch.cat([torch.cat([loader.next_batch()["input_ids"] for loader in two]) for _ in range(2)])
        assert a.equal(b)
    assert one.epoch >= 2 and one.epoch == two[0].epoch


def test_resume_on_another_rank_count_continues_the_same_rows(source):
    straight = global_rows([DistributedRowLoader(source(), 6)], 20)  # 6 rows a step on one rank
    before = DistributedRowLoader(source(), 6)
    take(before, 3)  # 18 rows consumed
    state = before.state_dict()
    after = [DistributedRowLoader(source(), 2, rank, 2) for rank in range(2)]  # 4 rows a step on two
    for loader in after:
        loader.load_state_dict(state)
    n = before.rows.num_rows(0)
    resumed = global_rows(after, 5)
    # Same epoch, same permutation, from row 18 on (the epoch holds enough rows for 18 + 20).
    assert n >= 42
    assert resumed.equal(straight[18:38])


def test_resume_with_other_data_or_seed_is_refused(source):
    state = DistributedRowLoader(source(), 2).state_dict()
    with pytest.raises(ValueError, match="seed 5, this run 6"):
        DistributedRowLoader(source(seed=6), 2).load_state_dict(state)
    with pytest.raises(ValueError, match="different data, tokenizer or packing config"):
        DistributedRowLoader(source(n=90), 2).load_state_dict(state)
