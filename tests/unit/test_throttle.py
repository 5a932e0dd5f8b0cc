from gateway.auth import throttle
from gateway.auth.throttle import FailureThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_blocks_after_the_limit_within_the_window_until_the_oldest_failure_leaves_it():
    clock = Clock()
    limiter = FailureThrottle(3, 60, clock=clock)
    for _ in range(2):
        limiter.record_failure("10.0.0.1")
        clock.now += 10
    assert limiter.retry_after("10.0.0.1") is None
    limiter.record_failure("10.0.0.1")  # failures at 1000, 1010, 1020
    assert limiter.retry_after("10.0.0.1") == 40
    assert limiter.retry_after("10.0.0.2") is None
    clock.now = 1059.5
    assert limiter.retry_after("10.0.0.1") == 1
    clock.now = 1060
    assert limiter.retry_after("10.0.0.1") is None
    limiter.record_failure("10.0.0.1")  # 1010, 1020, 1060: three within the last minute again
    assert limiter.retry_after("10.0.0.1") == 10


def test_failures_spread_wider_than_the_window_never_block():
    clock = Clock()
    limiter = FailureThrottle(2, 5, clock=clock)
    for _ in range(10):
        limiter.record_failure("a")
        clock.now += 6
        assert limiter.retry_after("a") is None


def test_limit_zero_never_blocks():
    limiter = FailureThrottle(0, 60)
    for _ in range(100):
        limiter.record_failure("a")
    assert limiter.retry_after("a") is None


def test_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(throttle, "MAX_ADDRESSES", 3)
    clock = Clock()
    limiter = FailureThrottle(1, 10, clock=clock)
    limiter.record_failure("old")
    clock.now += 20
    for address in ("a", "b", "c", "d"):
        limiter.record_failure(address)
    assert limiter.retry_after("old") is None and limiter.retry_after("a") is None  # made room for c, then d
    assert all(limiter.retry_after(address) == 10 for address in ("b", "c", "d"))
