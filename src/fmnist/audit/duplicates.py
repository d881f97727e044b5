"""Exact and near duplicates within the training set, within the test set and between the two.

Exact: the same pixels (a hash of the 8-bit values). Near: the cosine similarity of two images after
subtracting the training set's mean image, at or above a threshold (README, "Auditing the data",
says why 0.99). Comparing every pair at 784 values is 7.7 TFLOP for 70,000 images; instead each
image's nearest neighbours are found in a 64-dimensional PCA projection, and those candidates are
measured on the full pixels. A group of near-copies larger than the neighbours searched would be
under-counted that way, so every pair within each group the found pairs connect is measured too.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import torch
import torch.nn.functional as F

COLUMNS = ["split_a", "index_a", "split_b", "index_b", "similarity"]
DIMS, NEIGHBOURS, CHUNK = 64, 5, 1024


def exact_pairs(pixels: torch.Tensor) -> set[tuple[int, int]]:
    """Pairs (i < j) of rows with identical 8-bit pixels."""
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i, row in enumerate((pixels * 255).round().to(torch.uint8).numpy()):
        groups[hashlib.blake2b(row.tobytes(), digest_size=16).digest()].append(i)
    return {(a, b) for group in groups.values() for k, a in enumerate(group) for b in group[k + 1 :]}


def neighbour_pairs(vectors: torch.Tensor, neighbours: int = NEIGHBOURS, seed: int = 0) -> set[tuple[int, int]]:
    """Pairs (i < j) where j is among i's nearest `neighbours` by cosine in a PCA projection."""
    n = len(vectors)
    k = min(neighbours, n - 1)
    if k < 1:
        return set()
    with torch.random.fork_rng(devices=[]):  # pca_lowrank draws random numbers: seeded, and no one else's
        torch.manual_seed(seed)
        _, _, basis = torch.pca_lowrank(vectors, q=min(DIMS, *vectors.shape), center=False)
    z = F.normalize(vectors @ basis, dim=1)
    pairs = set()
    for start in range(0, n, CHUNK):
        sim = z[start : start + CHUNK] @ z.T
        rows = torch.arange(start, start + len(sim))
        sim[rows - start, rows] = -2.0  # not itself
        for i, js in zip(rows.tolist(), sim.topk(k, dim=1).indices.tolist()):
            pairs.update((min(i, j), max(i, j)) for j in js)
    return pairs


def measured(unit: torch.Tensor, pairs: list[tuple[int, int]], threshold: float) -> dict[tuple[int, int], float]:
    """The pairs whose full-pixel cosine is at least `threshold`, with it."""
    found = {}
    for start in range(0, len(pairs), CHUNK * 8):  # 8,192 pairs at a time: 80 MB, not gigabytes
        a, b = torch.tensor(pairs[start : start + CHUNK * 8]).T
        sims = (unit[a] * unit[b]).sum(1).tolist()
        found.update({(i, j): s for i, j, s in zip(a.tolist(), b.tolist(), sims) if s >= threshold})
    return found


def groups(pairs) -> list[list[int]]:
    """The connected groups of images that `pairs` join (union-find), each sorted."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        parent.setdefault(i, i)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = defaultdict(list)
    for i in list(parent):
        members[root(i)].append(i)
    return [sorted(g) for g in members.values()]


def pairs_within(found_groups: list[list[int]]) -> set[tuple[int, int]]:
    return {(a, b) for g in found_groups if len(g) > 2 for k, a in enumerate(g) for b in g[k + 1 :]}


def find_duplicates(train: torch.Tensor, test: torch.Tensor, threshold: float = 0.99, seed: int = 0) -> list[dict]:
    """Duplicate pairs over both sets (rows of COLUMNS), the most similar first; exact ones have
    similarity 1. Indices are 0-based positions in each set's IDX file."""
    pixels = torch.cat([train, test]).reshape(len(train) + len(test), -1).float()
    exact = exact_pairs(pixels)
    pixels -= pixels[: len(train)].mean(0)  # in place, as below: 220 MB a copy at full size
    candidates = sorted(neighbour_pairs(pixels, seed=seed) - exact)
    unit = F.normalize(pixels, dim=1, out=pixels)
    found = {pair: 1.0 for pair in exact}
    found.update(measured(unit, candidates, threshold))
    within = sorted(pairs_within(groups(found)) - set(found))  # a group's members beyond the neighbours
    found.update(measured(unit, within, threshold))

    def where(i: int) -> tuple[str, int]:
        return ("train", i) if i < len(train) else ("test", i - len(train))

    rows = []
    for (i, j), s in sorted(found.items(), key=lambda item: (-item[1], item[0])):
        (split_a, index_a), (split_b, index_b) = where(i), where(j)
        similarity = 1.0 if (i, j) in exact else min(round(s, 6), 0.999999)  # 1 means the same pixels
        rows.append(dict(zip(COLUMNS, (split_a, index_a, split_b, index_b, similarity))))
    return rows
