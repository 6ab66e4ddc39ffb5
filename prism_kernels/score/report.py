"""Progress bars and printed summaries (rich)."""

from __future__ import annotations


class Progress:
    """Rich progress bars (e.g. plan and sketch) with a count, a rate in ``unit``/s and an ETA; a no-op when
    disabled."""

    def __init__(self, enabled: bool, console=None, unit: str = "rows"):
        self.enabled = enabled
        self.unit = unit
        self._p = None
        self._tasks: dict[str, int] = {}
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TaskProgressColumn,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)

            self._p = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                   TextColumn(unit), TaskProgressColumn(),
                                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                   TimeRemainingColumn(), console=console, transient=False)

    def __enter__(self):
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.stop()

    def add(self, name: str, description: str, total: int | None, completed: int = 0) -> None:
        """A bar; ``completed`` counts rows already done (found on resume)."""
        if self._p is not None:
            self._tasks[name] = self._p.add_task(description, total=total, completed=completed, rate="")

    def advance(self, name: str, n: int) -> None:
        if self._p is not None and name in self._tasks:
            tid = self._tasks[name]
            self._p.advance(tid, n)
            speed = self._p.tasks[[t.id for t in self._p.tasks].index(tid)].speed
            self._p.update(tid, rate=f"{speed:,.1f} {self.unit}/s" if speed else "")

    def callback(self, name: str):
        """A ``progress(done, total)`` callback (the generators' form) that moves bar ``name`` to ``done``."""
        seen = [0]

        def update(done: int, total: int) -> None:
            if done > seen[0]:
                self.advance(name, done - seen[0])
                seen[0] = done
        return update


def print_summary(summary: dict, run_dir, console=None) -> None:
    """The run's result as a rich table: rows, skipped, truncated, G-Vendi q = 1, 2, inf with the interval,
    time and rate."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    g = summary["gvendi"]
    ci = (summary.get("ci95") or {}).get("q1")
    table = Table(title=f"G-Vendi of {escape(str(run_dir))}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("rows", f"{summary['rows']:,} ({summary['n']:,} scored)")
    skipped = summary.get("skipped") or {}
    table.add_row("skipped", ", ".join(f"{k}: {v:,}" for k, v in skipped.items()) or "0")
    table.add_row("truncated", f"{summary['truncated']:,}")
    note = escape(str(summary.get("ci95_note")))
    interval = f"  95% CI [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"  (no interval: {note})"
    table.add_row("G-Vendi q=1", f"{g['q1']:.3f}{interval}")
    table.add_row("G-Vendi q=2", f"{g['q2']:.3f}")
    table.add_row("G-Vendi q=inf", f"{g['inf']:.3f}")
    table.add_row("time", f"{summary['seconds']:.1f} s ({summary['samples_per_s']:.1f} samples/s)")
    console.print(table)


def print_compare(rows: list[dict], console=None) -> None:
    """Finished runs ranked by G-Vendi q = 1 (with their intervals)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    table = Table(title="Runs ranked by G-Vendi (q=1)", title_justify="left")
    for col in ("#", "run", "n", "q=1", "95% CI", "q=2", "q=inf", "model", "k"):
        table.add_column(col, justify="right" if col not in ("run", "model") else "left")
    for i, r in enumerate(rows, 1):
        s = r["summary"]
        ci = (s.get("ci95") or {}).get("q1")
        ident = s.get("config", {})
        model = ident.get("model", {})
        table.add_row(str(i), escape(str(r["run"])), f"{s['n']:,}", f"{s['gvendi']['q1']:.3f}",
                      f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-", f"{s['gvendi']['q2']:.3f}",
                      f"{s['gvendi']['inf']:.3f}", str(model.get("name", model) if isinstance(model, dict) else model),
                      str(ident.get("k", "")))
    console.print(table)

