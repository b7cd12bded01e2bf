"""Every metric the Grafana dashboard (configs/grafana/digital-human.json) queries is exported
under that name by a live app, as Prometheus scrapes it from Ray's metrics agents."""
from __future__ import annotations

import asyncio
import re
import time

import httpx
import numpy as np
import pytest

from serve_app.client import SocketSession
from tests.integration.test_websocket import question, speak_into  # noqa: F401 (a fixture)
from tests.unit.test_ops_configs import dashboard_metrics

pytestmark = pytest.mark.integration

EXPORT_WAIT_S = 90  # Ray's agents report every few seconds; a slow day takes longer


async def scraped_names() -> set[str]:
    """Metric names on every live node's metrics endpoint (Ray adds the `ray_` prefix)."""
    import ray

    names: set[str] = set()
    async with httpx.AsyncClient(timeout=10) as http:
        for node in ray.nodes():
            if node["Alive"] and node.get("MetricsExportPort"):
                text = (await http.get(f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics")).text
                names |= set(re.findall(r"^([a-z_]+?)(?:_bucket|_sum|_count)?[{ ]", text, re.M))
    return names


async def test_every_metric_the_dashboard_reads_is_exported(app_url, question):
    wanted = dashboard_metrics()
    async with SocketSession(app_url, face="visemes") as session:
        await session.start()
        # A spoken question (its pause starts a speculative reply) and a reply played out.
        await speak_into(session, np.concatenate([question, np.zeros(4000, np.int16), question]), silence_s=1.0)
        await session.wait_event(lambda e: e["type"] == "turn_end", 60)
        deadline = time.monotonic() + EXPORT_WAIT_S
        while not wanted <= (found := await scraped_names()) and time.monotonic() < deadline:
            await asyncio.sleep(2)  # polling the exporter, which publishes on its own period
    assert wanted <= found, f"not exported: {sorted(wanted - found)}"
