"""Line charts drawn with Pillow (no plotting library needed): loss curves of training runs.

    plot_curves("loss.png", [("lr=0.1", iterations, avg_losses, losses), ...],
                title="l2norm-backward", ylabel="loss")

Each curve is (label, xs, ys) or (label, xs, ys, faint_ys): ys are drawn as a solid line (e.g.
the running average loss), faint_ys, when given, as a thin pale line of the same colour behind
it (e.g. the raw loss of every iteration).  Axes have ticks at round numbers and labels; the
y axis turns logarithmic when the values are positive and span more than two decades (or when
log_y=True).  Non-finite values (a NaN loss) break the line.
"""
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Ten colours that stay apart from each other on white (the usual "tab10" set).
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
DASHES = [None, (10, 5), (3, 4)]       # more than ten curves: the colours repeat, dashed

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
GRID = (228, 228, 228)


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):     # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _text_size(draw, text, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def nice_ticks(low, high, count=6):
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("tick range must be finite")
    if high < low:
        low, high = high, low
    if high == low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * 0.999)
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [_clean(k * step) for k in range(first, last + 1)]


def _clean(value):
    """Tick values without float noise (0.30000000000000004 -> 0.3)."""
    return float(f"{value:.12g}")


def log_ticks(low, high):
    """Ticks for a logarithmic axis: powers of ten, with 2 and 5 (or every digit) between
    them when that gives fewer than four ticks."""
    if low <= 0 or high <= 0:
        raise ValueError("a logarithmic axis needs positive values")
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for multiples in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [_clean(m * 10.0 ** e) for e in range(first, last + 1) for m in multiples]
        inside = [t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
        if len(inside) >= 4:
            return inside
    return inside if len(inside) >= 2 else ticks


def format_tick(value, step):
    """A tick label with as many decimals as the tick step needs."""
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or abs(value) < 1e-4:
        return f"{value:.3g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 3
    return f"{value:.{min(decimals, 6)}f}"


def _finite(values):
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def _segments(xs, ys, positive=False):
    """Runs of consecutive finite points (a NaN or inf, or with `positive` a value <= 0 on a
    log axis, breaks the line)."""
    run = []
    for x, y in zip(xs, ys):
        if math.isfinite(x) and math.isfinite(y) and (y > 0 or not positive):
            run.append((x, y))
        elif run:
            yield run
            run = []
    if run:
        yield run


def _pale(colour, amount=0.65):
    return tuple(int(c + (255 - c) * amount) for c in colour)


def _dashed(draw, points, colour, width, dash):
    """A polyline drawn in dashes of (on, off) pixels."""
    on, off = dash
    phase, drawing = 0.0, True
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        length = math.hypot(x1 - x0, y1 - y0)
        done = 0.0
        while done < length:
            left = (on if drawing else off) - phase
            piece = min(left, length - done)
            if drawing:
                a, b = done / length, (done + piece) / length
                draw.line([(x0 + (x1 - x0) * a, y0 + (y1 - y0) * a),
                           (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b)], fill=colour, width=width)
            done += piece
            phase += piece
            if phase >= (on if drawing else off) - 1e-9:
                phase, drawing = 0.0, not drawing


def plot_curves(path, curves, *, title=None, xlabel="iteration", ylabel="loss", log_y=None,
                size=(960, 560), x_range=None):
    """Draw every curve into one PNG at `path` (see the module doc); returns the path.
    x_range=(low, high) fixes the x axis (e.g. to line up two charts)."""
    curves = [tuple(c) for c in curves]
    if not curves:
        raise ValueError("nothing to plot: no curves")
    all_x = np.concatenate([_finite(c[1]) for c in curves] + [np.zeros(0)])
    solid = np.concatenate([_finite(c[2]) for c in curves] + [np.zeros(0)])
    faint = np.concatenate([_finite(c[3]) for c in curves if len(c) > 3 and c[3] is not None]
                           + [np.zeros(0)])
    if solid.size == 0 or all_x.size == 0:
        all_x, solid = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    # The scale follows the solid lines; the faint ones only widen the range.
    if log_y is None:
        log_y = bool(solid.min() > 0 and solid.max() / solid.min() > 100)
    elif log_y and solid.min() <= 0:
        raise ValueError("log_y needs positive values")
    all_y = np.concatenate([solid, faint[faint > 0] if log_y else faint])

    scale = size[1] / 560
    font, small, big = _font(int(15 * scale)), _font(int(13 * scale)), _font(int(18 * scale))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    swatch = int(28 * scale)
    legend_width = max(_text_size(probe, str(c[0]), small)[0] for c in curves) + swatch + 30
    width = size[0] + legend_width
    legend_row = max(_text_size(probe, "Ag", small)[1], 12) + int(9 * scale)
    height = max(size[1], int(60 * scale) + legend_row * len(curves))
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)

    # y axis range and ticks
    y_low, y_high = float(all_y.min()), float(all_y.max())
    if log_y:
        y_ticks = log_ticks(y_low, y_high)
        t_low, t_high = math.log10(min(y_ticks[0], y_low)), math.log10(max(y_ticks[-1], y_high))
        to_axis = math.log10
    else:
        if y_high == y_low:
            pad = abs(y_low) * 0.1 or 1.0
            y_low, y_high = y_low - pad, y_high + pad
        pad = (y_high - y_low) * 0.04
        y_ticks = nice_ticks(y_low - pad, y_high + pad)
        t_low, t_high = y_low - pad, y_high + pad
        to_axis = float
    x_low, x_high = (float(all_x.min()), float(all_x.max())) if x_range is None else \
        (float(x_range[0]), float(x_range[1]))
    if x_high == x_low:
        x_high = x_low + 1
    x_ticks = nice_ticks(x_low, x_high, 8)

    y_step = (y_ticks[1] - y_ticks[0]) if len(y_ticks) > 1 else abs(y_ticks[0]) or 1
    x_step = (x_ticks[1] - x_ticks[0]) if len(x_ticks) > 1 else 1
    y_labels = [f"{t:g}" if log_y else format_tick(t, y_step) for t in y_ticks]
    x_labels = [format_tick(t, x_step) for t in x_ticks]

    label_height = _text_size(probe, "Ag", font)[1]
    left = int(30 * scale) + max(_text_size(probe, s, font)[0] for s in y_labels) + 14
    right = size[0] - int(20 * scale)
    top = int((48 if title else 20) * scale)
    bottom = height - int(30 * scale) - 2 * label_height - 8

    def px(x):
        return left + (x - x_low) / (x_high - x_low) * (right - left)

    def py(y):
        return bottom - (to_axis(y) - t_low) / ((t_high - t_low) or 1) * (bottom - top)

    # grid, ticks and their labels
    for tick, text in zip(y_ticks, y_labels):
        y = py(tick)
        if top - 0.5 <= y <= bottom + 0.5:
            draw.line([(left, y), (right, y)], fill=GRID)
            draw.line([(left - 5, y), (left, y)], fill=INK)
            w, h = _text_size(draw, text, font)
            draw.text((left - 8 - w, y - h / 2 - 2), text, fill=INK, font=font)
    for tick, text in zip(x_ticks, x_labels):
        x = px(tick)
        draw.line([(x, top), (x, bottom)], fill=GRID)
        draw.line([(x, bottom), (x, bottom + 5)], fill=INK)
        w, _ = _text_size(draw, text, font)
        draw.text((x - w / 2, bottom + 8), text, fill=INK, font=font)
    draw.rectangle([left, top, right, bottom], outline=INK)

    # axis labels and title
    w, h = _text_size(draw, xlabel, font)
    draw.text(((left + right) / 2 - w / 2, bottom + 14 + label_height), xlabel, fill=INK,
              font=font)
    ylabel_text = ylabel + (" (log scale)" if log_y else "")
    w, h = _text_size(draw, ylabel_text, font)
    rotated = Image.new("RGBA", (w + 4, h + 8), BACKGROUND + (0,))
    ImageDraw.Draw(rotated).text((2, 0), ylabel_text, fill=INK, font=font)
    rotated = rotated.rotate(90, expand=True)
    image.paste(rotated, (int(6 * scale), int((top + bottom) / 2 - rotated.height / 2)), rotated)
    if title:
        w, _ = _text_size(draw, title, big)
        draw.text(((left + right) / 2 - w / 2, int(14 * scale)), title, fill=INK, font=big)

    # the curves: faint raw values first, then every solid line above them
    def points(xs, ys):
        for run in _segments([float(v) for v in xs], [float(v) for v in ys], log_y):
            yield [(px(x), py(y)) for x, y in run]

    styles = [(PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)])
              for i in range(len(curves))]
    for curve, (colour, _) in zip(curves, styles):
        if len(curve) > 3 and curve[3] is not None:
            for line in points(curve[1], curve[3]):
                draw.line(line, fill=_pale(colour), width=1)
    for curve, (colour, dash) in zip(curves, styles):
        for line in points(curve[1], curve[2]):
            if len(line) == 1:
                x, y = line[0]
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
            elif dash:
                _dashed(draw, line, colour, max(2, int(2 * scale)), dash)
            else:
                draw.line(line, fill=colour, width=max(2, int(2 * scale)), joint="curve")

    # legend, right of the plot
    x0 = size[0] + 4
    y = top
    for curve, (colour, dash) in zip(curves, styles):
        middle = y + legend_row / 2 - 2
        if dash:
            _dashed(draw, [(x0, middle), (x0 + swatch, middle)], colour, 3, dash)
        else:
            draw.line([(x0, middle), (x0 + swatch, middle)], fill=colour, width=3)
        draw.text((x0 + swatch + 8, y), str(curve[0]), fill=INK, font=small)
        y += legend_row
    image.save(path)
    return path
