"""The three Triton kernels of ``fused_triton.TritonFusedRank`` (imported only where triton is
installed: a CUDA machine, or ``TRITON_INTERPRET=1`` on a CPU). Shapes and the argument of each
step are in ``fused_triton``'s docstring."""
import triton
import triton.language as tl


@triton.jit
def user_rows(uid, id_to_row, table_size, n_users, mask):
    """The users' rows, the cold row ``n_users`` for ids the table does not know."""
    u = tl.load(uid, mask=mask, other=-1)
    inside = (u >= 0) & (u < table_size)
    row = tl.load(id_to_row + tl.where(inside, u, 0), mask=mask & inside, other=-1)
    known = inside & (row >= 0)
    return tl.where(known, row, n_users), known

@triton.jit
def key16(v):
    """FP16 values -> int32 keys in [0, 65536) that order like the values."""
    bits = v.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return tl.where(bits >= 0x8000, (~bits) & 0xFFFF, bits | 0x8000)

@triton.jit
def scan(uid, id_to_row, table_size, n_users, users, items_t, bias, chunk_max, group_max,
         rows, n_items, stride_u, stride_i, stride_c, stride_g,
         D: tl.constexpr, BLOCK_D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
         CH: tl.constexpr, TILES: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = (pid_m * BM + tl.arange(0, BM)).to(tl.int64)   # row offsets past 2^31 at 10^7 items x large B
    row, _known = user_rows(uid + rm, id_to_row, table_size, n_users, rm < rows)
    rd = tl.arange(0, BLOCK_D)
    u = tl.load(users + row[:, None] * stride_u + rd[None, :],
                mask=(rm[:, None] < rows) & (rd[None, :] < D), other=0.0)
    best = tl.full((BM,), float("-inf"), tl.float32)
    for tile in range(TILES):
        rn = (pid_n * TILES + tile) * BN + tl.arange(0, BN)
        c = tl.load(items_t + rd[:, None] * stride_i + rn[None, :],
                    mask=(rd[:, None] < D) & (rn[None, :] < n_items), other=0.0)
        s = tl.dot(u, c) + tl.load(bias + rn, mask=rn < n_items, other=-65504.0)[None, :]
        m = tl.max(tl.reshape(s, (BM, BN // CH, CH)), axis=2)
        rc = (pid_n * TILES + tile) * (BN // CH) + tl.arange(0, BN // CH)
        tl.store(chunk_max + rm[:, None] * stride_c + rc[None, :], m.to(tl.float16),
                 mask=(rm[:, None] < rows) & (rc[None, :] < n_items // CH))
        best = tl.maximum(best, tl.max(m, axis=1))
    # rounding to FP16 is monotone: the group's FP16 maximum is the maximum of its chunks'
    tl.store(group_max + rm * stride_g + pid_n, best.to(tl.float16), mask=rm < rows)

@triton.jit
def bucket(hist, need):
    """The bin holding the ``need``-th largest value of a 256-bin histogram, and how many
    values lie in the bins above it."""
    bins = tl.arange(0, 256)
    above = tl.sum(hist, axis=0) - tl.cumsum(hist, axis=0)
    hit = (above < need) & (above + hist >= need)
    return tl.sum(tl.where(hit, bins, 0), axis=0), tl.sum(tl.where(hit, above, 0), axis=0)

@triton.jit
def picked_keys(picked, maxima, start, n_picked, GB: tl.constexpr, GROUP: tl.constexpr):
    """Keys (key16) of the chunk maxima of picked groups start .. start+GB (one row's), which of
    them are real (past n_picked: not), and their chunk indices; each [GB * GROUP]."""
    j = start + tl.arange(0, GB)
    member = tl.arange(0, GROUP)
    group = tl.load(picked + j, mask=j < n_picked, other=0)
    valid = tl.reshape((j < n_picked)[:, None] & (member[None, :] >= 0), (GB * GROUP,))
    chunk = tl.reshape(group[:, None] * GROUP + member[None, :], (GB * GROUP,))
    return key16(tl.load(maxima + chunk, mask=valid, other=float("-inf"))), valid, chunk


@triton.jit
def select(group_max, chunk_max, picked_groups, cand, count, n_groups, wide,
           stride_g, stride_c, stride_p, stride_cand,
           GP: tl.constexpr, GROUP: tl.constexpr, GB: tl.constexpr, CAP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, GP)
    g = tl.load(group_max + b * stride_g + offs, mask=offs < n_groups, other=float("-inf")).to(tl.float32)
    t = tl.sum(tl.where(offs == wide - 1, tl.sort(g, descending=True), 0.0), axis=0)
    # the groups at or above t (strictly above first, ties after, at most CAP of them)
    above_t = g > t
    at_t = g == t
    n_above = tl.sum(above_t.to(tl.int32), axis=0)
    slot = tl.where(above_t, tl.cumsum(above_t.to(tl.int32), axis=0),
                    n_above + tl.cumsum(at_t.to(tl.int32), axis=0)) - 1
    tl.store(picked_groups + b * stride_p + slot, offs, mask=(above_t | at_t) & (slot < CAP))
    n_picked = tl.minimum(n_above + tl.sum(at_t.to(tl.int32), axis=0), CAP)
    tl.debug_barrier()
    # radix select of the wide-th largest chunk maximum: the high byte, then the low byte
    hist = tl.zeros((256,), tl.int32)
    for start in range(0, n_picked, GB):
        key, valid, _ = picked_keys(picked_groups + b * stride_p, chunk_max + b * stride_c, start, n_picked,
                                    GB, GROUP)
        hist += tl.histogram(key >> 8, 256, mask=valid)
    high, above_high = bucket(hist, wide)
    hist = tl.zeros((256,), tl.int32)
    for start in range(0, n_picked, GB):
        key, valid, _ = picked_keys(picked_groups + b * stride_p, chunk_max + b * stride_c, start, n_picked,
                                    GB, GROUP)
        hist += tl.histogram(key & 0xFF, 256, mask=valid & ((key >> 8) == high))
    low, above_low = bucket(hist, wide - above_high)
    threshold = high * 256 + low
    n_greater = above_high + above_low
    # the chunks at or above the threshold: the greater ones first, then ties up to CAP
    n_gt_run = tl.zeros((), tl.int32)
    n_eq_run = tl.zeros((), tl.int32)
    for start in range(0, n_picked, GB):
        key, valid, ci = picked_keys(picked_groups + b * stride_p, chunk_max + b * stride_c, start, n_picked,
                                     GB, GROUP)
        gt = valid & (key > threshold)
        eq = valid & (key == threshold)
        pos = tl.where(gt, n_gt_run + tl.cumsum(gt.to(tl.int32), axis=0),
                       n_greater + n_eq_run + tl.cumsum(eq.to(tl.int32), axis=0)) - 1
        tl.store(cand + b * stride_cand + pos, ci, mask=(gt | eq) & (pos < CAP))
        n_gt_run += tl.sum(gt.to(tl.int32), axis=0)
        n_eq_run += tl.sum(eq.to(tl.int32), axis=0)
    tl.store(count + b, tl.minimum(n_greater + n_eq_run, CAP))

@triton.jit
def rescore(uid, id_to_row, table_size, n_users, users_full, items_full, item_ids, seen_indptr,
            seen_items, cold_ids, cold_scores, cand, count, k, out_ids, out_scores, kmax,
            stride_u, stride_i, stride_cand, stride_o,
            WIDTH: tl.constexpr, DB: tl.constexpr, CAP: tl.constexpr, CH: tl.constexpr, KP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    row, known = user_rows(uid + b, id_to_row, table_size, n_users, True)
    n = tl.load(count + b)
    p = tl.arange(0, CAP * CH)
    valid = p < n * CH
    item = tl.load(cand + b * stride_cand + p // CH, mask=valid, other=0) * CH + p % CH
    score = tl.zeros((CAP * CH,), tl.float32)
    for d0 in range(0, WIDTH, DB):
        dd = d0 + tl.arange(0, DB)
        x = tl.load(items_full + item[:, None] * stride_i + dd[None, :],
                    mask=valid[:, None] & (dd[None, :] < WIDTH), other=0.0)
        y = tl.load(users_full + row * stride_u + dd, mask=dd < WIDTH, other=0.0)
        score += tl.sum(x * y[None, :], axis=1)
    drop = ~valid | (tl.load(item_ids + item, mask=valid, other=-1) < 0)
    for j in range(tl.load(seen_indptr + row), tl.load(seen_indptr + row + 1)):
        drop = drop | (item == tl.load(seen_items + j))
    bits = tl.where(drop, float("-inf"), score).to(tl.int32, bitcast=True)
    keys = ((bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(tl.int64) << 32) | p.to(tl.int64)
    ranked = tl.reshape(tl.sort(keys, descending=True), (CAP * CH // KP, KP))
    first = tl.sum(tl.where(tl.arange(0, CAP * CH // KP)[:, None] == 0, ranked, 0), axis=0)     # [KP]
    high = (first >> 32).to(tl.int32)
    best = (high ^ ((high >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
    at = (first & 0xFFFFFFFF).to(tl.int32)
    live = best > float("-inf")
    ids = tl.load(item_ids + tl.load(cand + b * stride_cand + at // CH, mask=live, other=0) * CH + at % CH,
                  mask=live, other=-1)
    slot = tl.arange(0, KP)
    ids = tl.where(known, ids, tl.load(cold_ids + slot, mask=slot < kmax, other=-1))
    best = tl.where(known, best, tl.load(cold_scores + slot, mask=slot < kmax, other=float("-inf")))
    keep = (slot < tl.load(k + b)) & (best > float("-inf"))
    tl.store(out_ids + b * stride_o + slot, tl.where(keep, ids, -1), mask=slot < kmax)
    tl.store(out_scores + b * stride_o + slot, tl.where(keep, best, float("-inf")), mask=slot < kmax)

