"""Semantic diversity of caption corpora (Synth² section 4.2.2, appendix A.3, Table 8, Figure 5).

Captions are embedded (by default the frozen LM's mean-pooled last hidden states),
the pooled corpora are co-clustered with k-means, k is chosen by the elbow of the
within-cluster sum of squares (the paper found 20), and each corpus is summarised by
its normalised cluster sizes, concentration (share in its top-3 / top-5 clusters;
lower = more diverse) and entropy over all clusters (bits; higher = more uniform).
By default each corpus is centred first (see `DiversityConfig.center`), and the clusters
are fitted on the same number of captions from every corpus (`DiversityConfig.balance`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans

from synth2.errors import UserError
from synth2.world.vocab import COLOUR_WORDS, SHAPE_WORDS


@dataclass
class DiversityConfig:
    k: int = 0  # 0 = choose by the elbow over `k_range`
    k_range: list[int] | None = None
    max_per_corpus: int = 5000
    seed: int = 0
    # Subtract each corpus's mean embedding before co-clustering (off: the paper co-clusters the
    # embeddings as they are). Only for embedders whose corpora differ mainly in writing style: the
    # mean also carries a corpus's skew over concepts, the very thing concentration measures, so on a
    # content embedder centring hides it (quick world, concept embedder: paired captions' top-3
    # share 56% uncentred, 27% centred).
    center: bool = False
    # Fit the elbow and k-means on an equal-size random sample of every corpus (the smallest
    # corpus's size), then assign every caption to its nearest centroid. The paper co-clusters
    # corpora of equal size (GenPair, WebLI and LTIP at 1M each, Table 3); with unequal ones the
    # largest places most centroids and the others' clusters are merged.
    balance: bool = True


@torch.no_grad()
def embed_with_lm(lm, captions: list[str], batch_size: int = 128) -> np.ndarray:
    """Mean-pooled last hidden states of the frozen LM over each caption's tokens (BOS excluded)."""
    rows = []
    for start in range(0, len(captions), batch_size):
        ids, mask = lm.tokenize(captions[start : start + batch_size])
        states = lm.text_states(ids, mask)
        weights = mask.clone()
        weights[:, 0] = False
        weights = weights.float().unsqueeze(-1)
        weights = weights.to(states.device)
        rows.append(((states * weights).sum(1) / weights.sum(1).clamp(min=1)).cpu())
    return torch.cat(rows).numpy()


def embed_with_world_concepts(captions: list[str], shapes: list[str], colours: list[str]) -> np.ndarray:
    """Which of the world's shapes and colours each caption mentions (unit-normalised counts).

    A content-only embedding, possible because the embedded world's vocabulary is known:
    it ignores wording and style, which dominate a small LM's pooled states (corpora in
    different styles then co-cluster by style, not by what they describe)."""
    concepts = [(f"shape:{s}", SHAPE_WORDS[s]) for s in shapes] + [(f"colour:{c}", COLOUR_WORDS[c]) for c in colours]
    # longest phrases first, so "hollow square" counts as a frame, not a square
    phrases = sorted(((w, i) for i, (_, words) in enumerate(concepts) for w in words), key=lambda x: -len(x[0]))
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w, _ in phrases) + r")s?\b")
    index = dict(phrases)
    out = np.zeros((len(captions), len(concepts)))
    for row, caption in enumerate(captions):
        for match in pattern.finditer(caption.lower()):
            out[row, index[match.group(1)]] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def embed_with_sentence_transformer(path: str | Path, captions: list[str]) -> np.ndarray:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError("--sentence-transformer needs the sentence-transformers package: pip install 'synth2[embed]'") from None

    return np.asarray(SentenceTransformer(str(path), device="cpu").encode(captions, batch_size=128, normalize_embeddings=True))


def elbow(embeddings: np.ndarray, ks: list[int], seed: int) -> tuple[int, dict[int, float]]:
    """k at the elbow of WCSS(k): the point farthest from the chord joining the curve's ends
    (in normalised coordinates, WCSS on a log scale), and the WCSS per k.

    The log scale makes the elbow about relative reductions: on a linear scale the first,
    huge drops dominate and the chord method stops a cluster early."""
    wcss = {k: float(KMeans(k, n_init=3, random_state=seed).fit(embeddings).inertia_) for k in ks}
    x = (np.array(ks) - ks[0]) / max(ks[-1] - ks[0], 1)
    y = np.log(np.maximum([wcss[k] for k in ks], 1e-12))
    y = (y - y.min()) / max(y.max() - y.min(), 1e-12)
    # distance to the line from (0, 1) to (1, 0)
    distance = np.abs(x + y - 1) / np.sqrt(2)
    return ks[int(np.argmax(distance))], wcss


def cluster_stats(labels: np.ndarray, k: int) -> dict:
    sizes = np.bincount(labels, minlength=k) / max(len(labels), 1)
    ordered = np.sort(sizes)[::-1]
    nz = sizes[sizes > 0]
    return {
        "cluster_sizes": sizes.round(5).tolist(),
        "concentration_top3": float(ordered[:3].sum()),
        "concentration_top5": float(ordered[:5].sum()),
        "entropy": float(-(nz * np.log2(nz)).sum()),
    }


def diversity(corpora: dict[str, list[str]], embed, cfg: DiversityConfig) -> dict:
    """Co-cluster the corpora; `embed(captions) -> (N, D)` embeds a list of captions."""
    rng = np.random.default_rng(cfg.seed)
    names = list(corpora)
    chunks, owners = [], []
    for name in names:
        captions = corpora[name]
        if not captions:
            raise ValueError(f"corpus {name!r} is empty")
        if len(captions) > cfg.max_per_corpus:
            captions = [captions[i] for i in sorted(rng.choice(len(captions), cfg.max_per_corpus, replace=False))]
        vectors = np.asarray(embed(captions), dtype=np.float64)
        chunks.append(vectors - vectors.mean(0) if cfg.center else vectors)
        owners += [name] * len(captions)
    embeddings = np.concatenate(chunks)
    owners_arr = np.array(owners)
    fit_per_corpus = min(len(c) for c in chunks) if cfg.balance else None
    fit = np.concatenate([c[np.sort(rng.choice(len(c), fit_per_corpus, replace=False))] for c in chunks]) if cfg.balance else embeddings
    ks = cfg.k_range or list(range(2, 41, 2))
    # more clusters than distinct points leaves empty clusters (sklearn warns) and WCSS is 0 from there
    distinct = len(np.unique(fit, axis=0))
    ks = [k for k in ks if k < distinct]
    if not ks and not cfg.k:
        raise ValueError(f"the corpora give only {distinct} distinct embeddings: too few to choose k by the elbow (set k)")
    chosen, wcss = elbow(fit, ks, cfg.seed) if ks else (cfg.k, {})
    k = cfg.k or chosen
    labels = KMeans(k, n_init=4, random_state=cfg.seed).fit(fit).predict(embeddings)
    result = {"k": k, "elbow_k": chosen, "fit_per_corpus": fit_per_corpus, "wcss": {str(kk): v for kk, v in wcss.items()}, "corpora": {}}
    for name in names:
        own = labels[owners_arr == name]
        result["corpora"][name] = {"captions": int(len(own)), **cluster_stats(own, k)}
    return result


def plot_diversity(result: dict, path: str | Path) -> Path:
    """Figure 5: normalised cluster sizes per corpus (clusters ordered by pooled size), plus the elbow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = result["corpora"]
    k = result["k"]
    pooled = np.sum([np.array(c["cluster_sizes"]) for c in corpora.values()], axis=0)
    order = np.argsort(pooled)[::-1]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(corpora)
    for i, (name, stats) in enumerate(corpora.items()):
        sizes = np.array(stats["cluster_sizes"])[order]
        ax.bar(np.arange(k) + i * width, sizes, width, label=f"{name} (top-5 {stats['concentration_top5']:.0%}, H {stats['entropy']:.2f})")
    ax.set_xlabel("cluster (by pooled size)")
    ax.set_ylabel("share of corpus")
    ax.legend(fontsize=8)
    ks = sorted(int(kk) for kk in result["wcss"])
    ax2.plot(ks, [result["wcss"][str(kk)] for kk in ks], marker="o")
    ax2.axvline(result["elbow_k"], color="grey", linestyle="--")
    ax2.set_xlabel("k")
    ax2.set_ylabel("WCSS")
    ax2.set_title(f"elbow at k={result['elbow_k']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
