from actors.rate_limit import TokenBucket


def test_burst_then_the_rate():
    now = [0.0]
    bucket = TokenBucket(per_s=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == 0.5  # the next token in half a second
    now[0] = 0.5
    assert bucket.take() == 0 and bucket.take() > 0
    now[0] = 100.0  # idle for long: back to the burst, no more
    assert [bucket.take() for _ in range(4)].count(0) == 3
