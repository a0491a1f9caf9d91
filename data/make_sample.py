#!/usr/bin/env python3
"""Draws data/sample.jpg, the project's own example picture (a small painted landscape):
    python data/make_sample.py
Deterministic: the same script gives the same picture."""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

W, H = 640, 480


def landscape():
    y = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    sky = (1 - y) * np.array([70, 130, 220], np.float32) + y * np.array([250, 200, 160], np.float32)
    im = Image.fromarray(np.broadcast_to(sky, (H, W, 3)).astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.ellipse([470, 50, 560, 140], fill=(255, 220, 90))                       # sun
    d.polygon([(0, 330), (160, 210), (330, 320), (480, 230), (640, 300), (640, 480), (0, 480)],
              fill=(70, 120, 80))                                             # hills
    d.polygon([(0, 400), (200, 340), (420, 390), (640, 350), (640, 480), (0, 480)],
              fill=(110, 170, 70))                                            # meadow
    d.rectangle([120, 300, 230, 390], fill=(200, 60, 50))                     # house
    d.polygon([(110, 300), (175, 250), (240, 300)], fill=(90, 50, 40))        # roof
    d.rectangle([160, 345, 190, 390], fill=(60, 40, 30))                      # door
    d.rectangle([135, 315, 155, 335], fill=(250, 240, 150))                   # window
    d.rectangle([430, 330, 445, 400], fill=(100, 70, 40))                     # trunk
    d.ellipse([395, 260, 480, 345], fill=(40, 110, 50))                       # crown
    d.rectangle([300, 410, 380, 440], fill=(40, 80, 200))                     # blue car
    d.ellipse([305, 432, 325, 452], fill=(20, 20, 20))
    d.ellipse([355, 432, 375, 452], fill=(20, 20, 20))
    for x, y0 in ((40, 70), (250, 40), (330, 90)):                            # clouds
        d.ellipse([x, y0, x + 90, y0 + 35], fill=(245, 245, 250))
        d.ellipse([x + 30, y0 - 15, x + 80, y0 + 25], fill=(245, 245, 250))
    return im.filter(ImageFilter.SMOOTH)


if __name__ == "__main__":
    out = Path(__file__).with_name("sample.jpg")
    landscape().save(out, quality=90)
    print(out)
