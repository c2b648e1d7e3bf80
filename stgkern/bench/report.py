"""The end-of-run table: rich when installed, plain text otherwise."""
from __future__ import annotations

import sys

COLUMNS = ("op", "variant", "workload", "impl", "median ms", "spread", "GFLOP/s", "GB/s", "% copy",
           "stgkern x", "status")


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def rows(record) -> list[tuple]:
    """One tuple of strings per result, in ``COLUMNS`` order.  ``stgkern x`` is
    the peer's time over stgkern's (above 1: stgkern is faster)."""
    out = []
    for r in record["results"]:
        status = r["status"] if not r.get("reason") else f"{r['status']}: {r['reason']}"
        out.append((r["op"], r["variant"], r["workload"], r["impl"],
                    _fmt(None if r.get("median_s") is None else 1e3 * r["median_s"], ".3g"),
                    "-" if r.get("spread") is None else f"{100 * r['spread']:.0f}%",
                    _fmt(r.get("GFLOP_s"), ".3g"), _fmt(r.get("GB_s"), ".3g"), _fmt(r.get("pct_of_copy"), ".0f"),
                    _fmt(r.get("stgkern_speedup"), ".2f"), status))
    return out


def header(record) -> list[str]:
    m, c = record["meta"], record["copy"]
    lines = [f"stgkern {m['stgkern']} ({m.get('git_commit') or 'no git'}) on {m['cpu_model']}"
             + (f" / {m['gpu_model']}" if m.get("gpu_model") else "")
             + f", {m['numba_threads']} Numba threads, device {record['device']}, size {record['size']}",
             f"copy bandwidth {c['GB_s']:.1f} GB/s ({c['method']})",
             f"FLOPs: {record['flop_convention']}",
             ("GB/s = byte floor / median time; % copy = that over the copy bandwidth; "
              "stgkern x = peer time / stgkern time")]
    load = [x[0] for x in (m.get("loadavg"), m.get("loadavg_after")) if x]
    if load and m.get("cpu_count") and max(load) > m["cpu_count"]:
        lines.append(f"warning: load average {max(load):.1f} on {m['cpu_count']} CPUs during the run: the machine "
                     "was oversubscribed and the timings (ratios included) are noisy")
    if record.get("not_available"):
        lines.append("not available in this install: " + ", ".join(record["not_available"]))
    return lines


#: Default width of the printed table; ``stgkern bench --wide`` lifts it.
WIDTH = 120


def _clip(text, n):
    return text if len(text) <= n else text[:max(n - 1, 0)] + "…"


def plain(record, width=WIDTH) -> str:
    """The table as plain text (fixed-width columns) within ``width`` characters (None: no
    limit): the status column takes what is left (at least 16 characters), then the
    variant, workload, op and peer names are shortened (to 8 at least, ending in …);
    header lines are wrapped."""
    import textwrap
    body = rows(record)
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(COLUMNS)]
    if width is not None:
        sep = 2 * (len(COLUMNS) - 1)
        fixed = sum(widths[:-1]) + sep
        widths[-1] = max(16, min(widths[-1], width - fixed))
        over = sum(widths) + sep - width
        for i in (1, 2, 0, 3):                           # variant, workload, op, impl: down to 8 characters
            if over <= 0:
                break
            cut = max(0, min(over, widths[i] - 8))
            widths[i] -= cut
            over -= cut
        body = [tuple(_clip(c, widths[i]) for i, c in enumerate(r)) for r in body]
    right = set(range(4, 10))

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    head = header(record)
    if width is not None:
        head = [w for h in head for w in textwrap.wrap(h, width, subsequent_indent="  ")]
    out = head + ["", line(COLUMNS).rstrip(), line(["-" * w for w in widths])]
    prev = None
    for r in body:
        if prev is not None and r[:3] != prev:
            out.append("")
        prev = r[:3]
        out.append(line(r).rstrip())
    if "wall_s" in record:
        out.append(f"\nwall time {record['wall_s']:.1f} s")
    return "\n".join(out)


def print_table(record, stream=None, use_rich=None, width=WIDTH) -> None:
    """Print the table within ``width`` characters (None: as wide as it needs): with rich when
    installed (and ``use_rich`` is not False), else plain text."""
    stream = stream if stream is not None else sys.stdout
    if use_rich is not False:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            if use_rich:
                raise RuntimeError("the rich table needs rich: pip install 'stgkern[bench]'") from None
        else:
            con = Console(file=stream, width=width if width is not None else 10_000)
            for h in header(record):
                con.print(h, highlight=False)
            t = Table(*COLUMNS)
            for r in rows(record):
                t.add_row(*r)
            con.print(t)
            return
    print(plain(record, width), file=stream)
