"""The one image stack: every consumer (validation, EXIF, scoring, model resize,
offline captions, publishing, batch jobs) reads, converts, sizes and writes images
through these modules, and nothing else in galleryflow opens pixels itself.

One read → orient → process → save path (as in sigal's image.py), one Pillow
implementation behind small modules named for what they do:

- ``formats``:  the one table of formats (Pillow name, extensions, MIME, writable)
- ``decode``:   header sniffing, the validation decode check, and ``decode`` /
  ``open_reduced``: draft + orient + reduce in one call; counts decodes (``DECODES``)
- ``jpeg_scale``: JPEG decodes at libjpeg's eighth scales (3/8, 5/8…) where Pillow's
  draft has only halves (simplejpeg; ``decode`` uses it when it decodes less)
- ``colour``:   modes to RGB, alpha flattening, sRGB through the ICC profile
  (cached, thread-safe transforms)
- ``geometry``: orientation-aware sizes, draft requests, ``reduce`` (long edge),
  box fitting (fit, crop, fill, pad)
- ``encode``:   one encoder for JPEG, WebP, AVIF and PNG (speed settings from DESIGN.md)
- ``media``:    batch inputs: stills, camera RAW and video frames, on top of ``decode``
- ``shared``:   one decode shared by several consumers of a piece of work (stages 5–6:
  the scoring input and the model-ready image derived from one reduced decode)
- ``stats``:    the one ``ImageStats`` (tonal values 0–1), the pHash, fallback scores

It imports only ``galleryflow.core`` (the import contract in pyproject.toml).
"""
