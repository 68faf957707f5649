"""Output file naming for ``SaveImage``."""

from __future__ import annotations

from shared.data.case_names import case_name

__all__ = ["case_name_formatter"]


def case_name_formatter(metadict: dict, saver) -> dict:
    """``SaveImage(output_name_formatter=...)``: name outputs after the case, not the first modality's file."""
    return {"subject": case_name(metadict.get("filename_or_obj", "case")), "idx": metadict.get("patch_index")}
