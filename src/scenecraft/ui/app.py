"""The gradio page of ``scenecraft ui``: prompt -> plan (picture, region table, scene JSON) -> generate -> image,
download and history; then edits of the image in words (``scenecraft.edit_session``), undo and its edit history.
gradio is imported only when a page is built (``pip install 'scenecraft[ui]'``).

Concurrency: gradio's queue runs at most one generation at a time for the whole server (the ``generate``
event's ``concurrency_limit=1``; other requests wait in the queue, at most ``max_queue`` of them, and the page
shows their place), and :class:`~scenecraft.ui.core.SharedPipeline` takes the pipeline's lock as well, so
the pipeline is never entered twice even by other callers. Edits and undos draw on the same pipeline, in the same
queue (``concurrency_id="pipeline"``). Planning runs up to ``plan_concurrency`` at once.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .core import (ROUND_HEADERS, TABLE_HEADERS, SharedPipeline, UIError, UILimits, apply_editor, apply_rows,
                   edit_entry, edit_image, edit_rows, editor_value, history_entry, message, plan, plan_picture,
                   read_scene, region_rows, render, start_editing, undo_image)
from .editor import EDITOR_CSS, box_editor

__all__ = ["build_app", "launch_app", "require_gradio"]

log = logging.getLogger("scenecraft.ui")

CSS = """
#plan-picture img, #result img, #history img { image-rendering: pixelated; }
#result img { width: 288px; height: 288px; object-fit: contain; }
"""
# Fonts the machine has: the default theme's Google fonts would be fetched from the internet.
_FONTS = (["ui-sans-serif", "system-ui", "sans-serif"], ["ui-monospace", "Consolas", "monospace"])


def require_gradio():
    """The gradio module, or a UIError saying how to install it. gradio's usage analytics stay off unless
    ``GRADIO_ANALYTICS_ENABLED`` says otherwise (they would call out to the internet)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise UIError("the web UI needs gradio, which is not installed: pip install 'scenecraft[ui]'") from None
    return gradio


def build_app(pipe, *, model: str = "toyworld", limits: UILimits | None = None, llm: str | None = None,
              out_dir: str | Path | None = None, native_size: int | None = None, max_queue: int = 16,
              plan_concurrency: int = 2, title: str = "scenecraft"):
    """The gradio Blocks of the UI, not launched (see :func:`launch_app`).

    Args:
        pipe: a loaded pipeline, or a callable returning one (called at the first generation).
        model: the model's name as the PNGs record it (default ``"toyworld"``).
        limits: what one request may ask (default :meth:`UILimits.for_native_size` of the model).
        llm: the planner's LLM spec (default ``None``: the offline planner).
        out_dir: where the PNGs are written (default a new temporary folder).
        native_size: the model's side in pixels, for the default size and limits (default: read from ``pipe``
            when it is loaded, else 512).
        max_queue: most requests waiting in gradio's queue (default 16); more are refused.
        plan_concurrency: plans computed at once (default 2).
    """
    gr = require_gradio()
    shared = SharedPipeline(pipe, model)
    native, methods = _model_facts(shared, native_size)
    limits = limits or UILimits.for_native_size(native)
    out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="scenecraft-ui-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    handlers = _Handlers(shared, limits, out_dir, llm)
    # gradio keeps a copy of every output file in its cache: hourly, drop the copies older than a day.
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as demo:
        page = _page(gr, handlers, model, methods, min(native, limits.max_side))
        _events(gr, page, handlers, plan_concurrency)
    demo.queue(max_size=max_queue)
    demo.scenecraft = handlers  # for tests and embedding: the shared pipeline, limits and output folder
    return demo


def _page(gr, handlers: _Handlers, model: str, methods: list[str], size: int) -> SimpleNamespace:
    """The page's components, top to bottom: prompt and plan; picture, box editor, table and JSON; method and
    settings; status; image, download and history; the edit box (instruction, Edit, Undo) and the edit history."""
    limits = handlers.limits
    c = SimpleNamespace()
    gr.Markdown(f"## scenecraft\nPlan a prompt into regions, adjust them, generate with `{model}`, then edit the "
                f"image in words. "
                f"Limits of this server: {limits.summary()}.")
    with gr.Row():
        c.prompt = gr.Textbox(label="Prompt", elem_id="prompt", scale=4, max_length=limits.max_prompt_chars,
                              placeholder="a red circle to the left of a blue square")
        c.layout = gr.Radio(["boxes", "split"], value="boxes", label="Layout", elem_id="layout", scale=1)
        c.width, c.height = (gr.Number(size, label=name.title(), precision=0, minimum=8, maximum=limits.max_side,
                                       step=8, elem_id=name, scale=1) for name in ("width", "height"))
        c.plan = gr.Button("Plan", variant="secondary", elem_id="plan", scale=1)
    with gr.Row():
        with gr.Column(scale=2):
            c.picture = gr.Image(label="Plan", show_label=False, type="pil", interactive=False,
                                 elem_id="plan-picture", height=320, buttons=[])
        with gr.Column(scale=2):
            gr.Markdown("Drag a box to move it, its corner to resize it")
            c.boxes = box_editor(gr, elem_id="boxes")
        with gr.Column(scale=3):
            c.table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "number", "number", "number", "number"],
                                   label="Regions: prompt and box (fractions of the canvas, origin top-left)",
                                   interactive=True, elem_id="regions", column_count=len(TABLE_HEADERS), type="array")
            c.scene_json = gr.Code(label="Scene JSON", language="json", interactive=True, elem_id="scene-json",
                                   lines=12, max_lines=24)
            c.apply = gr.Button("Apply JSON", size="sm", elem_id="apply-json")
    with gr.Row():
        c.method = gr.Dropdown(methods, value=methods[0], label="Method", elem_id="method", scale=2)
        c.seed = gr.Number(-1, label="Seed (-1: random)", precision=0, minimum=-1, elem_id="seed", scale=1)
        steps, guidance = handlers.defaults(methods[0])
        c.steps = gr.Number(steps, label="Steps", precision=0, minimum=1, maximum=limits.max_steps, elem_id="steps",
                            scale=1)
        c.guidance = gr.Number(guidance, label="Guidance", minimum=0, maximum=100, step=0.5, elem_id="guidance",
                               scale=1)
        c.generate = gr.Button("Generate", variant="primary", elem_id="generate", scale=1)
    c.status = gr.Textbox(label="Status", interactive=False, elem_id="status", lines=1, max_lines=6)
    with gr.Row():
        c.result = gr.Image(label="Image", type="filepath", interactive=False, elem_id="result", height=320,
                            format="png")
        with gr.Column():
            c.download = gr.DownloadButton("Download PNG (scene and settings inside)", value=None, elem_id="download",
                                           interactive=False)
            c.history = gr.Gallery(label="This session (newest first)", elem_id="history", columns=4, height=300,
                                   fit_columns=False, object_fit="contain", allow_preview=False, interactive=False)
    with gr.Row():
        c.instruction = gr.Textbox(label="Edit the image", elem_id="instruction", scale=4,
                                   max_length=limits.max_prompt_chars,
                                   placeholder="make the circle blue · move the square to the left · add a star")
        c.edit = gr.Button("Edit", variant="primary", elem_id="edit", scale=1)
        c.undo = gr.Button("Undo", variant="secondary", elem_id="undo", scale=1)
    c.rounds = gr.Dataframe(headers=ROUND_HEADERS, datatype=["number", "str", "str", "number"], interactive=False,
                            label="Edit history of this image (the PNG carries it)", elem_id="rounds",
                            column_count=len(ROUND_HEADERS), type="array")
    c.history_state = gr.State([])
    c.edit_state = gr.State(None, time_to_live=3600)  # an hour unused, then its kept rounds are let go
    return c


def _events(gr, c: SimpleNamespace, handlers: _Handlers, plan_concurrency: int) -> None:
    """Wire the page: planning and edits share ``plan_concurrency`` slots; generations run one at a time."""
    shown = [c.scene_json, c.table, c.picture, c.boxes, c.status]
    planning = dict(concurrency_limit=plan_concurrency, concurrency_id="plan")
    for event in (c.plan.click, c.prompt.submit):
        event(handlers.plan, inputs=[c.prompt, c.layout, c.width, c.height], outputs=shown, **planning)
    c.apply.click(handlers.apply_json, inputs=[c.scene_json], outputs=shown, **planning)
    c.table.input(handlers.edit_table, inputs=[c.scene_json, c.table],
                  outputs=[c.scene_json, c.picture, c.boxes, c.status], **planning)
    c.boxes.input(handlers.drag_boxes, inputs=[c.scene_json, c.boxes],
                  outputs=[c.scene_json, c.table, c.picture, c.status], **planning)
    c.method.change(handlers.defaults, inputs=[c.method], outputs=[c.steps, c.guidance])

    def generate(text, method, seed, steps, guidance, history, progress=gr.Progress()):  # how gradio passes it
        return handlers.generate(text, method, seed, steps, guidance, history, progress)

    c.generate.click(generate, inputs=[c.scene_json, c.method, c.seed, c.steps, c.guidance, c.history_state],
                     outputs=[c.result, c.download, c.history, c.history_state, c.edit_state, c.rounds, c.status],
                     concurrency_limit=1, concurrency_id="pipeline")

    def edit(instruction, state, history, progress=gr.Progress()):
        return handlers.edit(instruction, state, history, progress)

    def undo(state, history, progress=gr.Progress()):
        return handlers.undo(state, history, progress)

    edited = [c.result, c.download, c.history, c.history_state, c.edit_state, c.rounds, c.status]
    pipeline = dict(concurrency_limit=1, concurrency_id="pipeline")  # edits draw on the one pipeline too
    for event in (c.edit.click, c.instruction.submit):
        event(edit, inputs=[c.instruction, c.edit_state, c.history_state], outputs=edited, **pipeline)
    c.undo.click(undo, inputs=[c.edit_state, c.history_state], outputs=edited, **pipeline)


def _model_facts(shared: SharedPipeline, native_size: int | None) -> tuple[int, list[str]]:
    """The model's native side and the methods that run on it (all of them while it is not loaded)."""
    from ..generation.methods import METHODS

    if not shared.loaded:
        return native_size or 512, list(METHODS)
    from ..generation.backbones import backbone, pipeline_family

    pipe = shared.pipeline()
    family = pipeline_family(pipe)
    runs = [name for name, item in METHODS.items() if family in item.families]
    return native_size or backbone(pipe).native_size, runs


class _Handlers:
    """The page's event handlers: each returns its outputs, and on a mistake leaves them as they were and
    puts the sentence in the status box (a bug is logged with its traceback and reported as a bug)."""

    def __init__(self, shared: SharedPipeline, limits: UILimits, out_dir: Path, llm: str | None) -> None:
        self.shared, self.limits, self.out_dir, self.llm = shared, limits, out_dir, llm

    def plan(self, prompt, layout, width, height):
        return self._guard(5, lambda: self._show(plan(prompt, layout, width, height, self.limits, self.llm),
                                                 "planned"))

    def apply_json(self, text):
        return self._guard(5, lambda: self._show(read_scene(text, self.limits), "applied the JSON"))

    def edit_table(self, text, rows):
        def edit():
            scene = apply_rows(read_scene(text, self.limits), rows, self.limits)
            return scene.to_json(), plan_picture(scene), editor_value(scene), f"applied the table: {_regions(scene)}"

        return self._guard(4, edit)

    def drag_boxes(self, text, value):
        def drag():
            scene = apply_editor(read_scene(text, self.limits), value, self.limits)
            return scene.to_json(), region_rows(scene), plan_picture(scene), f"applied the boxes: {_regions(scene)}"

        return self._guard(4, drag)

    def generate(self, text, method, seed, steps, guidance, history, progress):
        import gradio as gr

        def run():
            scene = read_scene(text, self.limits)
            rendered = render(self.shared, scene, method, seed, steps, guidance, self.out_dir, self.limits,
                              on_step=lambda done, total: progress((done, total), desc="denoising"))
            entries = [history_entry(rendered), *history][: self.limits.max_history]
            note = (f"seed {rendered.seed}, {rendered.method}, {rendered.steps} steps, {scene.width}x{scene.height}, "
                    f"{rendered.seconds:.1f} s")
            state = start_editing(rendered)
            return (str(rendered.path), gr.update(value=str(rendered.path), interactive=True), entries, entries,
                    state, edit_rows(state), note)

        return self._guard(7, run)

    def edit(self, instruction, state, history, progress):
        def run():
            new, edited = edit_image(self.shared, state, instruction, self.out_dir, self.limits, self.llm,
                                     on_step=lambda done, total: progress((done, total), desc="editing"))
            return self._edited(new, edited, history)

        return self._guard(7, run)

    def undo(self, state, history, progress):
        def run():
            new, edited = undo_image(self.shared, state, self.out_dir, self.limits,
                                     on_step=lambda done, total: progress((done, total), desc="undoing"))
            return self._edited(new, edited, history)

        return self._guard(7, run)

    def _edited(self, state, edited, history):
        import gradio as gr

        entries = [edit_entry(edited), *(history or [])][: self.limits.max_history]
        if edited.undone:
            what = f"undid {edited.instruction or 'the edits'!r}: round {edited.round}"
        else:
            what = f"round {edited.round}: " + "; ".join(edited.changes)
        exact = "the same pixels as before, bit for bit" if edited.exact and edited.undone else ""
        parts = [what, exact, *edited.notes, f"{edited.seconds:.1f} s"]
        return (str(edited.path), gr.update(value=str(edited.path), interactive=True), entries, entries, state,
                edit_rows(state), " · ".join(part for part in parts if part))

    def defaults(self, method):
        """The steps and guidance ``method`` takes on this model (the method's, under the model's ``scenecraft.json``),
        steps capped at the server's limit."""
        try:
            config = self.shared.config(method)
        except ValueError:
            return None, None
        return min(config.num_inference_steps, self.limits.max_steps), config.guidance_scale

    def _show(self, scene, verb: str):
        return (scene.to_json(), region_rows(scene), plan_picture(scene), editor_value(scene),
                f"{verb}: {_regions(scene)}")

    def _guard(self, outputs: int, work) -> tuple[Any, ...]:
        import gradio as gr

        try:
            return work()
        except ValueError as error:  # every scenecraft error a user can cause: scenes, plans, limits, settings
            text = f"error: {message(error)}"
        except Exception as error:
            from ..generation.loading import ModelLoadError

            if isinstance(error, (ModelLoadError, OSError)):
                text = f"error: {message(error)}"
            else:
                log.exception("scenecraft ui: a request failed")
                text = ("error: scenecraft hit a bug on this request (the server's log has the traceback); "
                        "please report it")
        return (*(gr.skip() for _ in range(outputs - 1)), text)


def _regions(scene) -> str:
    count = len(scene.regions)
    return f"{count} region{'s' if count != 1 else ''}, {scene.width}x{scene.height}"


def launch_app(demo, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False) -> str:
    """Start serving ``demo`` on ``host:port`` (default 127.0.0.1, the first free port from 7860) and return its
    address (the gradio.live one too with ``share``); the server runs until ``demo.close()``, or Ctrl-C
    in ``demo.block_thread()``."""
    gr = require_gradio()
    theme = gr.themes.Default(font=_FONTS[0], font_mono=_FONTS[1])
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                theme=theme, css=CSS + EDITOR_CSS, allowed_paths=[str(demo.scenecraft.out_dir)], show_error=False,
                footer_links=[])
    return demo.local_url + (f" and {demo.share_url}" if share and demo.share_url else "")
