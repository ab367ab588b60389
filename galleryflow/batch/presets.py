"""Batch job parameters and presets.

A batch job is a short pipeline of composable steps, in the spirit of libvips and
imgproxy: *decode* (EXIF orientation, colour profile) → *resize* (when a width or
height is given) → *watermark* (when a text or logo is given) → *encode* (format,
quality, metadata). The *operation* names the user's intent and checks that the
parameters it needs are there:

==========  ===============================================================
operation   what it needs / adds
==========  ===============================================================
resize      ``width`` and/or ``height`` (``fit``: fit, crop, fill, pad)
convert     ``format`` (jpeg, png, webp, avif)
compress    re-encode at ``quality`` or down to ``target_size``; never larger
            than the input unless ``force``
watermark   ``watermark_text`` or ``watermark_logo``
thumbnail   a small ``width``×``height`` (default 320×240); videos allowed
==========  ===============================================================

A *preset* is a named parameter set that also names its operation. Explicit
parameters override a preset's; user presets (``[batch.presets]`` in settings)
override built-ins of the same name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from galleryflow.core.settings import Settings, get_settings
from galleryflow.imaging import formats
from galleryflow.imaging.formats import OutputKey

Operation = Literal["resize", "convert", "compress", "watermark", "thumbnail"]
OPERATIONS: tuple[str, ...] = get_args(Operation)
Fit = Literal["fit", "crop", "fill", "pad"]
SmallImages = Literal["keep", "enlarge", "pad"]
Position = Literal[
    "top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right"
]
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


class PresetError(ValueError):
    """Unknown preset or operation, or parameters that do not make a valid job."""


class BatchParams(BaseModel):
    """Every knob of a batch job, resolved (preset + overrides). Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    # resize / thumbnail
    width: int | None = Field(default=None, ge=1, le=65_000, description="Output width in px "
                              "(the box's width; height follows the aspect when not given).",
                              examples=[800, 1280])
    height: int | None = Field(default=None, ge=1, le=65_000, description="Output height in px.",
                               examples=[600, 1080])
    fit: Fit = Field(default="fit", description="fit: inside the box, aspect kept; crop: fill "
                     "the box and centre-crop; fill: stretch to the box; pad: fit and pad.")
    upscale: bool = Field(default=False, description="Enlarge images smaller than the box "
                          "(the same as small_images=enlarge).")
    small_images: SmallImages = Field(
        default="keep", description="An image smaller than the box: keep it smaller (keep), "
        "enlarge it to the box, noted on the file (enlarge), or centre it on a box-sized "
        "canvas of the background colour (pad).")
    background: str = Field(default="#ffffff", description="Pad colour, and what alpha is "
                            "flattened onto for formats without alpha (JPEG).",
                            examples=["#ffffff", "#000000"])
    # encode
    format: OutputKey | None = Field(default=None, description="Output format. None: keep the "
                                     "input's format where it can be written (else JPEG or PNG).")
    quality: int | None = Field(default=None, ge=1, le=100, description="Encoder quality; "
                                "default per format: JPEG 85, WebP 85, AVIF 70.", examples=[80])
    lossless: bool = Field(default=False, description="Lossless WebP (AVIF: q100 4:4:4).")
    keep_16bit: bool = Field(default=False, description="Write a 16-bit greyscale input as a "
                             "16-bit PNG instead of scaling it to 8 bits (high_quality does).")
    optimize: bool = Field(default=True, description="JPEG Huffman optimisation.")
    progressive: bool = Field(default=False, description="Progressive JPEG (loads blurry-to-sharp).")
    webp_method: int = Field(default=4, ge=0, le=6, description="WebP effort: 0 fast … 6 small.")
    avif_speed: int = Field(default=8, ge=0, le=10, description="AVIF speed: 10 fastest. At "
                            "Pillow's default (6) a 24-MP encode takes >1 s; 8 is ~5x faster "
                            "and still smaller than WebP (DESIGN.md).")
    png_compress_level: int = Field(default=6, ge=0, le=9, description="zlib level: 0 fast … 9 small.")
    # compress
    target_size: int | None = Field(default=None, ge=1, description="Largest output in bytes "
                                    "(compress; the CLI also takes '200KB').", examples=[200_000])
    min_quality: int = Field(default=30, ge=1, le=100, description="Floor for target_size search.")
    force: bool = Field(default=False, description="Write even when larger than the input.")
    # colour and metadata
    colour: Literal["srgb", "keep"] = Field(default="srgb", description="Convert to sRGB, or "
                                            "keep the source profile.")
    strip_metadata: bool = Field(default=False, description="Drop EXIF and XMP.")
    strip_gps: bool = Field(default=False, description="Drop GPS from EXIF (web presets do).")
    # watermark
    watermark_text: str | None = Field(default=None, description="Text drawn on each image.",
                                       examples=["© Studio 2026"])
    watermark_logo: Path | None = Field(default=None, description="A logo image file (PNG "
                                        "with alpha) drawn on each image.")
    watermark_font: str | None = Field(default=None, description="TrueType file or font name; "
                                       "default: Pillow's built-in scalable font.")
    watermark_size: int | None = Field(default=None, ge=4, description="Text height in px; "
                                       "default 4% of the short edge.")
    watermark_scale: float = Field(default=0.2, gt=0, le=1, description="Logo width / image width.")
    watermark_opacity: float = Field(default=0.5, ge=0, le=1, description="0 invisible … 1 opaque.")
    watermark_position: Position = Field(default="bottom-right", description="Where the mark goes.")
    watermark_margin: int | None = Field(default=None, ge=0, description="px; default 2% of "
                                         "the short edge.")
    watermark_color: str = Field(default="#ffffff", description="Text colour.")
    # video thumbnails
    video_samples: int = Field(default=6, ge=1, le=50, description="Candidate frames scored.")

    @field_validator("format", mode="before")
    @classmethod
    def _format_alias(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        return formats.output_key(value)

    @field_validator("target_size", mode="before")
    @classmethod
    def _size_units(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_size(value)
        return value

    def quality_for(self, fmt: str) -> int:
        return self.quality if self.quality is not None else formats.default_quality(fmt)

    @property
    def enlarge(self) -> bool:
        return self.upscale or self.small_images == "enlarge"


class BatchRequest(BaseModel):
    """What a user asks for: the job's inputs before presets are resolved."""

    input_pattern: str
    operation: str | None = None  # checked by resolve(), which explains a bad one
    output_directory: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    preset: str | None = None


class ResolvedJob(BaseModel):
    operation: Operation
    preset: str | None
    params: BatchParams


BUILTIN_PRESETS: dict[str, dict[str, Any]] = {
    # Web: 1280 px wide (height follows), WebP q85, GPS never leaves the studio.
    "web_optimized": {"operation": "resize", "width": 1280, "format": "webp", "quality": 85,
                      "strip_gps": True},
    # Square feed posts: always 1080×1080, filled and centre-cropped; a smaller photo
    # is enlarged, with a note on the file (small_images=pad centres it instead).
    "social_media": {"operation": "resize", "width": 1080, "height": 1080, "fit": "crop",
                     "small_images": "enlarge", "format": "jpeg", "quality": 90,
                     "strip_gps": True},
    # Grid thumbnails: exactly 320×240, small JPEGs.
    "thumbnail": {"operation": "thumbnail", "width": 320, "height": 240, "fit": "crop",
                  "format": "jpeg", "quality": 75, "strip_gps": True},
    # Archive-grade: full size, lossless PNG, profile and metadata kept. zlib level 6,
    # not 9: on 24-MP photos level 9 took ~25 s an image for ~2% smaller files.
    # 16-bit greyscale inputs stay 16-bit.
    "high_quality": {"operation": "convert", "format": "png", "png_compress_level": 6,
                     "colour": "keep", "keep_16bit": True},
}


def parse_size(text: str) -> int:
    """'200KB' → 200000, '1.5MiB' → 1572864, '5000' → 5000."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (try 200KB or 1.5MB)")
    number, unit = match.groups()
    unit = (unit or "").lower()
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit in {text!r}")
    return int(float(number) * _SIZE_UNITS[unit])


def parse_param_pairs(pairs: list[str]) -> dict[str, Any]:
    """``["width=800", "format=webp", "upscale=true"]`` → a dict (values stay strings;
    pydantic converts them when the job is resolved, so ``upscale=true`` is a bool)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise PresetError(f"parameter {pair!r} is not key=value")
        params[key] = value.strip()
    return params


def all_presets(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """Built-in presets with the user's (settings ``batch.presets``) merged over them."""
    settings = settings or get_settings()
    merged = {name: dict(values) for name, values in BUILTIN_PRESETS.items()}
    for name, values in settings.batch.presets.items():
        merged[name] = dict(values)
    return merged


def resolve(
    operation: str | None,
    preset: str | None = None,
    parameters: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> ResolvedJob:
    """Preset values, then explicit parameters on top; checked for the operation."""
    values: dict[str, Any] = {}
    preset_op: str | None = None
    if preset:
        presets = all_presets(settings)
        if preset not in presets:
            raise PresetError(f"unknown preset {preset!r} (known: {', '.join(sorted(presets))})")
        values.update(presets[preset])
        preset_op = values.pop("operation", None)
    explicit = dict(parameters or {})
    explicit.pop("operation", None)
    values.update(explicit)
    op = operation or preset_op
    if op is None:
        raise PresetError("no operation: give one (resize, convert, compress, watermark, "
                          "thumbnail) or a preset that names one")
    if op not in OPERATIONS:
        raise PresetError(f"unknown operation {op!r} (use {', '.join(OPERATIONS)})")
    if op == "thumbnail":
        if values.get("width") is None and values.get("height") is None:
            values.setdefault("width", 320)
            values.setdefault("height", 240)
    try:
        params = BatchParams(**values)
    except ValidationError as exc:
        raise PresetError(_plain_validation(exc)) from None
    _check_operation(op, params)
    return ResolvedJob(operation=op, preset=preset, params=params)  # type: ignore[arg-type]


def _check_operation(op: str, params: BatchParams) -> None:
    if op == "resize" and params.width is None and params.height is None:
        raise PresetError("resize needs width and/or height (e.g. --param width=800)")
    if op == "convert" and params.format is None:
        raise PresetError("convert needs a format: jpeg, png, webp or avif")
    if op == "watermark" and not (params.watermark_text or params.watermark_logo):
        raise PresetError("watermark needs watermark_text or watermark_logo")
    if params.fit in ("crop", "fill", "pad") and not (params.width and params.height):
        raise PresetError(f"fit={params.fit} needs both width and height")
    if params.watermark_logo is not None and not params.watermark_logo.is_file():
        raise PresetError(f"watermark logo not found: {params.watermark_logo}")


def _plain_validation(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "parameters"
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown parameter {where!r}")
        else:
            parts.append(f"{where}: {error['msg']}")
    return "invalid parameters: " + "; ".join(parts)
