//! A valid tiny blob (built once, by the writer, from a synthetic model) with the input's
//! mutations applied, the CRC rewritten (unless the input says not to), then `from_blob`
//! and the forward. Gets past the checksum and the header to the table and config checks,
//! and runs the forward on damaged tensors.
//!
//! Input: byte 0 is flags — bits 0-1 the precision (0 int8, 1 fp16, 2 f32, 3 int8),
//! bit 2 keep the stale CRC, bit 3 aim every mutation at the header and tensor table,
//! bit 4 cut the blob after the mutations to a length taken from the next two bytes.
//! Then 3-byte mutations: a u16 LE offset (modulo the target range) and a byte XORed in.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qformer_core::blob::{CHECKSUM_OFFSET, HEADER_BYTES};
use qformer_core::Precision;

fn blobs() -> &'static [Vec<u8>; 3] {
    static BLOBS: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
    BLOBS.get_or_init(|| [Precision::Int8, Precision::F16, Precision::F32].map(qformer_tests::tiny_blob))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let base = &blobs()[match flags & 3 {
        1 => 1,
        2 => 2,
        _ => 0,
    }];
    let mut blob = base.clone();
    let data_offset = u32::from_le_bytes(blob[32..36].try_into().unwrap()) as usize;
    let mut cut = None;
    if flags & 16 != 0 && rest.len() >= 2 {
        cut = Some(u16::from_le_bytes([rest[0], rest[1]]) as usize % (blob.len() + 1));
        rest = &rest[2..];
    }
    let range = if flags & 8 != 0 { data_offset } else { blob.len() };
    for m in rest.chunks_exact(3) {
        let at = u16::from_le_bytes([m[0], m[1]]) as usize % range;
        blob[at] ^= m[2];
    }
    if let Some(len) = cut {
        blob.truncate(len);
    }
    if flags & 4 == 0 && blob.len() >= HEADER_BYTES {
        let crc = qformer_core::blob::checksum(&blob);
        blob[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let outcome = qformer_fuzz::exercise_blob(&blob, data.len() as u64);
    if blob == *base {
        // The unmodified blob must load, run and give finite outputs.
        assert!(outcome.loaded && outcome.ran && !outcome.overflowed, "pristine tiny blob: {outcome:?}");
    }
});
