//! Reading and writing a sequence's rows in the pool: `LayerKv` is one layer of one sequence
//! (its block table checked once against the pool), `KvRows` one KV head of it, position by
//! position. What the CPU attention kernels read through.
use super::{KvDims, BLOCK};

/// One layer of one sequence, K or V: rows addressed through the block table.
#[derive(Clone, Copy)]
pub struct LayerKv<'a> {
    data: &'a [f32],
    table: &'a [u32],
    dims: KvDims,
    layer: usize,
}

impl<'a> LayerKv<'a> {
    /// `None` when a table entry lies outside `data` (the pool's K or V) or `layer` is out of
    /// range: every row `KvRows` hands out is then inside `data`.
    pub fn new(data: &'a [f32], table: &'a [u32], dims: KvDims, layer: usize) -> Option<Self> {
        let bf = dims.block_floats();
        let ok = layer < dims.layers && table.iter().all(|&b| (b as usize + 1).checked_mul(bf).is_some_and(|end| end <= data.len()));
        ok.then_some(LayerKv { data, table, dims, layer })
    }

    /// KV head `h`'s rows (h < kv_heads).
    pub fn head(&self, h: usize) -> KvRows<'a> {
        let hd = self.dims.head_dim;
        let h = h.min(self.dims.kv_heads.saturating_sub(1));
        KvRows {
            data: self.data,
            table: self.table,
            base: (self.layer * self.dims.kv_heads + h) * BLOCK * hd,
            block_stride: self.dims.block_floats(),
            hd,
        }
    }

    /// Positions the table addresses.
    pub fn len(&self) -> usize {
        self.table.len() * BLOCK
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// One KV head of one layer of one sequence: position t → its head_dim floats.
#[derive(Clone, Copy)]
pub struct KvRows<'a> {
    data: &'a [f32],
    table: &'a [u32],
    /// This (layer, head)'s offset inside a block.
    base: usize,
    /// Floats per block.
    block_stride: usize,
    hd: usize,
}

impl<'a> KvRows<'a> {
    /// Positions it addresses.
    pub fn len(&self) -> usize {
        self.table.len() * BLOCK
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    #[inline(always)]
    fn offset(&self, t: usize) -> usize {
        self.table[t / BLOCK] as usize * self.block_stride + self.base + (t % BLOCK) * self.hd
    }

    /// Row t (head_dim floats); t < len().
    #[inline(always)]
    pub fn row(&self, t: usize) -> &'a [f32] {
        let o = self.offset(t);
        &self.data[o..o + self.hd]
    }

    /// Pointer to row t; rows t..t + (BLOCK − t % BLOCK) follow it `head_dim` floats apart.
    /// Valid to read head_dim floats per row for t < len() (`LayerKv::new` checked the table).
    #[inline(always)]
    pub fn ptr(&self, t: usize) -> *const f32 {
        self.data.as_ptr().wrapping_add(self.offset(t))
    }
}

/// Writes one position's row (n_kv_heads · head_dim, heads in order) of layer `layer` at
/// position `pos` of the sequence whose table is `table`, into the pool's K or V `data`.
/// `false` (nothing written) when `pos` is past the table or a block is outside `data`.
pub fn put_row(data: &mut [f32], table: &[u32], dims: KvDims, layer: usize, pos: usize, row: &[f32]) -> bool {
    let hd = dims.head_dim;
    let Some(&b) = table.get(pos / BLOCK) else { return false };
    let bf = dims.block_floats();
    if layer >= dims.layers || row.len() != dims.kv_heads * hd || (b as usize + 1) * bf > data.len() {
        return false;
    }
    for (h, src) in row.chunks_exact(hd).enumerate() {
        let at = b as usize * bf + ((layer * dims.kv_heads + h) * BLOCK + pos % BLOCK) * hd;
        data[at..at + hd].copy_from_slice(src);
    }
    true
}
