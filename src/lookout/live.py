"""Terminal output: the replay summary and the live view of `lookout run`.

Every value that comes from a record or a rule reaches the terminal through `lookout.safe_text`
(rich `Text`, never markup); the live view renders under a guard, so a render error is logged
once and the view goes on refreshing with what it can draw.
"""

from __future__ import annotations

import logging
import sys

import orjson

from lookout.pipeline import Stats
from lookout.safe_text import plain, text

log = logging.getLogger("lookout.view")


def print_summary(stats: Stats, out_dir: str, as_json: bool = False) -> None:
    d = stats.as_dict()
    if as_json:
        sys.stdout.write(orjson.dumps(d).decode() + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title="lookout replay", show_header=False, box=None, title_justify="left")
    t.add_row("lines", f"{d['lines']:,}")
    t.add_row("valid records", f"{d['records']:,}")
    reasons = ", ".join(f"{k}: {v:,}" for k, v in sorted(d["reasons"].items()) if k != "late")
    t.add_row("rejected", text(f"{d['rejected']:,}" + (f"  ({reasons})" if d["rejected"] else "")))
    t.add_row("late", f"{d['late']:,}")
    for name, n in d["results"].items():
        inc = d["incidents"].get(name, {}).get("firing")
        t.add_row(text(f"→ {name}"), f"{n:,} results" + (f", {inc:,} incidents" if inc else ""))
    for name, n in ((k, n) for k, n in d["refused"].items() if n):
        t.add_row(text(f"refused by {name}"), f"{n:,} documents (dead letters)")
    t.add_row("time", f"{d['seconds']:.2f} s")
    if d["events_per_second"]:
        t.add_row("throughput", f"{d['events_per_second']:,} events/s")
    t.add_row("output", text(f"{out_dir}/"))
    con.print(t)


def print_run_summary(stats: Stats, out_dir: str) -> None:
    d = stats.as_dict()
    res = ", ".join(f"{k}: {v}" for k, v in d["results"].items()) or "none yet"
    refused = "".join(f"; {n:,} documents refused by {k} (dead letters)" for k, n in d["refused"].items() if n)
    dups = f", {d['duplicates']:,} duplicates skipped (ids already counted)" if d["duplicates"] else ""
    sys.stderr.write(
        plain(
            f"lookout run stopped: {d['lines']:,} lines, {d['records']:,} valid, {d['rejected']:,} rejected, "
            f"{d['late']:,} late{dups}; results ({res}) in {out_dir}/{refused}"
            + (
                "; dead letters by reason: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(d["reasons"].items()))
                if d["reasons"]
                else ""
            )
        )
        + "\n"
    )


class LiveView:
    """A live terminal view: throughput, incidents (firing first, then recently resolved) and the
    latest per-minute figures. Record values (keys) are rendered as rich Text, never as markup."""

    def __init__(self, rs, pipeline, source_name: str) -> None:  # noqa: ANN001
        from collections import deque

        from rich.console import Console
        from rich.live import Live

        self.rs = rs
        self.pipeline = pipeline
        self.source_name = source_name
        self.firing: dict[str, dict] = {}  # incident id -> its latest line
        self.resolved: deque = deque(maxlen=8)
        self.latest: dict[str, dict[str, list]] = {}  # rule -> window start -> rows
        self.rates: deque = deque(maxlen=50)
        self.console = Console()
        self.errors = 0
        self._logged: set[str] = set()
        self.live = Live(self._guarded(), console=self.console, refresh_per_second=4, transient=False)
        self._last_refresh = 0.0

    def start(self) -> None:
        self.live.start()

    def stop(self) -> None:
        self.live.update(self._guarded())
        self.live.stop()

    def update(self, batches, incidents=()) -> None:  # noqa: ANN001
        try:
            self._take(batches, incidents)
        except Exception as e:  # noqa: BLE001 - the view must never stop the pipeline
            self._failed(e)

    def _take(self, batches, incidents) -> None:  # noqa: ANN001
        import orjson as _orjson

        for t in incidents:
            if t.status == "firing":
                self.firing[t.id] = t.doc
            else:
                self.firing.pop(t.id, None)
                if t.status == "resolved":
                    self.resolved.appendleft(t.doc)
        for rb in batches:
            mode = rb.rule.effective_emit
            if mode == "alert":
                continue  # shown as incidents
            for line in rb.lines:
                obj = _orjson.loads(line)
                per = self.latest.setdefault(rb.rule.name, {})
                per.setdefault(obj["window"]["start"], []).append(obj)
                for old in sorted(per)[:-1]:
                    del per[old]

    def refresh(self) -> None:
        import time as _time

        now = _time.monotonic()
        self.rates.append((now, self.pipeline.stats.lines))
        if now - self._last_refresh >= 0.25:
            self._last_refresh = now
            self.live.update(self._guarded())

    def _rate(self) -> float:
        if len(self.rates) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.rates[0], self.rates[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def _failed(self, e: Exception) -> None:
        """Count a view error; log each kind once (with its traceback), never raise."""
        self.errors += 1
        kind = f"{type(e).__name__}: {e}"[:200]
        if kind not in self._logged and len(self._logged) < 20:
            self._logged.add(kind)
            log.error("live view: could not draw (%s); showing the counters only, the pipeline goes on", kind, exc_info=e)

    def _fallback(self):  # noqa: ANN202
        """What is drawn when the full view fails: the counters, as plain text."""
        from rich.text import Text

        st = self.pipeline.stats
        return Text.assemble(
            ("lookout ", "bold"),
            text(self.source_name),
            f"  records {st.records:,}  rejected {st.rejected:,}  late {st.late:,}  (view errors: {self.errors:,}, see the log)",
        )

    def _guarded(self):  # noqa: ANN202
        """The view as a renderable that cannot fail: building or drawing errors fall back to the counters."""
        try:
            return _Guarded(self._render(), self)
        except Exception as e:  # noqa: BLE001
            self._failed(e)
            return self._fallback()

    def _render(self):  # noqa: ANN202
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        from lookout.output import iso_ms

        st = self.pipeline.stats
        eng = self.pipeline.engine
        head = Table.grid(padding=(0, 3))
        wm = iso_ms(eng.watermark)[11:19] if eng.watermark > 0 else "-"
        head.add_row(
            Text.assemble(("source", "bold"), " ", text(self.source_name)),
            Text.assemble((f"{self._rate():,.0f}", "bold"), " events/s"),
            f"records {st.records:,}",
            f"rejected {st.rejected:,}",
            f"late {st.late:,}",
            f"watermark {wm}",
        )
        incidents = Table(title="incidents", title_justify="left", expand=True)
        for c in ("status", "rule", "key", "since", "until", "windows", "peak"):
            incidents.add_column(c)
        firing = sorted(self.firing.values(), key=lambda d: d["start"], reverse=True)[:12]
        for d in [*firing, *list(self.resolved)[: max(0, 16 - len(firing))]]:
            key = ", ".join(plain(v) for v in d["key"].values())
            style = "bold red" if d["status"] == "firing" else "green"
            incidents.add_row(
                text(d["status"], style=style),
                text(d["rule"]),
                text(key),
                text(d["start"][11:19]),
                text(d["end"][11:19]),
                text(d["windows"]),
                text(d["peak"]),
            )
        parts = [head, incidents]
        for name, per in self.latest.items():
            if not per:
                continue
            rule = self.rs.by_name[name]
            start = max(per)
            rows = sorted(per[start], key=lambda o: -(o.get(rule.agg.output_name) or 0))[:8]
            t = Table(
                title=text(f"{name}: {rule.agg.output_name} per {', '.join(rule.group_by)}, window from {start[11:19]}"),
                title_justify="left",
                expand=True,
            )
            t.add_column(text(", ".join(rule.group_by)))
            t.add_column(text(rule.agg.output_name), justify="right")
            for o in rows:
                v = o.get(rule.agg.output_name)
                t.add_row(
                    text(", ".join(str(o.get(k, "")) for k in rule.group_by)), text(f"{v:.3f}" if isinstance(v, float) else v)
                )
            parts.append(t)
        return Panel(Group(*parts), title="lookout", border_style="cyan")


class _Guarded:
    """Draws the view, or, when drawing fails (in rich's refresh thread, where an exception would
    silently end the refreshing), the counters instead; the error goes to the view's log once."""

    def __init__(self, inner, view: LiveView) -> None:  # noqa: ANN001
        self.inner = inner
        self.view = view

    def __rich_console__(self, console, options):  # noqa: ANN001, ANN204
        from rich.segment import Segment

        try:
            lines = console.render_lines(self.inner, options, pad=False)
        except Exception as e:  # noqa: BLE001
            self.view._failed(e)
            lines = console.render_lines(self.view._fallback(), options, pad=False)
        for line in lines:
            yield from line
            yield Segment.line()
