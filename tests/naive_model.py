"""Slow, obviously-correct references for stgkern.model's baselines (plain loops)."""
import numpy as np


def naive_popularity_ranking(train_items, n_items, seen, k):
    """Items by training count descending, ties to the lower id, ``seen`` (a set) left out."""
    counts = np.bincount(np.asarray(train_items), minlength=n_items)
    order = sorted(range(n_items), key=lambda i: (-counts[i], i))
    out = [i for i in order if i not in seen][:k]
    return out + [-1] * (k - len(out))


def naive_markov_ranking(sequences, last_item, n_items, seen, k):
    """Successor counts of ``last_item`` over all consecutive pairs, popularity breaking ties."""
    succ = np.zeros(n_items)
    counts = np.zeros(n_items)
    for seq in sequences:
        for a, b in zip(seq[:-1], seq[1:]):
            if a == last_item:
                succ[b] += 1
        for a in seq:
            counts[a] += 1
    order = sorted(range(n_items), key=lambda i: (-succ[i], -counts[i], i))
    out = [i for i in order if i not in seen][:k]
    return out + [-1] * (k - len(out))
