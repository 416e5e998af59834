"""Triage view (`modelseal explain`): each finding with its surroundings, for a human holding a suspect model.

collect.py reads the file again (never executing it) and gathers context per finding; render_text.py and
render_html.py present it. Everything shown comes from an attacker-controlled file: renderers escape it all.
"""

from __future__ import annotations
