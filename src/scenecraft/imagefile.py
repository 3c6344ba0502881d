"""PNG files that carry their Scene JSON, an A1111-style ``parameters`` text chunk, a generation record and,
for pictures ``scenecraft edit`` made, their edit history (:data:`HISTORY_KEY`)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, PngImagePlugin

from .scene import Scene, SceneError, load_json

__all__ = ["save_png", "save_image", "png_bytes", "write_atomically", "image_metadata", "read_metadata",
           "read_png_metadata", "read_generation", "a1111_parameters", "generation_record", "PngMetadata",
           "PngReadError", "MAX_TEXT_BYTES", "HISTORY_KEY", "history_text", "read_history"]

SCENE_KEY = "scenecraft.scene"
GENERATION_KEY = "scenecraft.generation"
PARAMETERS_KEY = "parameters"
#: The edit history of a picture ``scenecraft edit`` made (JSON; see :mod:`scenecraft.edit_session`), compressed.
HISTORY_KEY = "scenecraft.history"
# The most bytes read of one PNG text chunk (compressed, and again inflated): 1 MB.
MAX_TEXT_BYTES = 1_000_000
# The most chunks read of one PNG (a large image has a few thousand IDAT chunks).
MAX_CHUNKS = 100_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
#: The suffix of the temporary file an atomic write renames into place (``.NAME.*.part``).
TEMP_SUFFIX = ".part"


def a1111_parameters(scene: Scene, settings: dict[str, Any], model: str, method: str) -> str:
    """The ``parameters`` text A1111-compatible tools (and civitai) read back."""
    fields = {
        "Steps": settings.get("num_inference_steps"),
        "Sampler": settings.get("scheduler"),
        "CFG scale": settings.get("guidance_scale"),
        "Seed": settings.get("seed"),
        "Size": f"{scene.width}x{scene.height}",
        "Model": model,
        "Method": method,
        "Base ratio": settings.get("base_ratio"),
        "Split": scene.split,
        "Regions": len(scene.regions),
    }
    prompt = " BREAK ".join([scene.base_prompt or scene.prompt, *(r.prompt for r in scene.regions)])
    tail = ", ".join(f"{key}: {value}" for key, value in fields.items() if value is not None)
    return f"{prompt}\nNegative prompt: {scene.negative_prompt}\n{tail}"


def generation_record(method: str, model: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable record of one image: method, model and the full config that regenerates it."""
    return {"method": method, "model": model, "seed": settings.get("seed"), "config": settings}


def image_metadata(result: Any, index: int, model: str) -> tuple[str, dict[str, Any]]:
    """The ``parameters`` text and the generation record of image ``index`` of a ``GenerationResult``.

    The record's config is exactly the method's config (it rebuilds the image alone: its own seed, one
    image); the scheduler rides beside it, and a ControlNet's settings, if the result has them, too.
    """
    from .generation.methods import get_method  # torch: imported only by those that generated something

    fields = {f.name for f in dataclasses.fields(get_method(result.method).config)}
    settings = result.image_settings(index)
    config = {key: value for key, value in settings.items() if key in fields}
    record = generation_record(result.method, model, config) | {"scheduler": settings.get("scheduler")}
    parameters = a1111_parameters(result.scene, settings, model, result.method)
    if "control" in settings:
        record["control"] = {key: settings[key] for key in ("control", "controlnet", "control_scale")}
        parameters += (f', ControlNet 0: "Model: {settings["controlnet"]}, Image: {settings["control"]}, '
                       f'Weight: {settings["control_scale"]}"')
    return parameters, record


def _png_info(scene: Scene, parameters: str, generation: dict[str, Any] | None,
              history: dict[str, Any] | None = None) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_itxt(SCENE_KEY, scene.to_json(indent=None))
    info.add_itxt(PARAMETERS_KEY, parameters)
    if generation is not None:
        info.add_itxt(GENERATION_KEY, json.dumps(generation, sort_keys=True))
    if history is not None:
        info.add_itxt(HISTORY_KEY, history_text(history), zip=True)
    return info


def history_text(history: dict[str, Any], *, max_text: int = MAX_TEXT_BYTES) -> str:
    """The JSON text of an edit history as the PNG stores it; a ValueError when its UTF-8 is longer than
    ``max_text`` bytes (what :func:`read_history` reads back; the history's owner drops old rounds first)."""
    if not isinstance(history, dict):
        raise ValueError(f"an edit history to store must be a JSON object (a dict), got {type(history).__name__}")
    text = json.dumps(history, ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode("utf-8"))
    if size > max_text:
        raise ValueError(f"the edit history is {size:,} bytes of JSON, more than the {max_text:,} a PNG text chunk "
                         "may hold here (imagefile.MAX_TEXT_BYTES); fewer or smaller rounds fit")
    return text


def save_png(image: Image.Image, path: str | Path, scene: Scene, parameters: str,
             generation: dict[str, Any] | None = None, history: dict[str, Any] | None = None) -> Path:
    """Write ``image`` to ``path`` with the scene JSON, the parameters text and (if given) the
    generation record and the edit history (compressed) as PNG text chunks; atomically (see
    :func:`save_image`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_image(image, path, format="PNG", pnginfo=_png_info(scene, parameters, generation, history))


def png_bytes(image: Image.Image, scene: Scene, parameters: str, generation: dict[str, Any] | None = None,
              history: dict[str, Any] | None = None) -> bytes:
    """The PNG file :func:`save_png` writes, as bytes (for a process that renders while another writes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=_png_info(scene, parameters, generation, history))
    return buffer.getvalue()


def save_image(image: Image.Image, path: str | Path, *, format: str | None = None, **params: Any) -> Path:
    """Write ``image`` to ``path`` atomically: into a temporary file in the same folder, then
    ``os.replace``, so a write that fails or is interrupted (a full disk, Ctrl-C) leaves no
    half-written file and an older file at ``path`` whole. ``format`` defaults to the suffix's;
    ``params`` go to ``Image.save``. A failed write raises ``OSError`` naming ``path``."""
    path = Path(path)
    format = format or _format_of(path)
    return write_atomically(path, lambda file: image.save(file, format=format, **params))


def write_atomically(path: str | Path, write: bytes | Callable[[BinaryIO], Any]) -> Path:
    """Write ``write`` (bytes, or a function that writes into the open file) to ``path`` the way
    :func:`save_image` does: a temporary file ``.NAME.*.part`` in the same folder, flushed and
    fsynced, then ``os.replace``; the temporary file is removed on any error or interrupt."""
    path = Path(path)
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        with os.fdopen(fd, "wb") as file:
            if isinstance(write, (bytes, bytearray, memoryview)):
                file.write(write)
            else:
                write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, _file_mode(path))
        os.replace(temp, path)
    except BaseException as error:
        Path(temp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _write_error(path, error) from None
        raise
    return path


def _format_of(path: Path) -> str:
    Image.init()
    format = Image.registered_extensions().get(path.suffix.lower())
    if format is None or format not in Image.SAVE:
        raise ValueError(f"cannot tell which image format to write from the name {path}; end it in .png")
    return format


def _file_mode(path: Path) -> int:
    """The permissions of the file being replaced, else those a new file gets (``mkstemp``'s are 0600)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _write_error(path: Path, error: OSError) -> OSError:
    reason = error.strerror or str(error) or type(error).__name__
    return OSError(error.errno, f"cannot write {path}: {reason[:1].lower() + reason[1:]}")


class PngReadError(ValueError):
    """A file ``read_metadata`` refuses: not a PNG, more pixels than allowed, a corrupt text chunk."""


@dataclass(frozen=True)
class PngMetadata:
    """What scenecraft stores in a PNG; ``cut`` names the text chunks longer than the reader's cap."""

    scene: Scene | None
    parameters: str | None
    generation: dict[str, Any] | None
    cut: tuple[str, ...] = ()


def read_metadata(path: str | Path, *, max_text: int = MAX_TEXT_BYTES, max_pixels: int | None = None) -> PngMetadata:
    """The scene, parameters text and generation record stored in the PNG at ``path``.

    Reads the file's text chunks only, never its pixels, so time and memory stay bounded by the
    caps whatever the file holds: at most ``max_text`` bytes of each chunk, compressed or inflated
    (the parameters text is cut there and named in ``cut``; a longer scene or record is refused),
    and an image of more than ``max_pixels`` pixels (default Pillow's ``Image.MAX_IMAGE_PIXELS``)
    is refused as a likely decompression bomb. Raises :class:`PngReadError` for a file that is not
    a PNG or holds a bad record, and ``SceneError`` for a bad scene.
    """
    path = Path(path)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    texts, cut = _read_text_chunks(path, (SCENE_KEY, PARAMETERS_KEY, GENERATION_KEY), max_text, limit)
    for key in (SCENE_KEY, GENERATION_KEY):
        if key in cut:
            raise PngReadError(f"the {key} text of {path} is longer than {max_text:,} bytes; it was not read")
    scene = _scene(texts[SCENE_KEY], path) if SCENE_KEY in texts else None
    generation = _json_object(texts[GENERATION_KEY], path) if GENERATION_KEY in texts else None
    return PngMetadata(scene, texts.get(PARAMETERS_KEY), generation, tuple(sorted(cut)))


def read_generation(path: str | Path) -> dict[str, Any] | None:
    """The generation record stored in a PNG (method, model, seed, config), or ``None``."""
    return read_metadata(path).generation


def read_png_metadata(path: str | Path) -> tuple[Scene | None, str | None]:
    """The scene and the parameters text stored in a PNG (``None`` for what is absent)."""
    metadata = read_metadata(path)
    return metadata.scene, metadata.parameters


def read_history(path: str | Path, *, max_text: int = MAX_TEXT_BYTES, max_pixels: int | None = None
                 ) -> dict[str, Any] | None:
    """The edit history stored in the PNG at ``path`` as a JSON object, or ``None`` when it has none.

    Read as :func:`read_metadata` reads (text chunks only, ``max_text`` bytes at most, inflated too;
    ``max_pixels`` as there) and parsed with the bounded JSON reader (size, depth, digits; no NaN).
    A history longer than ``max_text``, corrupt, not JSON or not an object is a :class:`PngReadError`;
    what the object must hold is :mod:`scenecraft.edit_session`'s to check.
    """
    path = Path(path)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    texts, cut = _read_text_chunks(path, (HISTORY_KEY,), max_text, limit)
    if HISTORY_KEY in cut:
        raise PngReadError(f"the {HISTORY_KEY} text of {path} is longer than {max_text:,} bytes; it was not read")
    if HISTORY_KEY not in texts:
        return None
    return _json_object(texts[HISTORY_KEY], path, HISTORY_KEY)


def _scene(text: str, path: Path) -> Scene:
    try:
        return Scene.from_json(text)
    except SceneError as error:
        raise SceneError(f"the scene stored in {path} is not valid: {error}") from None


def _json_object(text: str, path: Path, key: str = GENERATION_KEY) -> dict[str, Any]:
    try:
        data = load_json(text, what=f"{key} text")
    except SceneError as error:
        raise PngReadError(f"the {key} text of {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise PngReadError(f"the {key} text of {path} is not a JSON object")
    return data


def _read_text_chunks(path: Path, keys: tuple[str, ...], max_text: int, max_pixels: int | None):
    """``({key: text}, {keys cut})`` for the tEXt/zTXt/iTXt chunks named ``keys``; other chunks are
    skipped unread. Stops at IEND, at the end of the file or after ``MAX_CHUNKS`` chunks."""
    texts: dict[str, str] = {}
    cut: set[str] = set()
    with open(path, "rb") as file:
        if file.read(8) != PNG_SIGNATURE:
            raise PngReadError(f"{path} is not a PNG file")
        for _ in range(MAX_CHUNKS):
            header = file.read(8)
            if len(header) < 8:
                break
            length, kind = struct.unpack(">I4s", header)
            data = file.read(min(length, max_text + 80)) if kind in (b"IHDR", *_TEXT_CHUNKS) else b""
            file.seek(length - len(data) + 4, os.SEEK_CUR)  # the rest of the chunk, and its CRC
            if kind == b"IHDR":
                _check_pixels(path, data, max_pixels)
            elif kind in _TEXT_CHUNKS:
                key, text, was_cut = _decode_text(kind, data, length > len(data), max_text, path)
                if key in keys:
                    texts[key] = text
                    (cut.add if was_cut else cut.discard)(key)
            elif kind == b"IEND":
                break
    return texts, cut


def _check_pixels(path: Path, data: bytes, max_pixels: int | None) -> None:
    if len(data) < 8:
        raise PngReadError(f"{path} is a broken PNG: its IHDR chunk is {len(data)} bytes long")
    width, height = struct.unpack(">II", data[:8])
    if max_pixels is not None and width * height > max_pixels:
        raise PngReadError(f"{path} is {width}x{height} pixels, more than the {max_pixels:,} allowed "
                           "(PIL.Image.MAX_IMAGE_PIXELS); refused as a possible decompression bomb")


def _decode_text(kind: bytes, data: bytes, truncated: bool, max_text: int, path: Path) -> tuple[str, str, bool]:
    """``(keyword, text, cut)`` of one text chunk whose first bytes are ``data``."""
    keyword, _, rest = data.partition(b"\0")
    key = keyword.decode("latin-1")
    if kind == b"tEXt":
        return key, rest[:max_text].decode("latin-1"), truncated or len(rest) > max_text
    if kind == b"zTXt":
        return (key, *_inflate(rest[1:], truncated, max_text, key, path, "latin-1"))
    compressed, rest = rest[:1] == b"\1", rest[2:]
    _language, _, rest = rest.partition(b"\0")
    _translated, _, rest = rest.partition(b"\0")
    if compressed:
        return (key, *_inflate(rest, truncated, max_text, key, path, "utf-8"))
    return key, rest[:max_text].decode("utf-8", "replace"), truncated or len(rest) > max_text


def _inflate(data: bytes, truncated: bool, max_text: int, key: str, path: Path, encoding: str) -> tuple[str, bool]:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, max_text)
    except zlib.error as error:
        raise PngReadError(f"the {key} text of {path} is corrupt: {error}") from None
    cut = truncated or bool(inflater.unconsumed_tail) or not inflater.eof
    return text.decode(encoding, "replace"), cut
