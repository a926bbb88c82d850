"""The quality report of a preprocessing run: ``OUT/report.json`` and ``OUT/report.md``.

Built from one outcome per input clip (the local path's cache results, or the
outcome lines a Beam run writes), so both paths report the same:

* clips and segments in and out (a clip is "out" when at least one of its
  segments was kept; segments in = the shots of the clips that could be read
  and were long enough to be cut);
* ``inputs``: every input clip exactly once, with its status, and its shots
  (kept or dropped, each with the reason);
* ``drops``: every dropped clip or segment with its reason code and line;
  ``counts``: drops per reason code;
* the offset histogram and confidence quantiles of the scored segments.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

REASONS = {
    "unreadable": "not a readable video with an audio stream (missing, empty, truncated, not media)",
    "too_short": "fewer frames than --min_frames, or no 5-frame window with faces and audio",
    "cut_too_short": "a shot between cuts shorter than --min_segment_seconds",
    "face_rate": "the face detector found a face in fewer than --min_face_rate of the frames",
    "offset_too_large": "audio-visual offset beyond --max_av_offset frames",
    "sync_confidence": "sync confidence after offset correction below --min_sync_confidence",
    "error": "an unexpected error (the line says which)",
}
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def outcome_from_result(result) -> dict[str, Any]:
    """A :class:`~data_pipelines.builders.process.ClipResult` as a report outcome dict."""
    s = result.source
    return {
        "clip_id": s.clip_id,
        "source": s.path,
        "split": s.split,
        "reason": "" if result.ok else result.reason,
        "code": "" if result.ok else result.code,
        "shots": list(result.shots),
    }


def build_report(outcomes: Iterable[dict[str, Any]], sync_filter: str) -> dict[str, Any]:
    """The report dict from per-clip outcome dicts (``clip_id, source, split, reason, code, shots``).

    ``sync_filter`` is the filter's status line (on with which scorer, or off).
    """
    inputs, drops = [], []
    offsets: Counter = Counter()
    confidences = []
    for o in sorted(outcomes, key=lambda o: o["clip_id"]):
        shots = o.get("shots") or []
        kept = [s for s in shots if s["status"] == "kept"]
        status = "ok" if kept else "failed"
        inputs.append({"clip_id": o["clip_id"], "source": o["source"], "split": o.get("split", ""), "status": status})
        inputs[-1].update(reason=o["reason"] if not kept else "", code=o["code"] if not kept else "", shots=shots)
        if not shots:  # failed as a whole, before it was cut
            drops.append({"id": o["clip_id"], "source": o["source"], "code": o["code"], "reason": o["reason"]})
        for s in shots:
            if s["status"] == "dropped":
                drops.append({"id": s["id"], "source": o["source"], "code": s["code"], "reason": s["reason"]})
            if s.get("sync_confidence") is not None:
                offsets[int(s["av_offset"])] += 1
                confidences.append(float(s["sync_confidence"]))
    segments_in = sum(len(i["shots"]) for i in inputs)
    segments_out = sum(s["status"] == "kept" for i in inputs for s in i["shots"])
    conf = np.asarray(confidences, np.float64)
    return {
        "sync_filter": sync_filter,
        "clips": {"in": len(inputs), "out": sum(i["status"] == "ok" for i in inputs)},
        "segments": {"in": segments_in, "out": segments_out},
        "counts": dict(sorted(Counter(d["code"] for d in drops).items())),
        "reasons": REASONS,
        "offset_histogram": {str(k): v for k, v in sorted(offsets.items())},
        "confidence_quantiles": {f"q{round(q * 100):02d}": float(np.quantile(conf, q)) for q in QUANTILES}
        if conf.size
        else {},
        "drops": drops,
        "inputs": inputs,
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown summary (counts, reasons, offsets, confidences, each drop)."""
    c, s = report["clips"], report["segments"]
    lines = [
        "# Preprocessing quality report",
        "",
        f"- {report['sync_filter']}",
        f"- clips: {c['in']} in, {c['out']} out; segments: {s['in']} in, {s['out']} out",
        "",
        "## Drops by reason",
        "",
        "| reason | count | meaning |",
        "| --- | ---: | --- |",
    ]
    lines += [f"| {k} | {n} | {REASONS.get(k, '')} |" for k, n in report["counts"].items()] or ["| (none) | 0 | |"]
    if report["offset_histogram"]:
        lines += ["", "## Audio-visual offsets (frames, syncnet_python sign)", "", "| offset | segments |"]
        lines += ["| ---: | ---: |"] + [f"| {k} | {v} |" for k, v in report["offset_histogram"].items()]
    if report["confidence_quantiles"]:
        q = report["confidence_quantiles"]
        lines += ["", "## Sync confidence after correction", "", "| " + " | ".join(q) + " |"]
        lines += ["|" + " ---: |" * len(q), "| " + " | ".join(f"{v:.2f}" for v in q.values()) + " |"]
    lines += ["", "## Every drop", ""]
    lines += [f"- `{d['id']}` ({d['code']}): {d['reason']}" for d in report["drops"]] or ["- none"]
    return "\n".join(lines) + "\n"


def _atomic_text(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_report(out: str | os.PathLike, report: dict[str, Any]) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ``out/report.json`` and ``out/report.md`` (atomically); returns their paths."""
    out = pathlib.Path(out)
    js, md = out / "report.json", out / "report.md"
    _atomic_text(js, json.dumps(report, indent=1) + "\n")
    _atomic_text(md, markdown(report))
    return js, md
