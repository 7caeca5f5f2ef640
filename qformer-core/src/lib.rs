//! `qformer-core`: the Q-Former of BLIP-2, InstructBLIP and MiniGPT-4 for edge hardware.
//! InstructBLIP's instruction joins the queries ([`Model::forward_text`], tokenized on the
//! device by [`tokenizer`] with the blob's own vocabulary), and an image's cross-attention
//! keys and values can be projected once for many questions ([`Model::encode_image`]).
//!
//! * `#![no_std]`, no `alloc`: the weights are read in place from a flat blob (`&[u8]` from
//!   flash, `include_bytes!` or mmap), and every activation lives in a caller-provided arena
//!   whose size is known from the blob header at compile time ([`arena_bytes`]).
//! * Weights are stored per tensor as f32, fp16 (IEEE half, `half` crate) or int8 with
//!   group-wise scales; see [`blob`] for the format and `docs/FORMAT.md` for its byte layout.
//! * Kernels live in [`kernels`], one module per family, one file per instruction set, each
//!   tested against its portable scalar twin.
//! * The kernels are chosen at compile time from the target and cargo features only, so every
//!   toolchain (stable rustup included) builds the same ones: `thumbv7em-*` gets the DSP
//!   kernels (with the FPU ones on `eabihf`), `thumbv8m.main-*` the DSP ones with the `dsp`
//!   feature and the Helium ones with `helium`, aarch64 and x86_64 follow their stable target
//!   features; `std-detect` adds run-time CPU detection. See [`kernels`] for the variant
//!   tables and the named cfgs `build.rs` derives.
//!
//! ```no_run
//! use qformer_core::{Model, AlignedArena};
//! # fn demo(blob: &[u8], image: &[f32]) -> Result<(), qformer_core::Error> {
//! let model = Model::from_blob(blob)?;
//! let mut arena = vec_arena(model.arena_bytes());
//! let mut out = [0f32; 32 * 768];
//! model.forward(image, &mut arena, &mut out, None)?;
//! # Ok(()) }
//! # fn vec_arena(_: usize) -> &'static mut [u8] { unimplemented!() }
//! ```
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

// Tests, and run-time CPU detection with the `std-detect` feature (`kernels::CpuFeature::detected`).
#[cfg(any(test, feature = "std-detect"))]
extern crate std;

/// Defines a `#[repr]` enum whose discriminants are stored codes of the blob format, with
/// its decoder, its short name per variant and the list of all variants, from one table.
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident, $from:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr($repr)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $code, )+
        }

        impl $name {
            /// Every variant, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Decodes a stored code; `None` for a code this version does not define.
            pub const fn $from(v: $repr) -> Option<Self> {
                match v {
                    $( $code => Some(Self::$variant), )+
                    _ => None,
                }
            }

            /// Short name.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )+
                }
            }
        }
    };
}

#[cfg(target_endian = "big")]
compile_error!("qformer-core reads little-endian blobs in place and supports little-endian targets only");

mod align;
pub mod blob;
pub mod config;
pub mod error;
pub mod image;
pub mod kernels;
pub mod model;
pub mod parallel;
pub mod plan;
pub mod tokenizer;

pub use blob::{DType, Header, Role, TensorEntry};
pub use config::{valid_group, Activation, Config, Precision};
pub use error::Error;
pub use model::{EncodedImage, Image, LayerObserver, Model, Text};
pub use parallel::{Executor, Sequential};
pub use plan::{arena_bytes, AlignedArena, ArenaPlan};

#[cfg(test)]
mod tests;
