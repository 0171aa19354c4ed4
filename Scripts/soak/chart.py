"""The soak's chart: the hub's RSS, open descriptors and CPU over the run, with the load."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def render(rows, meta, path):
    """`rows`: the CSV rows (dicts of floats, t_s in seconds from the load's start); `meta`:
    warm-up end, load end, the RSS windows compared, the fd baseline, the verdicts."""
    t = [r["t_s"] / 60 for r in rows]
    fig, ax = plt.subplots(4, 1, figsize=(11, 11), sharex=True, constrained_layout=True)
    fig.suptitle(meta["title"], fontsize=11)

    def phases(a):
        a.axvspan(0, meta["warmup_s"] / 60, color="0.92", lw=0)
        a.axvline(meta["load_s"] / 60, color="0.4", ls="--", lw=1)
        a.grid(True, alpha=0.3)

    a = ax[0]
    phases(a)
    a.plot(t, [r["hub_rss_mb"] for r in rows], color="tab:blue", lw=1.5, label="hub RSS")
    for (lo, hi), mean, label in ((meta["rss_first_window"], meta["rss_first"], "first"),
                                  (meta["rss_last_window"], meta["rss_last"], "last")):
        a.hlines(mean, lo / 60, hi / 60, color="tab:red", lw=3, label=f"{label} window mean {mean:.1f} MB")
    a.set_ylabel("RSS (MB)")
    a.set_ylim(bottom=0)
    a.legend(loc="lower right", fontsize=8)
    a.set_title(f"RSS after warm-up: {meta['rss_first']:.1f} → {meta['rss_last']:.1f} MB "
                f"({meta['rss_growth_pct']:+.2f} %, limit +5 %) — {meta['rss_verdict']}", fontsize=9, loc="left")

    a = ax[1]
    phases(a)
    a.plot(t, [r["hub_fds"] for r in rows], color="tab:green", lw=1.5, label="hub open descriptors")
    a.plot(t, [r["clients_open"] for r in rows], color="tab:gray", lw=1, ls=":", label="clients open (load generator)")
    a.axhline(meta["fd_baseline"], color="tab:red", lw=1, ls="--", label=f"baseline {meta['fd_baseline']}")
    a.set_ylabel("descriptors")
    a.legend(loc="center right", fontsize=8)
    a.set_title(f"descriptors: baseline {meta['fd_baseline']}, peak {meta['fd_peak']}, "
                f"{meta['fd_summary']} — {meta['fd_verdict']}", fontsize=9, loc="left")

    a = ax[2]
    phases(a)
    a.plot(t, [r["hub_cpu_pct"] for r in rows], color="tab:orange", lw=1.5, label="hub (core 0)")
    a.plot(t, [r["load_cpu_pct"] for r in rows], color="tab:purple", lw=1, label="load generator (core 1)")
    a.set_ylabel("CPU (% of a core)")
    a.set_ylim(0, 105)
    a.legend(loc="upper right", fontsize=8)

    a = ax[3]
    phases(a)
    a.plot(t, [r["delivered_per_s"] for r in rows], color="tab:cyan", lw=1.5, label="messages delivered / s")
    a.plot(t, [r["opens_per_s"] * 10 for r in rows], color="tab:brown", lw=1, label="connections opened / s × 10")
    a.set_ylabel("per second")
    a.set_xlabel("minutes from the start of the load (grey: warm-up; dashed: load stops)")
    a.legend(loc="upper right", fontsize=8)
    a.set_title(meta["delivery_summary"], fontsize=9, loc="left")

    fig.savefig(path, dpi=110)
    plt.close(fig)
