"""Numba kernels of the compiled Soft-NMS in `pbd_deploy.core.nms` (imported only from there).

Layout shared by the kernels: `prepare` puts the M candidates in `order`, by class, then by
score descending, then by original index (a stable sort); `offsets` (C + 1,) marks where
each class starts; `start`, `end`, `length` = end - start and `score` are (M,) float64 in
that order, `orig` (M,) the original indices. Every arithmetic step is written exactly as
`pbd_deploy.core.metrics.segment_iou` and `pbd_deploy.core.postprocess.soft_nms` do it (no
fastmath, so no reassociation or fused multiply-add), which makes every value bit-identical
to numpy's, except one: numba's `exp` is the C library's, numpy's may be its own SIMD one
that differs in the last bit. Hence the two passes in `nms.py`: `soft_nms_merge(table=None)`
speculates with the C library's exp and records the IoU of each pick with every candidate of
its class that it overlaps, numpy computes the exact decays from those, and `soft_nms_merge`
with that table replays and reports whether it needed a pick the speculation did not make.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def prepare(segments, scores, labels, order):
    """The candidates in `order`, class offsets and a neighbour index.

    The candidates that can overlap b are by_start[lo:hi] of its class, with lo the first
    position whose running maximum end exceeds start[b] and hi the first whose start reaches
    end[b]: before lo every end is <= start[b], from hi on every start is >= end[b].

    Returns:
        (start, end, length, score, orig, offsets, by_start (M,) positions sorted by start
        within each class, their starts (M,), the running maximum of their ends (M,)).
    """
    m = len(order)
    start, end, score = np.empty(m), np.empty(m), np.empty(m)
    bounds = [0]
    for p in range(m):
        i = order[p]
        start[p], end[p], score[p] = segments[i, 0], segments[i, 1], scores[i]
        if p > 0 and labels[i] != labels[order[p - 1]]:
            bounds.append(p)
    bounds.append(m)
    offsets = np.array(bounds, np.int64)
    length = end - start
    by_start = np.empty(m, np.int64)
    first_start, max_end = np.empty(m), np.empty(m)
    for c in range(len(offsets) - 1):
        lo, hi = offsets[c], offsets[c + 1]
        by_start[lo:hi] = lo + np.argsort(start[lo:hi])
        running = -np.inf
        for r in range(lo, hi):
            running = max(running, end[by_start[r]])
            first_start[r], max_end[r] = start[by_start[r]], running
    return start, end, length, score, order, offsets, by_start, first_start, max_end


BLOCK = 32  # candidates per block of `_find_next`'s upper bounds


@numba.njit(cache=True)
def _find_next(work, alive, score, orig, lo, hi, bound, first_block):
    """The reference's argmax over the alive of class [lo, hi): the first maximum in original
    order, or -1.

    Scores only decay, so two upper bounds skip most candidates: the undecayed score (sorted
    descending, so the scan stops at the first block whose first score is below the best
    found) and `bound`, per block of BLOCK positions from `first_block` on, the largest alive
    score when the block was last scanned.
    """
    pos, value = -1, -np.inf
    for i in range((hi - lo + BLOCK - 1) // BLOCK):
        start = lo + i * BLOCK
        if pos >= 0 and score[start] < value:
            break
        if pos >= 0 and bound[first_block + i] < value:
            continue  # strict: a block bound equal to the best may hold a tie of lower index
        top = -np.inf
        for j in range(start, min(start + BLOCK, hi)):
            if alive[j]:
                w = work[j]
                top = max(top, w)
                if pos < 0 or w > value or (w == value and orig[j] < orig[pos]):
                    pos, value = j, w
        bound[first_block + i] = top
    return pos


@numba.njit(cache=True)
def _grow(array, size):
    bigger = np.empty(max(2 * len(array), size), array.dtype)
    bigger[: len(array)] = array
    return bigger


@numba.njit(cache=True)
def soft_nms_merge(cands, limit, gaussian, sigma, iou_threshold, min_score, table):
    """Per-class Soft-NMS merged best-first across classes, stopped after `limit` picks.

    Classes advance one pick at a time: the class whose next pick scores highest (ties to the
    lower class) pops it. Each class's picks have non-increasing scores, so this is the order
    of the reference's stable sort of all picks by score: score, then class, then pick.

    Args:
        cands: `prepare`'s output.
        table: None to speculate; or (picks (P,), row_start (P + 1,), row_j (R,), decay (R,)):
            the decays of pick picks[p] on candidates row_j[row_start[p]:row_start[p + 1]].

    Returns:
        (picks (n,) positions, their scores (n,), class positions (n,), ok, rows). Speculating:
        ok is True and rows = (row_start, row_j, row_iou) of each pick (empty unless gaussian).
        Replaying: ok is False when a pick had no row; the run stopped there.
    """
    start, end, length, score, orig, offsets, by_start, first_start, max_end = cands
    classes, m = len(offsets) - 1, len(score)
    replay = table is not None
    row_of = np.full(m, -1, np.int64)
    if replay:
        for p in range(len(table[0])):
            row_of[table[0][p]] = p
    work = score.copy()
    alive = work >= min_score
    first_block = np.zeros(classes + 1, np.int64)
    for c in range(classes):
        first_block[c + 1] = first_block[c] + (offsets[c + 1] - offsets[c] + BLOCK - 1) // BLOCK
    bound = np.full(first_block[classes], np.inf)
    nxt = np.empty(classes, np.int64)
    for c in range(classes):
        nxt[c] = _find_next(
            work, alive, score, orig, offsets[c], offsets[c + 1], bound, first_block[c]
        )
    picks, kept, cls = np.empty(limit, np.int64), np.empty(limit), np.empty(limit, np.int64)
    rec_start = np.zeros(limit + 1, np.int64)
    rec_j, rec_iou = np.empty(4096, np.int64), np.empty(4096)
    n = 0
    while n < limit:
        k = -1
        for c in range(classes):  # strict >: ties go to the lower class
            if nxt[c] >= 0 and (k < 0 or work[nxt[c]] > work[nxt[k]]):
                k = c
        if k < 0:
            break
        best = nxt[k]
        picks[n], kept[n], cls[n] = best, work[best], k
        alive[best] = False
        n += 1
        if replay:
            row = row_of[best]
            if row < 0:
                return picks[:n], kept[:n], cls[:n], False, (rec_start, rec_j, rec_iou)
            for r in range(table[1][row], table[1][row + 1]):
                j = table[2][r]
                if alive[j]:
                    work[j] = work[j] * table[3][r]
                    alive[j] = work[j] >= min_score
        else:
            lo, hi = offsets[k], offsets[k + 1]
            lo += np.searchsorted(max_end[lo:hi], start[best], side="right")
            hi = offsets[k] + np.searchsorted(first_start[offsets[k] : hi], end[best])
            r = rec_start[n - 1]
            if gaussian and r + (hi - lo) > len(rec_j):
                rec_j, rec_iou = _grow(rec_j, r + hi - lo), _grow(rec_iou, r + hi - lo)
            for s in range(lo, hi):
                j = by_start[s]
                if j == best:
                    continue
                # segment_iou's operations; IoU 0 (no overlap) makes both decays exactly 1.0
                inter = min(end[best], end[j]) - max(start[best], start[j])
                if not inter > 0:
                    continue
                union = length[j] + length[best] - inter
                iou = inter / union if union > 0 else 0.0
                if gaussian:
                    rec_j[r], rec_iou[r] = j, iou
                    r += 1
                if alive[j]:
                    if gaussian:
                        decay = np.exp(-(iou * iou) / sigma)
                    else:
                        decay = 1.0 - iou if iou > iou_threshold else 1.0
                    work[j] = work[j] * decay
                    alive[j] = work[j] >= min_score
            rec_start[n] = r
        nxt[k] = _find_next(
            work, alive, score, orig, offsets[k], offsets[k + 1], bound, first_block[k]
        )
    rows = (rec_start[: n + 1], rec_j[: rec_start[n]], rec_iou[: rec_start[n]])
    return picks[:n], kept[:n], cls[:n], True, rows
