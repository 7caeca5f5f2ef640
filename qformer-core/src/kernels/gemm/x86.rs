//! x86_64 kernels: int8 GEMMs with AVX2 and with AVX-512 VNNI, and the AVX2 + FMA + F16C
//! float GEMM.
//!
//! * `AVX2` / [`avx2_unchecked`] (`avx2_gemm_q8_1x8`): 1 row x 8 columns per tile, 32 bytes
//!   per step. AVX2 has no signed x signed byte multiply-add, so each step uses the usual
//!   identity `a·w = |w|·(a·sign(w))` with `vpmaddubsw` (u8 x i8 -> i16 pairs): `|w|` as u8 is
//!   exact for every i8 (|-128| = 128), and `a·sign(w)` is exact because activations lie in
//!   -127..=127 (the [`QRows`] contract: `vpsignb` would turn -128 · -1 into -128). A pair sums
//!   to at most 2·128·127 = 32512 in magnitude, inside i16 (`vpmaddubsw` would saturate).
//! * [`vnni_unchecked`] (`avx512vnni_gemm_q8_16x8`): 16 rows x 8 columns per tile in 512-bit
//!   vectors with `vpdpbusd` (u8 x i8, 4-way dot into i32), the activations shifted to unsigned
//!   (`a + 128`, exact for every i8) and the shift taken back with the weights' group sums;
//!   products of fewer than 16 rows, or with rows longer than `VNNI_MAX_STRIDE` (4096 bytes), use
//!   the 4 x 4 tile `vnni_kernel`. A panel of 16 activation rows is transposed once and serves
//!   a block of 8 column tiles.
//! * `F_AVX2` / [`f_avx2_unchecked`] (`avx2_fma_gemm_f32_f16_2x4`): 2 rows x 4 columns,
//!   8-wide FMA along `k`, fp16 weights widened with `vcvtph2ps`.
//!
//! Int8 groups that are not a multiple of 32 bytes go to the scalar kernel; ragged rows and
//! columns to [`scalar::gemm_q8_block`].

use core::arch::x86_64::*;

use super::{scalar, Q8Gemm, Shape};
use crate::kernels::QRows;

/// The AVX2 variant, when AVX2 is enabled at compile time.
#[cfg(qf_avx2)]
pub const AVX2: Q8Gemm = Q8Gemm::new(NAME, gemm_q8_avx2);

const NAME: &str = "avx2_gemm_q8_1x8";

/// The AVX2 variant on a CPU known at run time to have AVX2.
///
/// # Safety
/// The CPU running the returned kernel must support AVX2.
pub const unsafe fn avx2_unchecked() -> Q8Gemm {
    Q8Gemm::new(NAME, gemm_q8_avx2)
}

fn gemm_q8_avx2(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    if !a.group.is_multiple_of(32) {
        return scalar::gemm_q8(a, w, bias, out, s);
    }
    // SAFETY: reachable only through `AVX2` (AVX2 enabled at compile time) or
    // `avx2_unchecked` (whose caller guarantees AVX2); `Q8Gemm::run` checked the operand
    // bounds the kernel relies on.
    unsafe { kernel(a, w, bias, out, s) }
}

/// Exact dots of one 32-byte chunk `x` of an activation row with bytes `k..k + 32` of the
/// 8 weight rows starting at `wp`, added to `acc[c]` as 8 i32 lanes each (exact while every
/// byte of `x` is in -127..=127, see the module docs). Raw row pointers, not slices: this is
/// the innermost loop, and slices cost a bounds-checked array of fat pointers per tile
/// (callgrind: +1.6x instructions in this kernel); the caller `debug_assert!`s the bounds.
///
/// # Safety
/// The CPU supports AVX2, and `wp[c]` points to at least `k + 32` readable bytes for every `c`.
#[target_feature(enable = "avx2")]
unsafe fn step(x: __m256i, wp: [*const i8; 8], k: usize, acc: &mut [__m256i; 8]) {
    let ones = _mm256_set1_epi16(1);
    for c in 0..8 {
        // SAFETY: the caller guarantees `k + 32` readable bytes behind `wp[c]`.
        let y = unsafe { _mm256_loadu_si256(wp[c].add(k) as *const __m256i) };
        let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(y, y), _mm256_sign_epi8(x, y));
        acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(p16, ones));
    }
}

/// Horizontal sums of 8 vectors of 8 i32: lane c = sum of `v[c]` (wrapping).
///
/// # Safety
/// The CPU supports AVX2 (the only precondition: register-only arithmetic).
#[target_feature(enable = "avx2")]
unsafe fn reduce8(v: &[__m256i; 8]) -> __m256i {
    let a = _mm256_hadd_epi32(v[0], v[1]);
    let b = _mm256_hadd_epi32(v[2], v[3]);
    let c = _mm256_hadd_epi32(v[4], v[5]);
    let d = _mm256_hadd_epi32(v[6], v[7]);
    let ab = _mm256_hadd_epi32(a, b); // [v0 v1 v2 v3 | v0 v1 v2 v3] (low, high halves)
    let cd = _mm256_hadd_epi32(c, d);
    let lo = _mm256_permute2x128_si256(ab, cd, 0x20);
    let hi = _mm256_permute2x128_si256(ab, cd, 0x31);
    _mm256_add_epi32(lo, hi)
}

/// The AVX2 int8 GEMM: 1 x 8 tiles of [`step`] over 64-row blocks of `w`, the ragged
/// columns in scalar. Gives the scalar kernel's bits while every activation is in -127..=127.
///
/// # Safety
/// The CPU supports AVX2; the operands fit `s` as [`Q8Gemm::run`] checks them (`a` holds `m`
/// rows and `w` `n` rows of `stride` values, the same `stride` and `group` for both, `stride`
/// a multiple of `group`), and `group` is a non-zero multiple of 32. Rows are sliced with
/// checked indexing; only the 32-byte loads inside a row are unchecked.
#[target_feature(enable = "avx2")]
unsafe fn kernel(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let (stride, group) = (a.stride, a.group);
    debug_assert!(super::q8_operands_fit(a, w, bias, out, s) && group > 0 && group.is_multiple_of(32));
    let groups = stride / group;
    let n8 = s.n / 8 * 8;
    // Blocks of 64 weight rows stay in L2 while every activation row passes over them.
    for jb in (0..n8).step_by(64) {
        for i in 0..s.m {
            let ar = &a.values[i * stride..(i + 1) * stride];
            for j in (jb..n8.min(jb + 64)).step_by(8) {
                debug_assert!((j + 8) * stride <= w.values.len());
                let wp: [*const i8; 8] = core::array::from_fn(|c| w.values[(j + c) * stride..].as_ptr());
                let mut facc = _mm256_setzero_ps();
                for g in 0..groups {
                    let mut acc = [_mm256_setzero_si256(); 8];
                    for k in (g * group..(g + 1) * group).step_by(32) {
                        // SAFETY: AVX2 is enabled for this function; `k + 32 <= stride` (group
                        // is a multiple of 32 dividing `stride`), `ar` is a slice of `stride`
                        // bytes and every `wp[c]` starts a weight row of `stride` bytes (rows
                        // j..j + 8 exist: `j + 8 <= n8 <= s.n`, checked by `Q8Gemm::run`).
                        unsafe {
                            let x = _mm256_loadu_si256(ar.as_ptr().add(k) as *const __m256i);
                            step(x, wp, k, &mut acc);
                        }
                    }
                    // SAFETY: AVX2 is enabled for this function.
                    let dots = unsafe { reduce8(&acc) };
                    let sw: [f32; 8] = core::array::from_fn(|c| w.scales[(j + c) * groups + g]);
                    // SAFETY: `sw` holds 8 f32.
                    let scale = _mm256_mul_ps(_mm256_set1_ps(a.scales[i * groups + g]), unsafe {
                        _mm256_loadu_ps(sw.as_ptr())
                    });
                    facc = _mm256_add_ps(facc, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(dots)));
                }
                let mut v = [0f32; 8];
                // SAFETY: `v` holds 8 f32.
                unsafe { _mm256_storeu_ps(v.as_mut_ptr(), facc) };
                for (c, x) in v.iter().enumerate() {
                    out[i * s.ldo + j + c] = x + bias.map_or(0.0, |b| b[j + c]);
                }
            }
        }
    }
    scalar::gemm_q8_block(a, w, bias, out, s, 0..s.m, n8..s.n);
}

/// The AVX2 + FMA + F16C float GEMM, when enabled at compile time.
#[cfg(qf_avx2_fma_f16c)]
pub const F_AVX2: super::FGemm = super::FGemm::new(F_NAME, fgemm_f32, fgemm_f16);

const F_NAME: &str = "avx2_fma_gemm_f32_f16_2x4";

/// The AVX2 + FMA + F16C float GEMM on a CPU known at run time to have all three.
///
/// # Safety
/// The CPU running the returned kernel must support AVX2, FMA and F16C.
pub const unsafe fn f_avx2_unchecked() -> super::FGemm {
    super::FGemm::new(F_NAME, fgemm_f32, fgemm_f16)
}

/// Loads 8 weights as f32 from `p`.
trait LoadW: Copy {
    /// # Safety
    /// `p..p + 8` readable; AVX2 and F16C available.
    unsafe fn load8(p: *const Self) -> __m256;
}

impl LoadW for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f32 at `p` and AVX.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl LoadW for half::f16 {
    #[inline(always)]
    unsafe fn load8(p: *const half::f16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f16 (16 bytes) at `p` and F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
}

/// Sum of the 8 lanes of `v`, as `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
///
/// # Safety
/// The CPU supports AVX2 and FMA (the only precondition: register-only arithmetic).
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

/// 2 rows x 4 columns, 8-wide FMA along k; tails in scalar.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C, and the operands fit `s` as [`FGemm::run_f32`]
/// checks them: `a` holds `m * k` values, `w` `n * k`, `bias` (if any) `n`, and `out`
/// `(m - 1) * ldo + n` with `ldo >= n` (the vector loads are unchecked, the stores checked).
///
/// [`FGemm::run_f32`]: super::FGemm::run_f32
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // `c` indexes the tile's columns in `acc` and `w` alike
unsafe fn fgemm<W: LoadW + Into<f32>>(a: &[f32], w: &[W], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    debug_assert!(super::f_operands_fit(a.len(), w.len(), bias, out, s));
    let Shape { m, n, k, ldo } = s;
    let k8 = k / 8 * 8;
    let (m2, n4) = (m / 2 * 2, n / 4 * 4);
    let tail = |i: usize, j: usize, acc: f32| -> f32 {
        let mut t = acc;
        for kk in k8..k {
            t += a[i * k + kk] * w[j * k + kk].into();
        }
        t + bias.map_or(0.0, |b| b[j])
    };
    for i in (0..m2).step_by(2) {
        for j in (0..n4).step_by(4) {
            let mut acc = [[_mm256_setzero_ps(); 4]; 2];
            for kk in (0..k8).step_by(8) {
                // SAFETY: rows i, i+1 of `a` and j..j+4 of `w` have k >= kk + 8 elements
                // (bounds checked by `FGemm::run_*`).
                unsafe {
                    let x0 = _mm256_loadu_ps(a.as_ptr().add(i * k + kk));
                    let x1 = _mm256_loadu_ps(a.as_ptr().add((i + 1) * k + kk));
                    for c in 0..4 {
                        let y = W::load8(w.as_ptr().add((j + c) * k + kk));
                        acc[0][c] = _mm256_fmadd_ps(x0, y, acc[0][c]);
                        acc[1][c] = _mm256_fmadd_ps(x1, y, acc[1][c]);
                    }
                }
            }
            for r in 0..2 {
                for c in 0..4 {
                    // SAFETY: AVX2 and FMA are enabled for this function.
                    out[(i + r) * ldo + j + c] = tail(i + r, j + c, unsafe { hsum(acc[r][c]) });
                }
            }
        }
    }
    let block = |rows: core::ops::Range<usize>, cols: core::ops::Range<usize>, out: &mut [f32]| {
        for i in rows {
            for j in cols.clone() {
                let mut acc = _mm256_setzero_ps();
                for kk in (0..k8).step_by(8) {
                    // SAFETY: as above, one row and one column.
                    unsafe {
                        let x = _mm256_loadu_ps(a.as_ptr().add(i * k + kk));
                        acc = _mm256_fmadd_ps(x, W::load8(w.as_ptr().add(j * k + kk)), acc);
                    }
                }
                // SAFETY: AVX2 and FMA are enabled for this function.
                out[i * ldo + j] = tail(i, j, unsafe { hsum(acc) });
            }
        }
    };
    block(0..m2, n4..n, out);
    block(m2..m, 0..n, out);
}

fn fgemm_f32(a: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    // SAFETY: reachable only through `F_AVX2` (features enabled at compile time) or
    // `f_avx2_unchecked` (caller guarantees them); bounds checked by `FGemm::run_f32`.
    unsafe { fgemm(a, w, bias, out, s) }
}

fn fgemm_f16(a: &[f32], w: &[half::f16], bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    // SAFETY: as `fgemm_f32`.
    unsafe { fgemm(a, w, bias, out, s) }
}

/// The AVX-512 VNNI variant (Intel Ice Lake+, AMD Zen 4+) on a CPU known at run time to have
/// AVX512F, AVX512BW, AVX512VL and AVX512-VNNI.
///
/// # Safety
/// The CPU running the returned kernel must support those four features.
pub const unsafe fn vnni_unchecked() -> Q8Gemm {
    Q8Gemm::new(VNNI_NAME, gemm_q8_vnni)
}

const VNNI_NAME: &str = "avx512vnni_gemm_q8_16x8";

/// Longest rows (bytes of `k`, padding included) the 16x8 kernel takes: its packed row panel
/// (`16 * stride` bytes) and column sums live on the stack. Longer rows use the 4x4 kernel.
const VNNI_MAX_STRIDE: usize = 4096;

fn gemm_q8_vnni(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    if !a.group.is_multiple_of(32) {
        return scalar::gemm_q8(a, w, bias, out, s);
    }
    // SAFETY: reachable only through `vnni_unchecked`, whose caller guarantees the features;
    // `Q8Gemm::run` checked the operand bounds the kernels rely on.
    unsafe {
        if a.stride <= VNNI_MAX_STRIDE {
            vnni_16x8(a, w, bias, out, s)
        } else {
            vnni_kernel(a, w, bias, out, s)
        }
    }
}

/// 8x8 transpose of 32-bit lanes: `out[q]` lane `r` = `v[r]` lane `q`.
///
/// # Safety
/// Safe to call from functions that enable AVX2 (the VNNI kernels); elsewhere the call is
/// `unsafe` and the CPU must support AVX2. Register-only, no other precondition.
#[target_feature(enable = "avx2")]
fn transpose8(v: [__m256i; 8]) -> [__m256i; 8] {
    let t: [__m256i; 8] = core::array::from_fn(|p| {
        let (x, y) = (v[2 * (p / 2)], v[2 * (p / 2) + 1]);
        if p % 2 == 0 {
            _mm256_unpacklo_epi32(x, y) // x0 y0 x1 y1 | x4 y4 x5 y5
        } else {
            _mm256_unpackhi_epi32(x, y) // x2 y2 x3 y3 | x6 y6 x7 y7
        }
    });
    // u[h * 4 + q] lanes: rows 4h..4h+4 of 32-bit lane q | of lane q + 4.
    let u: [__m256i; 8] = core::array::from_fn(|i| {
        let (h, q) = (i / 4, i % 4);
        let (x, y) = (t[4 * h + q / 2], t[4 * h + 2 + q / 2]);
        if q % 2 == 0 {
            _mm256_unpacklo_epi64(x, y)
        } else {
            _mm256_unpackhi_epi64(x, y)
        }
    });
    core::array::from_fn(|q| {
        if q < 4 {
            _mm256_permute2x128_si256(u[q], u[4 + q], 0x20)
        } else {
            _mm256_permute2x128_si256(u[q - 4], u[q], 0x31)
        }
    })
}

/// `corr[c * groups + g] = 128 * sum(w[c, group g])` for the 8 weight rows at `wp`: what
/// the `a + 128` shift adds to each group dot.
///
/// # Safety
/// The CPU has AVX-512 VNNI and AVX512VL; `wp` points to 8 rows of `stride` readable bytes;
/// `group` is a multiple of 32 dividing `stride`, and `corr` holds `8 * stride / group` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn column_corrections(wp: *const i8, stride: usize, group: usize, corr: &mut [i32]) {
    debug_assert!(group > 0 && group.is_multiple_of(32) && stride.is_multiple_of(group));
    let groups = stride / group;
    debug_assert!(corr.len() >= 8 * groups);
    let ones = _mm256_set1_epi8(1);
    for c in 0..8 {
        for g in 0..groups {
            let mut sum = _mm256_setzero_si256();
            for k in (g * group..(g + 1) * group).step_by(32) {
                // SAFETY: `c < 8` and `k + 32 <= stride`, inside the caller's rows.
                let y = unsafe { _mm256_loadu_si256(wp.add(c * stride + k) as *const __m256i) };
                sum = _mm256_dpbusd_epi32(sum, ones, y);
            }
            let h = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
            let h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0b01_00_11_10));
            let h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0b10_11_00_01));
            corr[c * groups + g] = _mm_cvtsi128_si32(h).wrapping_mul(128);
        }
    }
}

/// Column tiles of 8 that share one packed row panel in [`vnni_16x8`].
const VNNI_BLOCK_TILES: usize = 8;

/// 16 rows x 8 columns per tile, accumulator lane = row (512-bit vectors). The 16 activation
/// rows of a panel, shifted to unsigned (`a + 128`), are transposed once into 4-byte chunks
/// (one 512-bit vector per 4 bytes of `k`, lane = row) together with their scales, and that
/// packed panel serves a block of [`VNNI_BLOCK_TILES`] column tiles: every weight column's
/// chunk is broadcast into `vpdpbusd`, so a group ends with one exact dot per lane and no
/// horizontal reduction; each broadcast and each epilogue instruction serves 16 rows. The
/// shift is taken back with `128 * sum(w)` per column and group, computed once per column
/// tile ([`column_corrections`]). Leftover rows take one more panel ending at the last row
/// (overlapping the previous one: the same bits again, only the new rows stored); leftover
/// columns go to scalar, products of fewer than 16 rows to [`vnni_kernel`]. Every output is
/// the same sum in the same order as before the packing, so the bits are those of the
/// scalar kernel. Stack: the panel (`16 * stride` bytes, at most 64 KiB), its scales and the
/// block's column sums (32 KiB).
///
/// # Safety
/// The CPU supports AVX512F, AVX512BW, AVX512VL and AVX512-VNNI; the operands fit `s` as
/// [`Q8Gemm::run`] checks them (every access of the tiles is unchecked), `group` is a
/// non-zero multiple of 32 and a row has at most [`VNNI_MAX_STRIDE`] bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn vnni_16x8(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let (stride, group) = (a.stride, a.group);
    debug_assert!(super::q8_operands_fit(a, w, bias, out, s) && group > 0 && group.is_multiple_of(32));
    debug_assert!(stride <= VNNI_MAX_STRIDE);
    let groups = stride / group;
    if s.m < 16 {
        // SAFETY: the same features as this function.
        return unsafe { vnni_kernel(a, w, bias, out, s) };
    }
    let (m16, n8) = (s.m / 16 * 16, s.n / 8 * 8);
    let shift = _mm256_set1_epi8(-128); // xor with 0x80 adds 128 as u8
    let mut panel = [_mm512_setzero_si512(); VNNI_MAX_STRIDE / 4];
    let mut panel_scales = [_mm512_setzero_ps(); VNNI_MAX_STRIDE / 32];
    let mut corr = [0i32; VNNI_BLOCK_TILES * 8 * (VNNI_MAX_STRIDE / 32)];
    let last = (!s.m.is_multiple_of(16)).then(|| s.m - 16);
    for jb in (0..n8).step_by(8 * VNNI_BLOCK_TILES) {
        let tiles = ((n8 - jb) / 8).min(VNNI_BLOCK_TILES);
        // SAFETY: (whole block) `Q8Gemm::run` checked that `a` holds `m * stride` values and
        // `m * groups` scales, `w` `n * stride` and `n * groups`, and `out` `(m - 1) * ldo +
        // n` values; every access below is to rows `i + r < m` of `a` (`i <= m - 16`,
        // `r < 16`), columns < n8 <= n of `w`, at byte offsets `g * group + k + 32 <=
        // stride`, and to `out` at `(i + r) * ldo + j + 8 <= (m - 1) * ldo + n`. The panel
        // holds `stride / 4 <= VNNI_MAX_STRIDE / 4` vectors and `groups` scale vectors, `corr`
        // `tiles * 8 * groups` sums.
        unsafe {
            for t in 0..tiles {
                let wp = w.values.as_ptr().add((jb + 8 * t) * stride);
                column_corrections(wp, stride, group, &mut corr[t * 8 * groups..(t + 1) * 8 * groups]);
            }
            for i in (0..m16).step_by(16).chain(last) {
                // Only the overlapping panel starts off a multiple of 16.
                let first_new = if i.is_multiple_of(16) { 0 } else { m16 - i };
                let ap = a.values.as_ptr().add(i * stride);
                let asp = a.scales.as_ptr().add(i * groups);
                for k in (0..stride).step_by(32) {
                    let half = |h: usize| {
                        transpose8(core::array::from_fn(|r| {
                            let p = ap.add((8 * h + r) * stride + k) as *const __m256i;
                            _mm256_xor_si256(_mm256_loadu_si256(p), shift)
                        }))
                    };
                    let (lo, hi) = (half(0), half(1));
                    for q in 0..8 {
                        panel[k / 4 + q] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo[q]), hi[q]);
                    }
                }
                for (g, sc) in panel_scales[..groups].iter_mut().enumerate() {
                    let sa: [f32; 16] = core::array::from_fn(|r| *asp.add(r * groups + g));
                    *sc = _mm512_loadu_ps(sa.as_ptr());
                }
                for t in 0..tiles {
                    let j = jb + 8 * t;
                    let wp = w.values.as_ptr().add(j * stride);
                    let wsp = w.scales.as_ptr().add(j * groups);
                    let corr = &corr[t * 8 * groups..];
                    let mut facc = [_mm512_setzero_ps(); 8];
                    for g in 0..groups {
                        let mut acc = [_mm512_setzero_si512(); 8];
                        for k in (g * group..(g + 1) * group).step_by(32) {
                            let at: &[__m512i] = &panel[k / 4..k / 4 + 8];
                            for (c, acc) in acc.iter_mut().enumerate() {
                                let chunk = wp.add(c * stride + k) as *const i32;
                                for (q, at) in at.iter().enumerate() {
                                    let y = _mm512_set1_epi32(chunk.add(q).read_unaligned());
                                    *acc = _mm512_dpbusd_epi32(*acc, *at, y);
                                }
                            }
                        }
                        let sa = panel_scales[g];
                        for (c, f) in facc.iter_mut().enumerate() {
                            let dot = _mm512_sub_epi32(acc[c], _mm512_set1_epi32(corr[c * groups + g]));
                            // (sa * sw) * dot, then the add: the scalar kernel's rounding order.
                            let scale = _mm512_mul_ps(sa, _mm512_set1_ps(*wsp.add(c * groups + g)));
                            *f = _mm512_add_ps(*f, _mm512_mul_ps(scale, _mm512_cvtepi32_ps(dot)));
                        }
                    }
                    // Lane r of facc[c] is row i + r, column j + c: transpose each 8-row half
                    // to rows of 8 columns.
                    let b = match bias {
                        Some(b) => _mm256_loadu_ps(b.as_ptr().add(j)),
                        None => _mm256_setzero_ps(),
                    };
                    for h in 0..2 {
                        let rows = transpose8(facc.map(|f| {
                            let f = _mm512_castps_si512(f);
                            if h == 0 {
                                _mm512_castsi512_si256(f)
                            } else {
                                _mm512_extracti64x4_epi64::<1>(f)
                            }
                        }));
                        for (r, row) in rows.iter().enumerate() {
                            if 8 * h + r >= first_new {
                                let v = _mm256_add_ps(_mm256_castsi256_ps(*row), b);
                                _mm256_storeu_ps(out.as_mut_ptr().add((i + 8 * h + r) * s.ldo + j), v);
                            }
                        }
                    }
                }
            }
        }
    }
    scalar::gemm_q8_block(a, w, bias, out, s, 0..s.m, n8..s.n);
}

/// Lane-wise horizontal sums: `out[k] = sum of the 8 lanes of v[k]` for 8 vectors
/// ([`reduce8`] by value).
///
/// # Safety
/// The CPU supports AVX2 (the only precondition: register-only arithmetic).
#[target_feature(enable = "avx2")]
unsafe fn reduce8_arr(v: [__m256i; 8]) -> __m256i {
    // SAFETY: AVX2 is enabled for this function.
    unsafe { reduce8(&v) }
}

/// 4 rows x 4 columns per tile with `vpdpbusd` (u8 x i8, 4-way dot into i32 lanes). The
/// activations are shifted to unsigned, `a + 128`, and the shift is taken back exactly with
/// the weights' group sums: `sum(a w) = sum((a + 128) w) - 128 sum(w)`, all in i32. Ragged
/// rows and columns go to [`scalar::gemm_q8_block`].
///
/// # Safety
/// The CPU supports AVX512F, AVX512BW, AVX512VL and AVX512-VNNI; the operands fit `s` as
/// [`Q8Gemm::run`] checks them (the 32-byte loads are unchecked; scales and `out` are
/// indexed with checks), and `group` is a non-zero multiple of 32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn vnni_kernel(a: &QRows<'_>, w: &QRows<'_>, bias: Option<&[f32]>, out: &mut [f32], s: Shape) {
    let (stride, group) = (a.stride, a.group);
    debug_assert!(super::q8_operands_fit(a, w, bias, out, s) && group > 0 && group.is_multiple_of(32));
    let groups = stride / group;
    let (m4, n4) = (s.m / 4 * 4, s.n / 4 * 4);
    let shift = _mm256_set1_epi8(-128); // xor with 0x80 adds 128 as u8
    let ones = _mm256_set1_epi8(1);
    // Blocks of 64 weight rows stay in L2 while every activation row passes over them.
    for jb in (0..n4).step_by(64) {
        for i in (0..m4).step_by(4) {
            for j in (jb..n4.min(jb + 64)).step_by(4) {
                let mut facc = [_mm_setzero_ps(); 4]; // per row, lanes = 4 columns
                for g in 0..groups {
                    let mut acc = [[_mm256_setzero_si256(); 4]; 4];
                    let mut wsum = [_mm256_setzero_si256(); 4];
                    for k in (g * group..(g + 1) * group).step_by(32) {
                        // SAFETY: rows i..i+4 of `a` and j..j+4 of `w` hold `stride >= k + 32`
                        // bytes (checked by `Q8Gemm::run`).
                        unsafe {
                            let x: [__m256i; 4] = core::array::from_fn(|r| {
                                _mm256_xor_si256(
                                    _mm256_loadu_si256(a.values.as_ptr().add((i + r) * stride + k) as *const __m256i),
                                    shift,
                                )
                            });
                            for c in 0..4 {
                                let y =
                                    _mm256_loadu_si256(w.values.as_ptr().add((j + c) * stride + k) as *const __m256i);
                                wsum[c] = _mm256_dpbusd_epi32(wsum[c], ones, y);
                                for r in 0..4 {
                                    acc[r][c] = _mm256_dpbusd_epi32(acc[r][c], x[r], y);
                                }
                            }
                        }
                    }
                    // d01 lanes 0..4 = columns j..j+4 of row i, lanes 4..8 = those of row i+1;
                    // d23 the same for rows i+2, i+3; ws holds the 4 columns' weight sums twice.
                    // SAFETY: AVX2 is enabled for this function.
                    let (d01, d23, ws) = unsafe {
                        (
                            reduce8_arr([
                                acc[0][0], acc[0][1], acc[0][2], acc[0][3], acc[1][0], acc[1][1], acc[1][2], acc[1][3],
                            ]),
                            reduce8_arr([
                                acc[2][0], acc[2][1], acc[2][2], acc[2][3], acc[3][0], acc[3][1], acc[3][2], acc[3][3],
                            ]),
                            reduce8_arr([wsum[0], wsum[1], wsum[2], wsum[3], wsum[0], wsum[1], wsum[2], wsum[3]]),
                        )
                    };
                    let corr = _mm256_slli_epi32(ws, 7); // 128 * sum(w), lanes = columns, twice
                    let d01 = _mm256_sub_epi32(d01, corr);
                    let d23 = _mm256_sub_epi32(d23, corr);
                    let dots = [
                        _mm256_castsi256_si128(d01),
                        _mm256_extracti128_si256(d01, 1),
                        _mm256_castsi256_si128(d23),
                        _mm256_extracti128_si256(d23, 1),
                    ];
                    let sw: [f32; 4] = core::array::from_fn(|c| w.scales[(j + c) * groups + g]);
                    // SAFETY: `sw` holds 4 f32.
                    let swv = unsafe { _mm_loadu_ps(sw.as_ptr()) };
                    for r in 0..4 {
                        let scale = _mm_mul_ps(_mm_set1_ps(a.scales[(i + r) * groups + g]), swv);
                        facc[r] = _mm_add_ps(facc[r], _mm_mul_ps(scale, _mm_cvtepi32_ps(dots[r])));
                    }
                }
                for (r, f) in facc.iter().enumerate() {
                    let mut v = [0f32; 4];
                    // SAFETY: `v` holds 4 f32.
                    unsafe { _mm_storeu_ps(v.as_mut_ptr(), *f) };
                    for (c, x) in v.iter().enumerate() {
                        out[(i + r) * s.ldo + j + c] = x + bias.map_or(0.0, |b| b[j + c]);
                    }
                }
            }
        }
    }
    scalar::gemm_q8_block(a, w, bias, out, s, 0..m4, n4..s.n);
    scalar::gemm_q8_block(a, w, bias, out, s, m4..s.m, 0..s.n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{f16_convert_sweep, f16_sweep, q8_agrees_on_minus_128, F16Widen, F16_SCRATCH_BYTES};
    use std::arch::is_x86_feature_detected as has;

    /// The AVX2 kernel relies on the activation contract of [`QRows`] (-127..=127), the VNNI
    /// kernels do not.
    #[test]
    fn only_the_avx2_kernel_needs_activations_above_minus_128() {
        if has!("avx2") {
            assert!(!q8_agrees_on_minus_128(gemm_q8_avx2), "AVX2 now agrees with scalar on -128: relax the contract");
        }
        if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni") {
            assert!(q8_agrees_on_minus_128(gemm_q8_vnni));
        } else {
            std::println!("VNNI not checked: this CPU lacks it");
        }
    }

    fn has_f16c() -> bool {
        has!("avx2") && has!("fma") && has!("f16c")
    }

    /// The float GEMM's fp16 load ([`LoadW::load8`], `vcvtph2ps`) over a slice.
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8_slice(src: &[half::f16], dst: &mut [f32]) {
        assert!(src.len().is_multiple_of(8) && dst.len() >= src.len());
        for (s, d) in src.chunks_exact(8).zip(dst.chunks_exact_mut(8)) {
            // SAFETY: the caller guarantees the features; `s` holds 8 f16 and `d` 8 f32.
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), <half::f16 as LoadW>::load8(s.as_ptr())) }
        }
    }

    fn load8_checked(src: &[half::f16], dst: &mut [f32]) {
        assert!(has_f16c());
        // SAFETY: the features were just detected.
        unsafe { load8_slice(src, dst) }
    }

    /// `vcvtph2ps` as the AVX2 float GEMM widens fp16 weights, over all 65,536 bit patterns:
    /// the load itself bit for bit (signed zeros and NaN payloads included), then the whole
    /// fp16 GEMM with one weight per output (payloads must survive its arithmetic too).
    #[test]
    fn vcvtph2ps_matches_half_on_every_f16() {
        if !has_f16c() {
            std::println!("skipped: this CPU has no AVX2 + FMA + F16C");
            return;
        }
        let step = F16Widen { name: "vcvtph2ps (LoadW::load8)", convert: load8_checked, nan_payload: true };
        let r = f16_convert_sweep(step).unwrap_or_else(|m| panic!("{m:?}"));
        assert_eq!((r.patterns, r.compared, r.nan_exact), (65536, 2 * 65536, 2 * 2046));
        std::println!("vcvtph2ps load: {r:?}");
        let mut scratch = std::vec![0u8; F16_SCRATCH_BYTES];
        // SAFETY: AVX2, FMA and F16C were just detected.
        let v = unsafe { f_avx2_unchecked() };
        let r = f16_sweep(v, &mut scratch).unwrap_or_else(|m| panic!("{m:?}"));
        assert_eq!((r.compared, r.nan_default), (4 * 65536, 0));
        std::println!("{}: {r:?}", v.name());
    }
}
