#!/usr/bin/python3
"""Draws the adaptation timeline (tests/tests/adaptation.rs writes it to
target/adaptation-timeline.md: one table row a second) as an SVG: the capped viewer's rendition
as steps, its frame rate, the loss it reported, and when the cap was on.

  scripts/plot-timeline.py target/adaptation-timeline.md docs/adaptation.svg

Plain SVG by hand: no plotting library to install for one small chart.
"""
import sys

RENDITIONS = ["tiny", "small", "full"]  # bottom to top
W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 300, 60, 60, 20, 40


def main():
    src, out = sys.argv[1], sys.argv[2]
    rows = []
    for line in open(src):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5:
            continue
        t, cap, rendition, loss, fps = float(cells[0]), cells[1], cells[2], float(cells[3]), float(cells[4])
        rows.append((t, cap != "none", rendition, loss, fps))
    if not rows:
        sys.exit(f"{src}: no rows")
    t_max = max(r[0] for r in rows)
    fps_max = max(30.0, max(r[4] for r in rows))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t):
        return LEFT + pw * t / t_max

    def y_level(name):
        i = RENDITIONS.index(name) if name in RENDITIONS else 0
        return TOP + ph - ph * (i + 0.5) / len(RENDITIONS)

    def y_fps(v):
        return TOP + ph - ph * v / fps_max

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>']
    # When the cap was on: a shaded band.
    capped = [r[0] for r in rows if r[1]]
    if capped:
        x0, x1 = x(0), x(max(capped))
        parts.append(f'<rect x="{x0:.1f}" y="{TOP}" width="{x1 - x0:.1f}" height="{ph}" fill="#fde8d8"/>')
        parts.append(f'<text x="{x0 + 4:.1f}" y="{TOP + 14}" fill="#a0522d">1 Mbit/s cap</text>')
    for name in RENDITIONS:
        parts.append(f'<text x="{LEFT - 6}" y="{y_level(name) + 4:.1f}" text-anchor="end">{name}</text>')
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y_level(name):.1f}" y2="{y_level(name):.1f}" stroke="#eee"/>')
    for v in range(0, int(fps_max) + 1, 10):
        parts.append(f'<text x="{W - RIGHT + 6}" y="{y_fps(v) + 4:.1f}" fill="#1f77b4">{v}</text>')
    parts.append(f'<text x="{W - RIGHT + 6}" y="{TOP - 6}" fill="#1f77b4">fps</text>')
    for t in range(0, int(t_max) + 1, 10):
        parts.append(f'<text x="{x(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{t} s</text>')
    # Loss: bars (a full bar is 30 %).
    for t, _, _, loss, _ in rows:
        hgt = ph * min(loss, 30.0) / 30.0
        parts.append(f'<rect x="{x(t) - 2:.1f}" y="{TOP + ph - hgt:.1f}" width="4" height="{hgt:.1f}" fill="#d62728" opacity="0.6"/>')
    steps = []
    for i, (t, _, rendition, _, _) in enumerate(rows):
        if i:
            steps.append(f"{x(t):.1f},{y_level(rows[i - 1][2]):.1f}")
        steps.append(f"{x(t):.1f},{y_level(rendition):.1f}")
    parts.append(f'<polyline points="{" ".join(steps)}" fill="none" stroke="black" stroke-width="2"/>')
    fps_line = " ".join(f"{x(t):.1f},{y_fps(f):.1f}" for t, _, _, _, f in rows)
    parts.append(f'<polyline points="{fps_line}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    parts.append(f'<text x="{LEFT}" y="{H - 6}">black: rendition; blue: frames decoded per second; red: loss the viewer reported (full bar 30 %)</text>')
    parts.append("</svg>")
    open(out, "w").write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
