"""How a CPU reads memory (secbook.memaccess): the four access patterns run in turn and check each other."""
import pytest

from secbook.memaccess import PATTERNS, access_patterns


def test_access_patterns_shape_and_bad_input():
    out = access_patterns(mib=1, rounds=2)
    assert list(out) == list(PATTERNS)
    assert all(len(v) == 2 and all(s > 0 for s in v) for v in out.values())
    with pytest.raises(ValueError):
        access_patterns(mib=0)
    with pytest.raises(ValueError):
        access_patterns(rounds=0)


def test_random_order_is_slower_than_in_order_when_the_array_exceeds_the_caches():
    """The prefetcher's effect, with a wide margin: over 64 MiB the random gather is slower than the same gather
    in order in the median round (the sizes differ by a factor the machine's noise does not reach)."""
    import statistics

    out = access_patterns(mib=64, rounds=3)
    assert statistics.median(out[PATTERNS[3]]) > statistics.median(out[PATTERNS[2]])
