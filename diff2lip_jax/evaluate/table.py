"""The Markdown table of evaluation results (``diff2lip-evaluate --table``, ``--table_from``).

Shaped like the paper's Table 2: one row per method, a column group per (dataset,
setting): reconstruction PSNR↑ SSIM↑ FID↓ LMD↓ LSE-C↑ LSE-D↓, cross FID↓ LSE-C↑
LSE-D↓. Groups with mouth ground truth (synthetic clips) add the mouth r columns of
:mod:`.mouth`: reconstruction "mouth r↑" (the mouth follows its own audio), cross
"mouth r sync↑" (it follows the driving audio), "mouth r copy" (it follows the video
source's mouth; a lip-sync model should be low, near chance) and "mouth r chance"
(the two true openings' correlation). Below the generated rows come the baseline rows
of :mod:`.baselines`, "real (audio source)" and "unsynced (video source + driving
audio)": a method's LSE-C/D and mouth r sync read between unsynced (floor) and real
(ceiling). "–" = not computed (reasons in the notes) or r undefined, "∞" =
identical frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from diff2lip_jax.evaluate.lse import VSHIFT

# not_computed reasons the notes do not repeat (the column is simply not part of the setting, or was not asked for).
NO_GROUND_TRUTH = "not defined in the cross setting (no ground-truth video for the new audio)"
NOT_REQUESTED = "not requested"

__all__ = ["NO_GROUND_TRUTH", "NOT_REQUESTED", "render_table"]

_COLUMNS = {
    "reconstruction": (
        ("psnr", "PSNR↑", 2),
        ("ssim", "SSIM↑", 3),
        ("fid", "FID↓", 2),
        ("lmd", "LMD↓", 3),
        ("lse_c", "LSE-C↑", 3),
        ("lse_d", "LSE-D↓", 3),
    ),
    "cross": (("fid", "FID↓", 2), ("lse_c", "LSE-C↑", 3), ("lse_d", "LSE-D↓", 3)),
}
_MOUTH_COLUMNS = {
    "reconstruction": (("mouth_sync", "mouth r↑", 3),),
    "cross": (
        ("mouth_sync", "mouth r sync↑", 3),
        ("mouth_copy", "mouth r copy", 3),
        ("mouth_chance", "mouth r chance", 3),
    ),
}
_HOW_TO_READ = (
    "- Baselines, from the source files only: real = the audio source's own video with its own audio (the "
    "ceiling); unsynced = the video source untouched with the driving audio (the floor). Both: LSE and mouth r only."
)
_MOUTH_NOTE = (
    "- mouth r: Pearson r, per pair, of the video's mouth opening (dark-pixel share in the video source's steady true "
    "mouth box) with the driving clip's true opening (sync), the video source's own (copy), and of the two true "
    "openings (chance); mean over pairs where defined."
)


def _cell(value: Any, decimals: int) -> str:
    if value is None or value == "nan" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value in ("inf", float("inf")):
        return "∞"
    return f"{float(value):.{decimals}f}"


def _has_mouth(r: dict[str, Any]) -> bool:
    rows = [r, *r.get("baselines", {}).values()]
    return any("mouth_sync" in row.get("metrics", {}) for row in rows)


def _notes(r: dict[str, Any]) -> list[str]:
    """A result's notes: counts, how metrics were computed, metrics not computed, baselines."""
    where = f"{r.get('method')} / {r.get('dataset')} {r['mode']}"
    s = r.get("settings", {})
    done = r.get("metrics", {})
    how = [f"PSNR/SSIM/FID on {s.get('on', 'crops')}"]
    if "fid" in done:
        how.append(
            f"FID via {s.get('fid_method', 'sqrtm')}"
            + (" with RANDOM Inception weights" if s.get("inception_weights") == "random" else "")
        )
    if "lse_c" in done:
        how.append(f"LSE scorer {s.get('syncnet_kind') or 'custom'}, vshift {s.get('vshift', VSHIFT)}")
    if "mouth_pairs" in done:
        undefined = sum((done.get("mouth_undefined") or {}).values())
        how.append(f"mouth r on {done['mouth_pairs']} pairs" + (f" ({undefined} r undefined)" if undefined else ""))
    notes = [
        f"- {where}: {r['num_evaluated']}/{r['num_pairs']} pairs evaluated, {r['num_missing']} "
        f"generated files missing, {r['num_failed']} failed; {'; '.join(how)}."
    ]
    for m, why in r.get("not_computed", {}).items():
        if why not in (NO_GROUND_TRUTH, NOT_REQUESTED):
            notes.append(f"  - {m.upper()} not computed: {why}")
    base = r.get("baselines") or {}
    if base:
        counts = ", ".join(
            f"{b['method']} {b['num_evaluated']} pairs" + (f" ({b['num_failed']} failed)" if b["num_failed"] else "")
            for b in base.values()
        )
        notes.append(f"  - baselines: {counts}.")
    return notes


def render_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown table of results (JSON-safe dicts of :func:`.run.evaluate_pairs`); see module doc.

    Baseline rows of several results that cover the same group are shown once when
    they agree; differing ones (other pairs evaluated) get ``[pairs of <method>]``.
    """
    groups: list[tuple[str, str]] = []
    rows: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    base_rows: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    mouth_groups = set()
    for r in results:
        key = (r.get("dataset") or "data", r["mode"])
        if key not in groups:
            groups.append(key)
        if _has_mouth(r):
            mouth_groups.add(key)
        rows.setdefault(r.get("method") or "method", {})[key] = r
        for b in (r.get("baselines") or {}).values():
            label = b["method"]
            seen = base_rows.get(label, {}).get(key)
            if seen is not None and seen["metrics"] == b["metrics"]:
                continue
            if seen is not None:
                label = f"{label} [pairs of {r.get('method')}]"
            base_rows.setdefault(label, {})[key] = b
    columns = {g: _COLUMNS[g[1]] + (_MOUTH_COLUMNS[g[1]] if g in mouth_groups else ()) for g in groups}
    header = ["Method"] + [
        f"{d} {'recon.' if m == 'reconstruction' else 'cross'} {label}"
        for d, m in groups
        for _, label, _ in columns[(d, m)]
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    for method, by_group in [*rows.items(), *base_rows.items()]:
        cells = [method]
        for g in groups:
            r = by_group.get(g)
            cells += [_cell(r["metrics"].get(k) if r else None, dec) for k, _, dec in columns[g]]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [line for r in results for line in _notes(r)]
    if base_rows:
        notes.append(_HOW_TO_READ)
    if mouth_groups:
        notes.append(_MOUTH_NOTE)
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
