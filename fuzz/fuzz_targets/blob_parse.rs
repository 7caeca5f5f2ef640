//! `Header::parse` and `Model::from_blob` on arbitrary bytes must return, never panic; a
//! blob that validates must run its forward. The input is tried twice: as given, and with
//! its CRC rewritten so that mutations get past the checksum to the header, config and
//! table checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qformer_core::blob::{CHECKSUM_OFFSET, HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    qformer_fuzz::exercise_blob(data, data.len() as u64);
    if data.len() >= HEADER_BYTES {
        let mut sealed = data.to_vec();
        let crc = qformer_core::blob::checksum(&sealed);
        sealed[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        if sealed != data {
            qformer_fuzz::exercise_blob(&sealed, data.len() as u64);
        }
    }
});
