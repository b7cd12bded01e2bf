"""Replica autoscaling on a deadline: Serve's custom policy for the LipSync deployment.

Ongoing requests are the wrong signal for a media pipeline: a lip-sync chunk of 5 frames must
be rendered within the 200 ms it plays for, and a replica that batches 16 sessions' chunks has
16 requests in flight while comfortably on time. So each LipSync replica reports its
*deadline use* (`record_autoscaling_stats`): how much of each chunk's playout time its render
took, from the request's arrival to its answer (batch wait and queueing included), as the
90th percentile over the last report period. `DeadlinePolicy` sizes the deployment so the
worst replica's use comes down to `target_use`, the way Serve's default policy sizes it for
`target_ongoing_requests`; Serve applies min/max_replicas and the up/downscale delays.

    autoscaling_config:
      min_replicas: 1
      max_replicas: 8
      upscale_delay_s: 5
      downscale_delay_s: 60
      policy: {policy_function: "serve_app.autoscaling:DeadlinePolicy", policy_kwargs: {target_use: 0.5}}
"""
from __future__ import annotations

import math
from typing import Any

DEADLINE_USE = "deadline_use"  # the metric's name, as replicas report it


class DeadlineWindow:
    """Render times as a share of the chunk's playout time, since the last `use()`."""

    def __init__(self) -> None:
        self._uses: list[float] = []

    def record(self, elapsed_s: float, budget_s: float) -> None:
        if budget_s > 0:
            self._uses.append(elapsed_s / budget_s)

    def use(self) -> float:
        """The 90th percentile since the last call (0 when nothing was rendered), and reset."""
        uses, self._uses = sorted(self._uses), []
        if not uses:
            return 0.0
        return round(uses[min(len(uses) - 1, int(0.9 * len(uses)))], 4)


class DeadlinePolicy:
    """Serve custom autoscaling policy (a class: Serve builds it once with `policy_kwargs`)."""

    def __init__(self, target_use: float = 0.5) -> None:
        if not 0 < target_use <= 1:
            raise ValueError(f"target_use must be in (0, 1], not {target_use}")
        self.target_use = target_use

    def __call__(self, ctx: Any) -> tuple[int, dict]:
        uses = (ctx.aggregated_metrics or {}).get(DEADLINE_USE) or {}
        if not uses:  # no report yet (a replica starting): keep what was decided
            return ctx.target_num_replicas, {}
        worst = max(uses.values())
        replicas = max(1, ctx.current_num_replicas)
        return math.ceil(replicas * worst / self.target_use), {"worst_use": worst}
