"""synth2: synthetic captions and image embeddings for training visual-language models.

The Python API mirrors the CLI; see `synth2.api`.
"""

from synth2.api import ingest, inspect, open_run, world

__version__ = "0.1.0"

__all__ = ["ingest", "inspect", "open_run", "world", "__version__"]
