"""A small loss-curve plot painted with QPainter (no plotting library needed)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

MAX_POINTS = 400  # the curve is thinned to about this many vertices, however long the run


class LossPlot(QWidget):
    """The total loss per step as a polyline; a log axis when the values are positive and span a decade.

    Stage changes (MAP → VI) are marked with vertical lines because the two losses differ in scale.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.values: list[float] = []
        self.stage_starts: list[int] = []
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Total loss per optimisation step (vertical lines: a new stage starts)")

    def set_history(self, values: list[float], stage_starts: list[int] = ()) -> None:
        self.values = list(values)
        self.stage_starts = list(stage_starts)
        self.update()

    def log_scale(self) -> bool:
        finite = [v for v in self.values if math.isfinite(v)]
        return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 10

    def curve(self, width: float, height: float) -> list[tuple[float, float]]:
        """The polyline in widget pixels (x right, y down) for a plot area of this size."""
        points = [(i, v) for i, v in enumerate(self.values) if math.isfinite(v)]
        if len(points) < 2:
            return []
        stride = max(1, math.ceil(len(points) / MAX_POINTS))
        points = points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])
        log = self.log_scale()
        ys = [math.log10(v) if log else v for _, v in points]
        lo, hi = min(ys), max(ys)
        span, last = (hi - lo) or 1.0, max(len(self.values) - 1, 1)
        return [(i / last * width, (1 - (y - lo) / span) * height) for (i, _), y in zip(points, ys, strict=True)]

    def paintEvent(self, event):
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        margin, text_color = 4, self.palette().color(self.foregroundRole())
        w, h = self.width() - 2 * margin, self.height() - 2 * margin
        painter.setPen(QPen(QColor(128, 128, 128, 90), 1))
        painter.drawRect(margin, margin, w, h)
        last = max(len(self.values) - 1, 1)
        for start in self.stage_starts[1:]:
            x = margin + start / last * w
            painter.drawLine(QPointF(x, margin), QPointF(x, margin + h))
        curve = self.curve(w, h)
        if curve:
            painter.setPen(QPen(QColor(255, 170, 60), 1.5))
            painter.drawPolyline(QPolygonF([QPointF(margin + x, margin + y) for x, y in curve]))
            painter.setPen(text_color)
            finite = [v for v in self.values if math.isfinite(v)]
            scale = " (log)" if self.log_scale() else ""
            painter.drawText(margin + 4, margin + 14, f"loss {finite[-1]:.4g}{scale}")
            painter.drawText(self.rect().adjusted(0, 0, -margin - 4, -margin - 2),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom, f"step {len(self.values)}")
        else:
            painter.setPen(text_color)
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss curve appears while a run is in flight")
        painter.end()
