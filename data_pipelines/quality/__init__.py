"""Data-quality filters of ``diff2lip-preprocess``: shot cuts, audio-visual offset and sync
confidence, and the quality report.

* :mod:`.shots`: PySceneDetect cuts and the shots a clip splits into.
* :mod:`.sync`: the scorer choice, the offset search (syncnet_python protocol) and
  the corrected confidence of a segment.
* :mod:`.report`: ``OUT/report.json`` / ``report.md`` from the per-clip outcomes.
* :mod:`.flags`: the CLI flags of the filters and their checks.
"""
