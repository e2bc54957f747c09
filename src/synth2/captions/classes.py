"""Class vocabularies for class-based prompting (Synth² section 3.1).

- `world`: the embedded world's shape classes;
- `imagenet21k`: ImageNet-21K-P winter21's 10,450 classes, named from WordNet 3.0
  (Debian's wordnet-base: /usr/share/wordnet/data.noun). Every winter21 id is a
  WordNet noun offset ("n02084071" -> offset 02084071); names that several synsets
  share ("crane" the bird and the machine) get their hypernym in brackets;
- a user file: one class per line (txt) or a JSON list of strings.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from importlib import resources
from pathlib import Path

WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/opt/homebrew/share/wordnet")


class WordNetMissing(FileNotFoundError):
    pass


def winter21_wnids() -> list[str]:
    text = resources.files("synth2.captions").joinpath("data/imagenet21k_winter21_wnids.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.startswith("n")]


def find_wordnet(directory: str | Path | None = None) -> Path:
    candidates = [directory] if directory else [os.environ.get("WNHOME", ""), *WORDNET_DIRS]
    for candidate in candidates:
        if candidate and (Path(candidate) / "data.noun").exists():
            return Path(candidate)
        if candidate and (Path(candidate) / "dict" / "data.noun").exists():
            return Path(candidate) / "dict"
    raise WordNetMissing(
        "ImageNet-21k class names come from WordNet 3.0's noun data, which was not found "
        f"(looked in {', '.join(str(c) for c in candidates if c)}). Install it with "
        "`apt-get install wordnet-base` (Debian/Ubuntu), or set WNHOME to a WordNet 3.0 directory."
    )


def _parse_nouns(path: Path, wanted: set[int]) -> dict[int, tuple[list[str], list[int]]]:
    """offset -> (lemmas, hypernym offsets) for the wanted offsets (and, later, their hypernyms)."""
    synsets: dict[int, tuple[list[str], list[int]]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" | ")[0].split()
            offset = int(fields[0])
            count = int(fields[3], 16)
            lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
            pointers_at = 4 + 2 * count
            n_pointers = int(fields[pointers_at])
            hypernyms = []
            for p in range(n_pointers):
                symbol, target = fields[pointers_at + 1 + 4 * p], fields[pointers_at + 2 + 4 * p]
                if symbol in ("@", "@i"):
                    hypernyms.append(int(target))
            synsets[offset] = (lemmas, hypernyms)
    missing = wanted - set(synsets)
    if missing:
        raise ValueError(f"{path}: {len(missing)} winter21 ids are not WordNet 3.0 nouns (e.g. {sorted(missing)[:3]})")
    return synsets


def imagenet21k_classes(wordnet: str | Path | None = None) -> list[str]:
    """The 10,450 winter21 class names, unique, in the order of the class ids."""
    offsets = [int(w[1:]) for w in winter21_wnids()]
    synsets = _parse_nouns(find_wordnet(wordnet) / "data.noun", set(offsets))
    names = [synsets[o][0][0] for o in offsets]
    repeated = {n for n, c in Counter(names).items() if c > 1}
    unique = []
    for offset, name in zip(offsets, names):
        if name in repeated:
            hypernyms = synsets[offset][1]
            parent = synsets[hypernyms[0]][0][0] if hypernyms and hypernyms[0] in synsets else "n%08d" % offset
            name = f"{name} ({parent})"
        unique.append(name)
    # a handful share name and hypernym too: the offset settles those
    still = {n for n, c in Counter(unique).items() if c > 1}
    return [f"{n} [n{o:08d}]" if n in still else n for n, o in zip(unique, offsets)]


def load_classes(spec: str, world_classes: list[str] | None = None) -> list[str]:
    """`world`, `imagenet21k`, or a path to a txt (one per line) or JSON list file."""
    if spec == "world":
        if not world_classes:
            raise ValueError("--classes world needs the world's vocabulary")
        return list(world_classes)
    if spec == "imagenet21k":
        return imagenet21k_classes()
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{spec}: not 'world', 'imagenet21k' or an existing class file")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
            raise ValueError(f"{path}: expected a JSON list of class names")
        classes = data
    else:
        classes = [line.strip() for line in path.read_text().splitlines()]
    classes = [c for c in classes if c and not c.startswith("#")]
    if not classes:
        raise ValueError(f"{path}: no classes found")
    return classes
