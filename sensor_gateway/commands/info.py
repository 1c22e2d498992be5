"""``crampwatch info``: header facts of a recording, without reading its samples."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from sensor_gateway.commands._argtypes import count

if TYPE_CHECKING:
    from sensor_gateway.recordings import ChannelInfo, RecordingInfo
    from sensor_gateway.truth import GroundTruth

HELP = "show format, start, duration, channels, annotations and ground truth of a recording"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch info``."""
    parser.add_argument("file", metavar="FILE", help="recording (EDF/EDF+/BDF/BDF+ or CSV)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--annotations",
        type=count,
        default=10,
        metavar="N",
        help="list the first N annotations (default: 10; the total is always shown)",
    )


def _channel(ch: ChannelInfo) -> dict[str, Any]:
    return {"label": ch.label, "unit": ch.unit, "fs_hz": ch.fs_hz, "n_samples": ch.n_samples}


def _truth_doc(truth: GroundTruth) -> dict[str, Any]:
    return {
        "label_kind": truth.label_kind,
        "n_onsets": len(truth.onsets_s),
        "has_offsets": truth.offsets_s is not None,
        "burst_count": truth.burst_count,
        "n_events": len(truth.events),
        "event_kinds": sorted({e.kind for e in truth.events}),
    }


def info_document(
    info: RecordingInfo, truth: GroundTruth | None, n_annotations: int
) -> dict[str, Any]:
    """The machine-readable form of ``crampwatch info`` (what ``--json`` prints).

    Parameters
    ----------
    info
        Header facts of the recording.
    truth
        Its sidecar ground truth, or ``None``.
    n_annotations
        How many annotations to list (all are counted).

    Returns
    -------
    dict
        JSON-serialisable document.
    """
    return {
        "file": str(info.path),
        "format": info.file_format,
        "start": info.start.isoformat(),
        "duration_s": info.duration_s,
        "channels": [_channel(c) for c in info.channels],
        "emg": {**_channel(info.emg), "scale_to_uv": info.emg_scale_to_uv},
        "acc": [_channel(c) for c in info.acc],
        "n_annotations": len(info.annotations),
        "annotations": [
            {"onset_s": a.onset_s, "duration_s": a.duration_s, "text": a.text}
            for a in info.annotations[:n_annotations]
        ],
        "truth": None if truth is None else _truth_doc(truth),
    }


def _fs(value: float) -> str:
    return f"{value:g}"


def format_info(doc: dict[str, Any]) -> str:
    """Human-readable text of an :func:`info_document`."""
    emg, acc = doc["emg"], doc["acc"]
    scale = emg["scale_to_uv"]
    scale_text = (
        "no physical unit, passed through unscaled" if scale is None else f"x{scale:g} to uV"
    )
    lines = [
        f"file:        {doc['file']}",
        f"format:      {doc['format']}",
        f"start:       {doc['start']}",
        f"duration:    {doc['duration_s']:.3f} s",
        "channels:",
    ]
    width = max([len(c["label"]) for c in doc["channels"]] + [5])
    lines.append(f"  {'label':<{width}}  {'unit':<6} {'rate_hz':>9} {'samples':>11}")
    for c in doc["channels"]:
        lines.append(
            f"  {c['label']:<{width}}  {c['unit'] or '-':<6} {_fs(c['fs_hz']):>9} "
            f"{c['n_samples']:>11}"
        )
    lines.append(
        f"EMG:         {emg['label']} ({emg['unit'] or 'no unit'}, {_fs(emg['fs_hz'])} Hz, "
        f"{scale_text})"
    )
    if acc:
        labels = ", ".join(c["label"] for c in acc)
        lines.append(f"ACC:         {labels} ({acc[0]['unit']}, {_fs(acc[0]['fs_hz'])} Hz)")
    else:
        lines.append("ACC:         none")
    shown = doc["annotations"]
    total = doc["n_annotations"]
    more = f" (first {len(shown)} shown)" if len(shown) < total else ""
    lines.append(f"annotations: {total}{more}")
    for a in shown:
        dur = "-" if a["duration_s"] is None else f"{a['duration_s']:.4f}"
        lines.append(f"  {a['onset_s']:>12.4f}  {dur:>10}  {a['text']}")
    truth = doc["truth"]
    if truth is None:
        lines.append("truth:       none (no .truth.json sidecar)")
    else:
        parts = [f"{truth['label_kind']} labels", f"{truth['n_onsets']} onsets"]
        parts.append("with offsets" if truth["has_offsets"] else "no offsets")
        if truth["burst_count"] is not None:
            parts.append(f"burst_count {truth['burst_count']}")
        if truth["n_events"]:
            parts.append(f"{truth['n_events']} events ({', '.join(truth['event_kinds'])})")
        lines.append(f"truth:       {', '.join(parts)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the recording's header facts (text or ``--json``); exit 0."""
    from sensor_gateway.recordings import open_recording  # noqa: PLC0415 (keep --help fast)
    from sensor_gateway.truth import load_truth  # noqa: PLC0415

    with open_recording(args.file) as reader:
        info = reader.info
    doc = info_document(info, load_truth(args.file), args.annotations)
    if args.json:
        print(json.dumps(doc, indent=1, allow_nan=False))
    else:
        print(format_info(doc))
    return 0
