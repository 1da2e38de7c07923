"""The throughput chart of a job page: SVG polylines from the job row's samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 600
HEIGHT = 120
WINDOW_SECONDS = 5.0  # rates are measured over this window, so the lines are not jagged


@dataclass(frozen=True)
class Chart:
    embedded: str  # "x,y x,y ..." in a WIDTH x HEIGHT box
    persisted: str
    max_rate: float
    seconds: float
    width: int = WIDTH
    height: int = HEIGHT


def _rates(samples: Sequence[Sequence[float]], column: int) -> list[tuple[float, float]]:
    out = []
    start = 0
    for i, sample in enumerate(samples):
        while samples[start][0] < sample[0] - WINDOW_SECONDS and start < i - 1:
            start += 1
        dt = sample[0] - samples[start][0]
        rate = (sample[column] - samples[start][column]) / dt if dt > 0 else 0.0
        out.append((sample[0], max(rate, 0.0)))
    return out


def throughput_chart(samples: Sequence[Sequence[float]]) -> Chart | None:
    """Chunks/s embedded (or reused) and persisted over the run; None under 2 samples."""
    valid = [s for s in samples if isinstance(s, list | tuple) and len(s) == 3]
    if len(valid) < 2:
        return None
    embedded, persisted = _rates(valid, 1), _rates(valid, 2)
    seconds = max(valid[-1][0] - valid[0][0], 1e-9)
    top = max(max(r for _, r in embedded), max(r for _, r in persisted), 1.0)

    def points(series: list[tuple[float, float]]) -> str:
        return " ".join(
            f"{(t - valid[0][0]) / seconds * WIDTH:.1f},{HEIGHT - r / top * (HEIGHT - 4):.1f}"
            for t, r in series
        )

    return Chart(points(embedded), points(persisted), round(top, 1), round(seconds, 1))
