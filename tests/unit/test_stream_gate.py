"""The bounds on long-lived requests (serve_app/limits.py StreamGate), without a server."""
from __future__ import annotations

from serve_app.limits import Bound, StreamGate


def test_each_kind_is_bounded_in_total_and_per_client_and_places_come_back():
    gate = StreamGate({"upload": Bound(total=3, per_client=2), "mjpeg": Bound(total=1, per_client=1)})
    assert gate.enter("upload", "a") is None and gate.enter("upload", "a") is None
    status, why = gate.enter("upload", "a")
    assert status == 429 and "already has 2 upload" in why
    assert gate.enter("upload", "b") is None  # another client still gets in
    status, why = gate.enter("upload", "c")
    assert status == 503 and "the most it allows at once" in why
    assert gate.enter("mjpeg", "c") is None  # kinds are counted apart
    assert gate.held() == {"upload": 3, "mjpeg": 1}
    gate.leave("upload", "a")
    assert gate.enter("upload", "c") is None  # the place came back
    assert gate.held() == {"upload": 3, "mjpeg": 1}
