"""Terminal output: the replay summary and the live view of `lookout run`."""

from __future__ import annotations

import sys

import orjson

from lookout.pipeline import Stats


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
    t.add_row("rejected", f"{d['rejected']:,}" + (f"  ({', '.join(f'{k}: {v:,}' for k, v in sorted(d['reasons'].items()) if k != 'late')})" if d["rejected"] else ""))
    t.add_row("late", f"{d['late']:,}")
    for name, n in d["results"].items():
        inc = d["incidents"].get(name, {}).get("firing")
        t.add_row(f"→ {name}", f"{n:,} results" + (f", {inc:,} incidents" if inc else ""))
    t.add_row("time", f"{d['seconds']:.2f} s")
    if d["events_per_second"]:
        t.add_row("throughput", f"{d['events_per_second']:,} events/s")
    t.add_row("output", f"{out_dir}/")
    con.print(t)


def print_run_summary(stats: Stats, out_dir: str) -> None:
    d = stats.as_dict()
    res = ", ".join(f"{k}: {v}" for k, v in d["results"].items()) or "none yet"
    sys.stderr.write(
        f"lookout run stopped: {d['lines']:,} lines, {d['records']:,} valid, {d['rejected']:,} rejected, "
        f"{d['late']:,} late; results ({res}) in {out_dir}/"
        + ("; dead letters by reason: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(d["reasons"].items())) if d["reasons"] else "")
        + "\n"
    )


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7f)}


def plain(v: object) -> str:
    """A record value for the terminal: control characters escaped (no terminal escapes get through)."""
    return str(v).translate(_CONTROL)


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
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self._last_refresh = 0.0

    def start(self) -> None:
        self.live.start()

    def stop(self) -> None:
        self.live.update(self._render())
        self.live.stop()

    def update(self, batches, incidents=()) -> None:  # noqa: ANN001
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
            self.live.update(self._render())

    def _rate(self) -> float:
        if len(self.rates) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.rates[0], self.rates[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

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
            f"[bold]source[/] {self.source_name}", f"[bold]{self._rate():,.0f}[/] events/s",
            f"records {st.records:,}", f"rejected {st.rejected:,}", f"late {st.late:,}", f"watermark {wm}",
        )
        incidents = Table(title="incidents", title_justify="left", expand=True)
        for c in ("status", "rule", "key", "since", "until", "windows", "peak"):
            incidents.add_column(c)
        firing = sorted(self.firing.values(), key=lambda d: d["start"], reverse=True)[:12]
        for d in [*firing, *list(self.resolved)[: max(0, 16 - len(firing))]]:
            key = ", ".join(plain(v) for v in d["key"].values())
            style = "bold red" if d["status"] == "firing" else "green"
            incidents.add_row(Text(d["status"], style=style), Text(d["rule"]), Text(key), Text(d["start"][11:19]),
                              Text(d["end"][11:19]), Text(str(d["windows"])), Text(str(d["peak"])))
        parts = [head, incidents]
        for name, per in self.latest.items():
            if not per:
                continue
            rule = self.rs.by_name[name]
            start = max(per)
            rows = sorted(per[start], key=lambda o: -(o.get(rule.agg.output_name) or 0))[:8]
            t = Table(title=f"{name}: {rule.agg.output_name} per {', '.join(rule.group_by)}, window from {start[11:19]}",
                      title_justify="left", expand=True)
            t.add_column(", ".join(rule.group_by))
            t.add_column(rule.agg.output_name, justify="right")
            for o in rows:
                v = o.get(rule.agg.output_name)
                t.add_row(", ".join(str(o.get(k, "")) for k in rule.group_by), f"{v:.3f}" if isinstance(v, float) else str(v))
            parts.append(t)
        return Panel(Group(*parts), title="lookout", border_style="cyan")
