"""Sequential pieces of the synthetic log generator (stgkern.data.synthetic_log)."""
import numba


@numba.njit(cache=True)
def follow_walk(item, follow, succ, pick):
    """item[k] = succ[item[k-1], pick[k]] wherever follow[k]; in order, since each step reads the last."""
    for k in range(item.shape[0]):
        if follow[k]:
            item[k] = succ[item[k - 1], pick[k]]
    return item
