"""The web UI of ``scenecraft ui``: plan a prompt, see and edit the plan, generate, download, keep a history.

:func:`build_app` makes the gradio page around one shared pipeline; :func:`launch_app` serves it. The logic
without gradio (limits, planning, the region table, generation under the pipeline's lock) is in
:mod:`scenecraft.ui.core`. gradio is imported only when a page is built: ``pip install 'scenecraft[ui]'``.
"""

from .app import build_app, launch_app, require_gradio
from .core import SharedPipeline, UIError, UILimits

__all__ = ["build_app", "launch_app", "require_gradio", "SharedPipeline", "UIError", "UILimits"]
