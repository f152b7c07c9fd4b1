"""Flip audit of two models: which samples an update broke (negative flips) or fixed.

    audit = compare("m1.pt", "m2.pt", "digits", out="compare-m1-m2")   # from checkpoints
    audit = flip_audit(m1, m2, x, y, class_names=names)              # from models in memory
    write_audit(audit, "out", images=x)                              # index.html, audit.json, flips.parquet
    print(audit.summary())
"""

from .compare import SPLITS, LoadedPair, compare, load_pair, load_state_dict, output_count, split_tensors
from .core import FLIP_COLUMNS, FlipAudit, Predictions, Rate, flip_audit, format_metric, predict
from .images import pixel_range, thumbnail_png, to_pixels
from .page import AUDIT_FILES, GALLERY_LIMIT, render_html, write_audit

__all__ = ["AUDIT_FILES", "FLIP_COLUMNS", "GALLERY_LIMIT", "SPLITS", "FlipAudit", "LoadedPair", "load_pair", "Predictions", "Rate", "compare",
           "flip_audit", "format_metric", "load_state_dict", "output_count", "pixel_range", "predict",
           "render_html", "split_tensors", "thumbnail_png", "to_pixels", "write_audit"]
