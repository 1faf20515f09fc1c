from bridge.domain.ratelimit import RateLimiter


def test_rolling_window_counts_and_forgets():
    now = [1000.0]
    rl = RateLimiter(window_s=10, clock=lambda: now[0])
    assert rl.hit("k", 3) == (True, 2)
    assert rl.hit("k", 3) == (True, 1)
    assert rl.hit("k", 3) == (True, 0)
    assert rl.hit("k", 3) == (False, 0)
    assert rl.hit("other", 3) == (True, 2)  # per key
    now[0] += 11
    assert rl.hit("k", 3) == (True, 2)
