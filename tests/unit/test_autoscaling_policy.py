"""The deadline-based autoscaling policy (serve_app/autoscaling.py) on its own; it scaling a
live LipSync deployment up and down is in tests/cluster/test_autoscaling.py."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from serve_app.autoscaling import DEADLINE_USE, DeadlinePolicy, DeadlineWindow


def context(uses: dict[str, float] | None, current: int = 2, target: int = 2):
    metrics = None if uses is None else {DEADLINE_USE: uses}
    return SimpleNamespace(aggregated_metrics=metrics, current_num_replicas=current, target_num_replicas=target)


def test_the_window_reports_the_90th_percentile_share_of_the_playout_time_then_resets():
    window = DeadlineWindow()
    for ms in [20] * 9 + [180]:  # one slow chunk in ten
        window.record(ms / 1000, 0.2)
    assert window.use() == pytest.approx(0.9)  # the slow one is the 90th percentile of ten
    assert window.use() == 0.0  # nothing since
    window.record(0.05, 0.0)  # an empty chunk has no deadline to meet
    assert window.use() == 0.0


@pytest.mark.parametrize("uses, replicas", [
    ({"a": 0.9, "b": 0.3}, 4),   # the worst replica at 0.9 of its deadline: 2 * 0.9 / 0.5 -> 4
    ({"a": 0.5, "b": 0.5}, 2),   # on target
    ({"a": 0.1, "b": 0.05}, 1),  # mostly idle: fewer (Serve clamps to min_replicas)
    ({"a": 0.0, "b": 0.0}, 0),
])
def test_replicas_are_sized_so_the_worst_replica_meets_the_target(uses, replicas):
    assert DeadlinePolicy(target_use=0.5)(context(uses))[0] == replicas


def test_without_reports_the_decision_stands_and_bad_targets_are_refused():
    assert DeadlinePolicy()(context(None, current=3, target=5))[0] == 5
    assert DeadlinePolicy()(context({}, current=3, target=5))[0] == 5
    with pytest.raises(ValueError, match="target_use"):
        DeadlinePolicy(target_use=0)
