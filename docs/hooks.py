"""MkDocs hooks: pages whose content the code owns, so that they cannot drift from it.

``{{ config_reference }}`` becomes :func:`pipeline.config.reference_markdown` (every key, its type,
default and description, from the config dataclasses); ``{{ include PATH }}`` becomes the text of
a file of the repository (PATH relative to its root).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def on_page_markdown(markdown, page, config, files):
    if "{{ config_reference }}" in markdown:
        sys.path.insert(0, str(ROOT))
        from pipeline.config import reference_markdown

        markdown = markdown.replace("{{ config_reference }}", reference_markdown())
    return re.sub(r"\{\{ include (\S+) \}\}", lambda m: (ROOT / m.group(1)).read_text(), markdown)
