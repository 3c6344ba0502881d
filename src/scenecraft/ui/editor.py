"""The draggable box editor: a gradio ``HTML`` component whose script draws the scene's rectangles and lets the
user move a box (drag it) or resize it (drag its corner). Its value is :func:`scenecraft.ui.core.editor_value`'s
JSON; on release it sends the new value with an ``input`` event, which the server reads back with
:func:`scenecraft.ui.core.apply_editor` (bounded JSON, checked like a table edit).

Prompts are written with ``textContent``, never as HTML, and the template holds no value: what a scene says
cannot become markup or script on the page.
"""

from __future__ import annotations

__all__ = ["box_editor", "EDITOR_CSS"]


EDITOR_CSS = """
#boxes .sc-canvas { position: relative; width: 100%; max-width: 384px; background: #fafafa; border: 1px solid #333;
  touch-action: none; user-select: none; margin: 0 auto; }
#boxes .sc-box { position: absolute; box-sizing: border-box; border: 3px solid; cursor: move; overflow: hidden; }
#boxes .sc-box span { font: 11px/1.2 sans-serif; padding: 1px 3px; display: block; pointer-events: none; }
#boxes .sc-handle { position: absolute; right: 0; bottom: 0; width: 12px; height: 12px; cursor: nwse-resize; }
#boxes .sc-empty { color: #777; font: 13px sans-serif; padding: 8px; }
"""

_SCRIPT = """
const palette = %(palette)s;
const MIN = 0.02;
let drag = null;
const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
const round = (v) => Math.round(v * 10000) / 10000;

function read() {
  try { const data = JSON.parse(props.value || 'null'); return data && Array.isArray(data.regions) ? data : null; }
  catch (error) { return null; }
}

function place(box, [x0, y0, x1, y1]) {
  Object.assign(box.style, {left: `${x0 * 100}%%`, top: `${y0 * 100}%%`, width: `${(x1 - x0) * 100}%%`,
                            height: `${(y1 - y0) * 100}%%`});
}

function draw() {
  let root = element.querySelector('.sc-root');
  if (!root) { root = document.createElement('div'); root.className = 'sc-root'; element.appendChild(root); }
  root.replaceChildren();
  const data = read();
  if (!data || !data.regions.length) {
    const empty = document.createElement('div');
    empty.className = 'sc-empty';
    empty.textContent = 'Plan a prompt: its boxes appear here; drag one to move it, its corner to resize it.';
    root.appendChild(empty);
    return;
  }
  const canvas = document.createElement('div');
  canvas.className = 'sc-canvas';
  canvas.style.aspectRatio = `${Number(data.width) || 1} / ${Number(data.height) || 1}`;
  data.regions.forEach((region, index) => {
    if (!Array.isArray(region.box)) return;
    const box = document.createElement('div');
    box.className = 'sc-box';
    box.dataset.index = index;
    box.style.borderColor = palette[index %% palette.length];
    place(box, region.box);
    const label = document.createElement('span');
    label.textContent = `${index}: ${region.prompt}`;
    label.style.color = palette[index %% palette.length];
    const handle = document.createElement('div');
    handle.className = 'sc-handle';
    handle.style.background = palette[index %% palette.length];
    box.append(label, handle);
    canvas.appendChild(box);
  });
  root.appendChild(canvas);
}

element.addEventListener('pointerdown', (event) => {
  const box = event.target.closest('.sc-box');
  const data = read();
  if (!box || !data) return;
  const index = Number(box.dataset.index);
  const area = box.parentElement.getBoundingClientRect();
  drag = {index, box, data, resize: event.target.classList.contains('sc-handle'), x: event.clientX,
          y: event.clientY, start: data.regions[index].box.slice(), width: area.width, height: area.height};
  box.setPointerCapture(event.pointerId);
  event.preventDefault();
});

element.addEventListener('pointermove', (event) => {
  if (!drag) return;
  const dx = (event.clientX - drag.x) / drag.width, dy = (event.clientY - drag.y) / drag.height;
  let [x0, y0, x1, y1] = drag.start;
  if (drag.resize) {
    x1 = clamp(x1 + dx, x0 + MIN, 1);
    y1 = clamp(y1 + dy, y0 + MIN, 1);
  } else {
    const w = x1 - x0, h = y1 - y0;
    x0 = clamp(x0 + dx, 0, 1 - w);
    y0 = clamp(y0 + dy, 0, 1 - h);
    x1 = x0 + w;
    y1 = y0 + h;
  }
  drag.moved = [x0, y0, x1, y1].map(round);
  place(drag.box, drag.moved);
});

function release() {
  const done = drag;
  drag = null;
  if (!done || !done.moved) return;
  done.data.regions[done.index].box = done.moved;
  props.value = JSON.stringify(done.data);
  trigger('input');
  setTimeout(draw, 0);
}
element.addEventListener('pointerup', release);
element.addEventListener('pointercancel', release);

watch('value', draw);
draw();
"""


def box_editor(gr, **kwargs):
    """The editor, as a ``gr.HTML`` (``kwargs`` go to it: ``elem_id``, ``label``...)."""
    import json

    from ..planning.draw import _PALETTE  # the plan picture's colours, so a box has the same colour in both

    palette = json.dumps(["#%02x%02x%02x" % colour for colour in _PALETTE])
    return gr.HTML(value="", html_template="<div></div>", js_on_load=_SCRIPT % {"palette": palette},
                   apply_default_css=True, **kwargs)
