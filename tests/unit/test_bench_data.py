"""The benchmark's generated audiences: every identity once, in a scrambled order, reproducibly."""

import pytest

from bench import data


@pytest.mark.parametrize("count", [1, 2, 97, 7919 * 3, 10_000])
def test_rows_are_a_permutation_of_the_numbers(count):
    numbers = [int(line.split("@")[0].split(".")[1]) for line in data.rows(count, seed=5, start=100)]
    assert sorted(numbers) == list(range(100, 100 + count))
    assert list(data.rows(count, seed=5, start=100)) == list(data.rows(count, seed=5, start=100))


def test_order_is_not_sorted_and_depends_on_the_seed():
    first = list(data.rows(1000, seed=1))
    assert first != sorted(first, key=lambda line: int(line.split("@")[0].split(".")[1]))
    assert first != list(data.rows(1000, seed=2))


def test_batches_carry_their_own_header_and_number():
    lines = list(data.rows(25))
    batches = data.batches(lines, 10)
    assert [number for number, _ in batches] == [1, 2, 3]
    assert all(body.decode().startswith(data.HEADER) for _, body in batches)
    assert "".join(body.decode().removeprefix(data.HEADER) for _, body in batches) == "".join(lines)
