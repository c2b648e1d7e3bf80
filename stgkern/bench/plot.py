"""``--plot``: a roofline picture of a run (needs matplotlib, from the ``bench`` extra)."""
from __future__ import annotations


def require_matplotlib():
    """Import matplotlib (Agg backend) or raise an ImportError naming the extra to install."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib, which is not installed: pip install 'stgkern[bench]' "
                          "(or pip install matplotlib); the JSON (--json) holds every figure meanwhile") from None
    return plt


def points(record) -> list[dict]:
    """One point per op, workload and implementation that has a FLOP count and a time."""
    return [{"label": f"{r['op']} {r['variant']} / {r['workload']}", "impl": r["impl"],
             "x": r["intensity_flop_per_byte"], "y": r["GFLOP_s"]}
            for r in record["results"] if r.get("GFLOP_s") and r.get("intensity_flop_per_byte")]


def roofline(record, path) -> str:
    """Write the roofline of ``record`` to ``path``: arithmetic intensity (FLOP per floor byte)
    against achieved GFLOP/s, the measured copy bandwidth as the memory roof, stgkern as filled
    markers and peers as open ones, one colour per op and workload."""
    plt = require_matplotlib()
    import numpy as np
    pts = points(record)
    bw = record["copy"]["GB_s"]
    fig, ax = plt.subplots(figsize=(9, 6))
    xs = [p["x"] for p in pts] or [0.1, 10]
    x = np.logspace(np.log10(min(xs) / 3), np.log10(max(xs) * 3), 50)
    ax.plot(x, bw * x, "k--", lw=1, label=f"measured copy bandwidth {bw:.1f} GB/s")
    labels = sorted({p["label"] for p in pts})
    import matplotlib
    colours = matplotlib.colormaps["tab20"]
    markers = {}
    for p in pts:
        c = colours(labels.index(p["label"]) % 20)
        if p["impl"] == "stgkern":
            ax.scatter(p["x"], p["y"], color=c, marker="o", s=50, label=p["label"], zorder=3)
        else:
            m = markers.setdefault(p["impl"], "sDv^<>ph"[len(markers) % 8])
            ax.scatter(p["x"], p["y"], facecolors="none", edgecolors=c, marker=m, s=50, zorder=2)
    for impl, m in markers.items():
        ax.scatter([], [], facecolors="none", edgecolors="grey", marker=m, label=f"peer: {impl}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / floor byte)")
    ax.set_ylabel("achieved GFLOP/s")
    m = record["meta"]
    ax.set_title(f"stgkern {m['stgkern']} on {m.get('gpu_model') or m['cpu_model']} ({record['size']})", fontsize=10)
    # outside the axes, to the right: a legend inside hid points wherever it sat
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return str(path)
