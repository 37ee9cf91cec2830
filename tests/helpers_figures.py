"""A figure's text checked as drawn: every label inside the canvas, no two labels on top of each other.

Boxes are the window extents Agg measures after a full draw (layout engines run during it). Rotated
text has an axis-aligned box larger than its glyphs, so the figures keep tick labels at 0 or 90 degrees,
where the box is exact.
"""

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

TOLERANCE_PX = 0.5  # rounding of the renderer's extents


def _drawn_ticks(axis) -> list:
    """The tick labels the axis draws: those of ticks inside its view, switched on."""
    labels = []
    for tick in axis._update_ticks():  # what Axis.draw draws; get_ticklabels also lists ticks out of view
        labels += [label for label in (tick.label1, tick.label2) if label.get_visible()]
    return labels


def visible_texts(fig) -> list[tuple[Text, object]]:
    """Every text the figure draws with something in it, with its window extent (pixels)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    tick_labels = {id(t) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
                   for tick in axis.get_major_ticks() + axis.get_minor_ticks() for t in (tick.label1, tick.label2)}
    texts = [t for t in fig.findobj(Text) if id(t) not in tick_labels]
    texts += [t for ax in fig.axes if ax.get_visible() and ax.axison for axis in (ax.xaxis, ax.yaxis)
              if axis.get_visible() for t in _drawn_ticks(axis)]
    out = []
    for text in texts:
        if not text.get_visible() or not text.get_text().strip() or not _shown(text):
            continue
        out.append((text, text.get_window_extent(renderer)))
    return out


def _shown(text: Text) -> bool:
    """Whether its axes draws it: an axes turned off draws its title but not its axis labels."""
    axes = text.axes
    if axes is None:
        return True
    return axes.get_visible() and (axes.axison or text not in _axis_texts(axes))


def _axis_texts(axes) -> set:
    return {axes.xaxis.label, axes.yaxis.label, axes.xaxis.offsetText, axes.yaxis.offsetText}


def text_problems(fig) -> list[str]:
    """What is wrong with the figure's text as drawn: texts outside the canvas, texts that overlap."""
    boxes = visible_texts(fig)
    width, height = fig.bbox.width, fig.bbox.height
    problems = []
    for text, box in boxes:
        if (box.x0 < -TOLERANCE_PX or box.y0 < -TOLERANCE_PX or box.x1 > width + TOLERANCE_PX
                or box.y1 > height + TOLERANCE_PX):
            problems.append(f"{text.get_text()!r} lies outside the {width:.0f}x{height:.0f} canvas at {_px(box)}")
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            overlap_w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            overlap_h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if overlap_w > TOLERANCE_PX and overlap_h > TOLERANCE_PX:
                problems.append(f"{a.get_text()!r} at {_px(box_a)} overlaps {b.get_text()!r} at {_px(box_b)}")
    return problems


def _px(box) -> str:
    return f"({box.x0:.0f}, {box.y0:.0f})-({box.x1:.0f}, {box.y1:.0f})"


def assert_text_fits(fig) -> None:
    problems = text_problems(fig)
    assert not problems, f"{len(problems)} text problems:\n" + "\n".join(problems[:20])
