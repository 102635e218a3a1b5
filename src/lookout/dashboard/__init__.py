"""The web dashboard (issue 11): live for `lookout run`, from files for `lookout serve`.

- `DashboardFeed` (feed.py): the run loop's per-second summaries, thread-safe and bounded;
- `StoredRun` (stored.py): the same view of a stopped run, from its store and output files;
- `dashboard_routes` / `dashboard_app` (app.py): pages, static files, JSON API, event stream;
- `dashboard_mount`, `live_routes` (live.py): mounting it into `lookout run`'s HTTP app.
"""

from lookout.dashboard.app import dashboard_app, dashboard_routes
from lookout.dashboard.data import DashboardData
from lookout.dashboard.feed import DashboardFeed
from lookout.dashboard.stored import StoredRun

__all__ = ["DashboardData", "DashboardFeed", "StoredRun", "dashboard_app", "dashboard_routes"]
