"""synth2: synthetic captions and image embeddings for training visual-language models.

The Python API mirrors the CLI; see `synth2.api`. Its functions are importable from here
(`synth2.reproduce(...)`); they load on first use, so `import synth2.config` stays light.
"""

__version__ = "0.1.0"

__all__ = ["caption", "captions", "diversity", "encode", "generate", "ingest", "inspect", "open_run", "reproduce", "score", "train", "world", "__version__"]


def __getattr__(name: str):
    if name in __all__:
        from synth2 import api

        return getattr(api, name)
    raise AttributeError(f"module 'synth2' has no attribute {name!r}")
