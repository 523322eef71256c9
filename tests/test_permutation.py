"""The shards' per-epoch shuffle: a bijection of range(n) for any n, seeded, evaluated per slice."""
import numpy as np
import pytest

from megajepa.data.permutation import FeistelShuffle


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 17, 1000, 4097, 123457])
def test_every_row_exactly_once(n):
    order = FeistelShuffle(n, [7, 0]).take(np.arange(n))
    assert np.array_equal(np.sort(order), np.arange(n))


def test_slices_agree_with_the_whole_epoch():
    shuffle = FeistelShuffle(10007, [3, 2])
    whole = shuffle.take(np.arange(10007))
    assert np.array_equal(shuffle[100:164], whole[100:164])
    assert np.array_equal(shuffle[10000:10007], whole[10000:])


def test_deterministic_and_different_per_seed_and_epoch():
    n = 50000
    a = FeistelShuffle(n, [1, 0]).take(np.arange(n))
    assert np.array_equal(a, FeistelShuffle(n, [1, 0]).take(np.arange(n)))
    for other in ([1, 1], [2, 0]):
        b = FeistelShuffle(n, other).take(np.arange(n))
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.02 and (a == b).mean() < 0.01
    # shuffled, not a near-identity: no correlation with the position, few fixed points
    assert abs(np.corrcoef(a, np.arange(n))[0, 1]) < 0.02 and (a == np.arange(n)).sum() < 20


def test_huge_corpus_needs_no_per_row_memory():
    rows = FeistelShuffle(10**12, [0, 0])[5 * 10**11:5 * 10**11 + 8]
    assert len(set(rows.tolist())) == 8 and all(0 <= r < 10**12 for r in rows)


def test_out_of_range_positions_are_refused():
    with pytest.raises(IndexError):
        FeistelShuffle(10, [0, 0]).take([10])
    with pytest.raises(ValueError):
        FeistelShuffle(0, [0, 0])
