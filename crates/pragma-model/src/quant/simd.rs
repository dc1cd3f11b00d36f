//! AVX2 and AVX-512 row kernels for Q4_1 and Q8_0 with f32 activations.

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod avx2 {
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// 8 unsigned bytes at `p` as f32 lanes.
    #[inline(always)]
    unsafe fn u8x8(v: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1(w: &[u8], sc: &[f32], x: &[f32], sums: &[f32]) -> f32 {
        let nb = x.len() / 32;
        let mask = _mm_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_ps();
        let mut offs = 0f32;
        for b in 0..nb {
            let (d, m) = (*sc.get_unchecked(2 * b), *sc.get_unchecked(2 * b + 1));
            let qs = _mm_loadu_si128(w.as_ptr().add(b * 16) as *const __m128i); // 16 bytes
            let lo = _mm_and_si128(qs, mask); // weights 0..16
            let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask); // weights 16..32
            let xp = x.as_ptr().add(b * 32);
            let mut t = _mm256_mul_ps(u8x8(lo), _mm256_loadu_ps(xp));
            t = _mm256_fmadd_ps(u8x8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(xp.add(8)), t);
            t = _mm256_fmadd_ps(u8x8(hi), _mm256_loadu_ps(xp.add(16)), t);
            t = _mm256_fmadd_ps(u8x8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(xp.add(24)), t);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), t, acc);
            offs += m * *sums.get_unchecked(b);
        }
        hsum(acc) + offs
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0(w: &[u8], sc: &[f32], x: &[f32]) -> f32 {
        let nb = x.len() / 32;
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let d = *sc.get_unchecked(b);
            let q = w.as_ptr().add(b * 32);
            let xp = x.as_ptr().add(b * 32);
            let mut t = _mm256_setzero_ps();
            for k in 0..4 {
                let v = _mm_loadl_epi64(q.add(8 * k) as *const __m128i);
                let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
                t = _mm256_fmadd_ps(f, _mm256_loadu_ps(xp.add(8 * k)), t);
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), t, acc);
        }
        hsum(acc)
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod avx512 {
    use std::arch::x86_64::*;

    /// As `avx2::dot_q4_1`, 16 lanes: a block's 16 low nibbles and 16 high nibbles are
    /// one conversion and one FMA each. Two accumulators hide the FMA latency.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn dot_q4_1(w: &[u8], sc: &[f32], x: &[f32], sums: &[f32]) -> f32 {
        let nb = x.len() / 32;
        let mask = _mm_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(), _mm512_setzero_ps()];
        let mut offs = [0f32; 2];
        for b in 0..nb {
            let (d, m) = (*sc.get_unchecked(2 * b), *sc.get_unchecked(2 * b + 1));
            let qs = _mm_loadu_si128(w.as_ptr().add(b * 16) as *const __m128i);
            let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(qs, mask)));
            let hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(
                _mm_srli_epi16(qs, 4),
                mask,
            )));
            let xp = x.as_ptr().add(b * 32);
            let t = _mm512_mul_ps(lo, _mm512_loadu_ps(xp));
            let t = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xp.add(16)), t);
            let k = b & 1;
            acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(d), t, acc[k]);
            offs[k] += m * *sums.get_unchecked(b);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + (offs[0] + offs[1])
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn dot_q8_0(w: &[u8], sc: &[f32], x: &[f32]) -> f32 {
        let nb = x.len() / 32;
        let mut acc = [_mm512_setzero_ps(), _mm512_setzero_ps()];
        for b in 0..nb {
            let d = *sc.get_unchecked(b);
            let q = w.as_ptr().add(b * 32);
            let xp = x.as_ptr().add(b * 32);
            let a = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q as *const __m128i)));
            let c = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                q.add(16) as *const __m128i
            )));
            let t = _mm512_mul_ps(a, _mm512_loadu_ps(xp));
            let t = _mm512_fmadd_ps(c, _mm512_loadu_ps(xp.add(16)), t);
            let k = b & 1;
            acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(d), t, acc[k]);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
    }

    /// Four activation rows against one weight row of Q8_0: each block is widened to
    /// f32 and scaled once (`d * q` is exact in f32: 11 + 8 significant bits), then
    /// two FMAs per row, so batched decoding reads and converts each block once.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn dot4_q8_0(w: &[u8], sc: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
        let nb = x[0].len() / 32;
        let mut acc = [_mm512_setzero_ps(); 4];
        for b in 0..nb {
            let d = _mm512_set1_ps(*sc.get_unchecked(b));
            let q = w.as_ptr().add(b * 32);
            let a = _mm512_mul_ps(
                d,
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q as *const __m128i))),
            );
            let c = _mm512_mul_ps(
                d,
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                    q.add(16) as *const __m128i
                ))),
            );
            for (acc_r, xr) in acc.iter_mut().zip(x.iter()) {
                let xp = xr.as_ptr().add(b * 32);
                *acc_r = _mm512_fmadd_ps(a, _mm512_loadu_ps(xp), *acc_r);
                *acc_r = _mm512_fmadd_ps(c, _mm512_loadu_ps(xp.add(16)), *acc_r);
            }
        }
        [
            _mm512_reduce_add_ps(acc[0]),
            _mm512_reduce_add_ps(acc[1]),
            _mm512_reduce_add_ps(acc[2]),
            _mm512_reduce_add_ps(acc[3]),
        ]
    }

    /// Four activation rows against one weight row of Q4_1 (`d * nibble` exact in f32),
    /// as [`dot4_q8_0`]; the `m * sum(x)` offsets per row as in [`dot_q4_1`].
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn dot4_q4_1(w: &[u8], sc: &[f32], x: [&[f32]; 4], sums: [&[f32]; 4]) -> [f32; 4] {
        let nb = x[0].len() / 32;
        let mask = _mm_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut offs = [0f32; 4];
        for b in 0..nb {
            let (d, m) = (*sc.get_unchecked(2 * b), *sc.get_unchecked(2 * b + 1));
            let dv = _mm512_set1_ps(d);
            let qs = _mm_loadu_si128(w.as_ptr().add(b * 16) as *const __m128i);
            let lo = _mm512_mul_ps(
                dv,
                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(qs, mask))),
            );
            let hi = _mm512_mul_ps(
                dv,
                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(
                    _mm_srli_epi16(qs, 4),
                    mask,
                ))),
            );
            for r in 0..4 {
                let xp = x.get_unchecked(r).as_ptr().add(b * 32);
                acc[r] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xp), acc[r]);
                acc[r] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xp.add(16)), acc[r]);
                offs[r] += m * *sums.get_unchecked(r).get_unchecked(b);
            }
        }
        [
            _mm512_reduce_add_ps(acc[0]) + offs[0],
            _mm512_reduce_add_ps(acc[1]) + offs[1],
            _mm512_reduce_add_ps(acc[2]) + offs[2],
            _mm512_reduce_add_ps(acc[3]) + offs[3],
        ]
    }
}
