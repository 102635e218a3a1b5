"""Wiring the live dashboard into `lookout run`: a feed the run loop updates, and its routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Mount, Router

from lookout.dashboard.app import SecurityHeaders, dashboard_routes
from lookout.dashboard.data import DashboardData
from lookout.dashboard.feed import DashboardFeed

if TYPE_CHECKING:
    from lookout.runner import Runner


def dashboard_mount(data: DashboardData) -> Mount:
    """The dashboard as one route to add to another Starlette app (beside /metrics, /healthz):
    it catches what the app's own routes do not, and carries its own security headers."""
    return Mount("/", app=SecurityHeaders(Router(routes=dashboard_routes(data))))


def attach_feed(runner: Runner) -> DashboardFeed:
    """A feed for this run, set on the runner (which then updates it once per step)."""
    feed = DashboardFeed(
        runner.rs,
        runner.opts.out_dir,
        runner.opts.state_dir / "store",
        source=runner.source.name,
        sinks=[s.name for s in runner.sinks.sinks],
    )
    feed.prefill()
    runner.feed = feed
    return feed


def live_routes(runner: Runner) -> list[BaseRoute]:
    """What `create_app(..., routes=live_routes(runner))` needs to serve the dashboard of a run."""
    return [dashboard_mount(attach_feed(runner))]
