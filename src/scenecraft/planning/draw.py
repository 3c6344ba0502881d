"""Draw a Scene's layout with PIL: boxes or split cells, their labels, the background prompt."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ..scene import Scene

__all__ = ["draw_layout"]

_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (128, 128, 0), (0, 128, 128), (170, 110, 40))


def draw_layout(scene: Scene, path: str | Path | None = None, *, size: int = 512):
    """A picture of ``scene``'s layout, ``size`` pixels on its longer side (default 512).

    Boxes and cells are outlined in distinct colours and labelled with their prompts; the top
    strip shows the background prompt and the negative prompt. Saved to ``path`` if given
    (atomically, in the format its suffix names). Returns the PIL image.
    """
    from PIL import Image, ImageDraw, ImageFont

    scale = size / max(scene.width, scene.height)
    w, h = max(1, round(scene.width * scale)), max(1, round(scene.height * scale))
    header = 36
    image = Image.new("RGB", (w, h + header), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    background = scene.background_prompt or scene.base_prompt or scene.prompt
    draw.text((4, 2), f"background: {background}"[:100], fill=(0, 0, 0), font=font)
    if scene.negative_prompt:
        draw.text((4, 18), f"negative: {scene.negative_prompt}"[:100], fill=(150, 0, 0), font=font)
    draw.rectangle((0, header, w - 1, h + header - 1), outline=(0, 0, 0))
    for index, region in enumerate(scene.regions):
        rect = scene.region_rect(region)
        if rect is None:
            continue
        colour = _PALETTE[index % len(_PALETTE)]
        x0, y0, x1, y1 = rect[0] * w, rect[1] * h + header, rect[2] * w - 1, rect[3] * h + header - 1
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=3)
        chars = max(8, int((x1 - x0) / 6))
        for k, line in enumerate(textwrap.wrap(f"{index}: {region.prompt}", chars, break_long_words=False)[:4]):
            draw.text((x0 + 4, y0 + 3 + 12 * k), line, fill=colour, font=font)
    if path is not None:
        from ..imagefile import save_image

        save_image(image, path)
    return image
