//! The row-parallel loop every CPU matvec runs (one rayon task per `ROWS_PER_TASK` output rows)
//! and the work size below which the pool is not woken.
use rayon::prelude::*;

/// Below this many multiply-adds a matvec or attention runs on the calling thread: waking the
/// pool costs more than the work.
pub(crate) const PARALLEL_MIN_WORK: usize = 1 << 17;

/// Output rows per rayon task: big enough to amortise scheduling, small enough to balance.
pub const ROWS_PER_TASK: usize = 32;

/// `out[r] = row_dot(r)` for every row, split across the rayon pool when `work` (multiply-adds)
/// is large enough to pay for waking it. One row at a time: measured on Zen 4, four interleaved
/// row streams per core read DRAM ~35% slower than one.
pub fn par_rows(out: &mut [f32], work: usize, row_dot: impl Fn(usize) -> f32 + Sync) {
    par_rows_multi(out, 1, work, |r, _| row_dot(r))
}

/// [`par_rows`] for `b` vectors: `out` (n, b), `out[r·b + j] = row_dot(r, j)`. A task walks its
/// rows once and dots each with every vector while it is in L1: the weights stream from memory
/// once for all b (a batched decode step), and each result is the one the row dot gives alone.
pub fn par_rows_multi(out: &mut [f32], b: usize, work: usize, row_dot: impl Fn(usize, usize) -> f32 + Sync) {
    let b = b.max(1);
    let rows = |(chunk, outs): (usize, &mut [f32])| {
        for (i, o) in outs.chunks_mut(b).enumerate() {
            let r = chunk * ROWS_PER_TASK + i;
            for (j, oj) in o.iter_mut().enumerate() {
                *oj = row_dot(r, j);
            }
        }
    };
    if work < PARALLEL_MIN_WORK {
        out.chunks_mut(ROWS_PER_TASK * b).enumerate().for_each(rows);
    } else {
        out.par_chunks_mut(ROWS_PER_TASK * b).enumerate().for_each(rows);
    }
}
