"""synth2: synthetic captions and image embeddings for training visual-language models.

The Python API mirrors the CLI; see `synth2.api`.
"""

import transformers as _transformers

from synth2.api import caption, captions, diversity, encode, generate, ingest, inspect, open_run, reproduce, score, train, world

# model loading/saving progress bars would interleave with synth2's own
_transformers.utils.logging.disable_progress_bar()
_transformers.utils.logging.set_verbosity_error()

__version__ = "0.1.0"

__all__ = ["caption", "captions", "diversity", "encode", "generate", "ingest", "inspect", "open_run", "reproduce", "score", "train", "world", "__version__"]
