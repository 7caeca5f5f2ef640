/*
 * qformer.h: the C API of qformer, the Q-Former of BLIP-2, InstructBLIP and MiniGPT-4 for edge
 * hardware. Link libqformer.a (bare metal and Linux) or libqformer.so (Linux, `pkg-config qformer`).
 *
 *     static qf_model model;                       // caller storage: no allocation anywhere
 *     qf_status s = qf_model_init(&model, blob, blob_len);
 *     static _Alignas(QF_ALIGN) uint8_t arena[ARENA_BYTES];   // >= qf_model_arena_bytes(&model)
 *     float out[N_TIMES_D];                        // == qf_model_output_len(&model)
 *     s = qf_forward(&model, features, tokens, arena, sizeof arena, out, N_TIMES_D, NULL, 0);
 *     if (s != QF_OK) printf("qformer: %s
", qf_status_str(s));
 *
 * Ownership and lifetime. The library owns nothing and allocates nothing; it keeps no global
 * or static state. Every pointer is the caller's:
 *   - blob: read in place (flash, a static array, an mmap), never copied or written. The
 *     qf_model points into it: it must stay valid and unchanged until the model (and every
 *     copy of it) is no longer used. 16-byte aligned.
 *   - qf_model: caller storage of QF_MODEL_BYTES (a complete type: declare it static, global or
 *     on the stack). Filled by qf_model_init, read-only afterwards; holds no resources (nothing
 *     to free) and may be copied by assignment.
 *   - arena: scratch for one call at a time, at least qf_model_arena_bytes, 16-byte aligned;
 *     borrowed only for the duration of the call (no contents kept between calls, none needed
 *     on entry). Its size is known before any code runs: qf_header_sizes reads it from the
 *     blob's header (examples/tools/qf_sizes.c turns it into a #define for a static arena).
 *   - image, ids, mask: read during the call only. out, projected: written during the call only.
 *   - cache of qf_encode_image: written by it; the qf_encoded_image points into it, so it must
 *     stay valid and unchanged as long as the encoded image is used.
 *   - Strings returned (qf_status_str, qf_version) are static: never free them.
 * No buffer of a call may overlap a buffer the call writes (QF_ERR_OVERLAP).
 *
 * Checked, not undefined: a NULL pointer (QF_ERR_NULL), a pointer misaligned for its type
 * (QF_ERR_MISALIGNED: blob, arena, cache 16 bytes; float and uint32_t buffers 4; the structs 8),
 * overlapping buffers (QF_ERR_OVERLAP), a model not initialized (QF_ERR_NOT_INITIALIZED: a zeroed
 * one, or one whose qf_model_init failed), any length against the model before it is used. Not
 * checkable: a pointer to less memory than its length says, or a blob freed or rewritten while in use.
 *
 * Threads: one model, many threads. After qf_model_init a model is only read, so any number of
 * threads (or cores) may run qf_forward on the same model at once, each with its own arena and
 * outputs; an arena, cache or output buffer must not be used by two calls at the same time.
 * qf_model_init must not run on a model other threads are using.
 *
 * Interrupt handlers (bare metal): every function is reentrant (no global state, no locks, no
 * allocation, no system calls), so any may be called from an interrupt handler, with its own
 * arena and outputs. The size, config, kernel and string functions are constant-time and cheap.
 * qf_model_init (a CRC-32 of the whole blob: about 3.7 M instructions for the 814 KiB MCU model)
 * and the forwards (10 M instructions on a Cortex-M55, 29 M on a Cortex-M4 for that model) are
 * long: call them from a handler only if the latency is acceptable, and enable lazy FPU state
 * preservation (the default on Cortex-M4F/M55) since they use the FPU. On Linux they are not
 * async-signal-safe (the panic guard may allocate): do not call them from a signal handler.
 *
 * Panics: no input makes the library panic (every problem is a status). On Linux a panic (a
 * bug) is caught at the boundary and returned as QF_ERR_PANIC; on bare metal the library's
 * panic handler calls qf_panic_handler (below), which never returns.
 */

#ifndef QFORMER_H
#define QFORMER_H

/* Generated from qformer-ffi/src by cbindgen (`cargo xtask c-api --write-header`). Do not edit: change the Rust source and regenerate. */

#include <stddef.h>
#include <stdint.h>

/**
 * Bytes of a `qf_model`: enough for the model on every target (asserted at compile time).
 */
#define QF_MODEL_BYTES 1024

/**
 * Bytes of a `qf_encoded_image`.
 */
#define QF_ENCODED_IMAGE_BYTES 64

/**
 * `uint64_t` words of a `qf_model`.
 */
#define QF_MODEL_WORDS (QF_MODEL_BYTES / 8)

/**
 * `uint64_t` words of a `qf_encoded_image`.
 */
#define QF_ENCODED_IMAGE_WORDS (QF_ENCODED_IMAGE_BYTES / 8)

/**
 * Alignment in bytes the blob, the arena and an encoded image's buffer must have.
 */
#define QF_ALIGN 16

/**
 * Bytes of each name in `qf_kernels`, the terminating NUL included.
 */
#define QF_KERNEL_NAME_BYTES 48

/**
 * `qf_config.activation`: exact GELU (BLIP-2's).
 */
#define QF_ACTIVATION_GELU 0

/**
 * `qf_config.activation`: tanh-approximated GELU.
 */
#define QF_ACTIVATION_GELU_TANH 1

/**
 * `qf_config.activation`: ReLU.
 */
#define QF_ACTIVATION_RELU 2

/**
 * `qf_config.precision`: f32 weights.
 */
#define QF_PRECISION_F32 0

/**
 * `qf_config.precision`: fp16 weights.
 */
#define QF_PRECISION_FP16 1

/**
 * `qf_config.precision`: int8 weights with group-wise scales.
 */
#define QF_PRECISION_INT8 2

/**
 * What every fallible call returns: `QF_OK` (0) or one of the `QF_ERR_*` codes below (all
 * positive). `qf_status_str` describes each.
 */
typedef int32_t qf_status;

/**
 * A model: declare one (static, global or on the stack; no allocation is needed) and fill it
 * with `qf_model_init`. Its contents are private. It holds a pointer to the blob, not a copy:
 * the blob must stay valid and unchanged as long as the model is used. A `qf_model` may be
 * copied with `memcpy` or assignment once initialized; the copy uses the same blob.
 */
typedef struct qf_model {
  /**
   * Private: the model and a tag `qf_model_init` writes. Alignment 8.
   */
  uint64_t opaque[QF_MODEL_WORDS];
} qf_model;

/**
 * The model's config (`qf_model_config`), as the blob's header states it.
 */
typedef struct qf_config {
  /**
   * Q-Former layers L.
   */
  uint32_t num_layers;
  /**
   * Hidden width d.
   */
  uint32_t hidden;
  /**
   * Attention heads.
   */
  uint32_t num_heads;
  /**
   * Feed-forward width.
   */
  uint32_t intermediate;
  /**
   * Cross-attention in every layer whose index is a multiple of this.
   */
  uint32_t cross_attention_frequency;
  /**
   * Image feature width d_v.
   */
  uint32_t encoder_hidden;
  /**
   * Learned queries N.
   */
  uint32_t num_queries;
  /**
   * Most image tokens M the arena is planned for.
   */
  uint32_t max_image_tokens;
  /**
   * Language projection width d_llm (0: none).
   */
  uint32_t projection_dim;
  /**
   * Feed-forward activation: `QF_ACTIVATION_GELU`, `QF_ACTIVATION_GELU_TANH` or `QF_ACTIVATION_RELU`.
   */
  uint32_t activation;
  /**
   * LayerNorm epsilon.
   */
  float layer_norm_eps;
  /**
   * Longest instruction in tokens (InstructBLIP; 0: the blob has no text parts).
   */
  uint32_t max_text_tokens;
  /**
   * Vocabulary size (0 without text parts).
   */
  uint32_t vocab_size;
  /**
   * Bytes of the vocabulary's tokens (0 without text parts).
   */
  uint32_t vocab_bytes;
  /**
   * Weight storage: `QF_PRECISION_F32`, `QF_PRECISION_FP16` or `QF_PRECISION_INT8`.
   */
  uint32_t precision;
  /**
   * int8 group size (values per scale).
   */
  uint32_t group_size;
} qf_config;

/**
 * The names of the kernels a model runs with (`qf_model_kernels`), NUL-terminated, e.g.
 * `dsp_gemm_q8_smlad_4x1` on a Cortex-M4, `helium_gemm_q8_vmladav_2x4` on a Cortex-M55.
 */
typedef struct qf_kernels {
  /**
   * The int8 GEMM.
   */
  char q8[QF_KERNEL_NAME_BYTES];
  /**
   * The f32/fp16 GEMM.
   */
  char f[QF_KERNEL_NAME_BYTES];
  /**
   * The activation quantizer.
   */
  char quant[QF_KERNEL_NAME_BYTES];
} qf_kernels;

/**
 * Sizes read from a blob's header alone (`qf_header_sizes`): no checksum, no table, so it
 * is cheap and needs no alignment; a host tool can turn them into `#define`s for a static
 * arena (see `examples/tools/qf_sizes.c`). `qf_model_init` still validates the whole blob.
 */
typedef struct qf_sizes {
  /**
   * Bytes the header declares for the whole blob.
   */
  size_t blob_bytes;
  /**
   * Arena bytes a forward needs (= `qf_model_arena_bytes`).
   */
  size_t arena_bytes;
  /**
   * Image feature width d_v (= `qf_model_image_width`).
   */
  size_t image_width;
  /**
   * Most image tokens M.
   */
  size_t max_image_tokens;
  /**
   * Floats of the query output, N * d (= `qf_model_output_len`).
   */
  size_t output_len;
  /**
   * Floats of the projection, N * d_llm, 0 without one (= `qf_model_projected_len`).
   */
  size_t projected_len;
  /**
   * Longest instruction in tokens, 0 without text parts.
   */
  size_t max_text_tokens;
} qf_sizes;

/**
 * What `qf_tokenize` wrote.
 */
typedef struct qf_tokenized {
  /**
   * Ids written, `[CLS]` and `[SEP]` included.
   */
  size_t len;
  /**
   * Ids before truncation (`len` unless the text was truncated to fit).
   */
  size_t truncated_from;
} qf_tokenized;

/**
 * An image's cross-attention keys and values, made once by `qf_encode_image` for several
 * instructions (`qf_forward_encoded`). Its contents are private; it points into the caller's
 * cache buffer, which must stay valid and unchanged as long as the encoded image is used.
 */
typedef struct qf_encoded_image {
  /**
   * Private: the encoded image and a tag. Alignment 8.
   */
  uint64_t opaque[QF_ENCODED_IMAGE_WORDS];
} qf_encoded_image;

/**
 * Success.
 */
#define QF_OK 0

/**
 * A pointer argument that must not be NULL is NULL.
 */
#define QF_ERR_NULL 1

/**
 * A pointer is not aligned for its type: the blob, the arena and an encoded image's cache
 * need 16 bytes, float and `uint32_t` buffers 4, `qf_model` and the other structs 8.
 */
#define QF_ERR_MISALIGNED 2

/**
 * A buffer the call writes overlaps another buffer of the call.
 */
#define QF_ERR_OVERLAP 3

/**
 * The `qf_model` (or `qf_encoded_image`) was not filled by a successful `qf_model_init`
 * (`qf_encode_image`).
 */
#define QF_ERR_NOT_INITIALIZED 4

/**
 * The instruction text is not valid UTF-8.
 */
#define QF_ERR_UTF8 5

/**
 * The library panicked (a bug; Linux only, where the panic is caught at the boundary; bare
 * metal calls `qf_panic_handler` instead). The outputs are unspecified.
 */
#define QF_ERR_PANIC 6

/**
 * The core returned an error this version of the C API does not know (a newer core).
 */
#define QF_ERR_UNKNOWN 7

/**
 * The blob is shorter than its header, or than the size its header declares.
 */
#define QF_ERR_TRUNCATED 10

/**
 * The blob is longer than its header declares (pass exactly the blob, not a whole flash region).
 */
#define QF_ERR_TRAILING_BYTES 11

/**
 * Not a qformer blob (the first 8 bytes are not `QFMRBLOB`).
 */
#define QF_ERR_BAD_MAGIC 12

/**
 * The blob was written for another format version (re-run quantize).
 */
#define QF_ERR_UNSUPPORTED_VERSION 13

/**
 * A header field that must hold a fixed value does not.
 */
#define QF_ERR_BAD_HEADER 14

/**
 * The CRC-32 over the blob disagrees with the stored one: the blob is corrupted.
 */
#define QF_ERR_CHECKSUM 15

/**
 * A config field of the header is out of range.
 */
#define QF_ERR_INVALID_CONFIG 16

/**
 * A size derived from the config does not fit in memory addresses.
 */
#define QF_ERR_SIZE_OVERFLOW 17

/**
 * The tensor table has another number of entries than the config implies.
 */
#define QF_ERR_TENSOR_COUNT 18

/**
 * A tensor-table entry or a tensor's contents are inconsistent (shape, dtype, bounds, a NaN
 * weight, an int8 value of -128, a bad scale, ...).
 */
#define QF_ERR_TENSOR 19

/**
 * The blob's vocabulary tables are inconsistent (InstructBLIP).
 */
#define QF_ERR_VOCAB 20

/**
 * The arena is shorter than `qf_model_arena_bytes`.
 */
#define QF_ERR_ARENA_TOO_SMALL 30

/**
 * A buffer has the wrong length (`out_len`, `projected_len`, a cache shorter than
 * `qf_model_encoded_image_bytes`, a length whose bytes exceed the address space).
 */
#define QF_ERR_BUFFER_SIZE 31

/**
 * `tokens` is 0 or more than `qf_model_max_image_tokens`.
 */
#define QF_ERR_IMAGE_TOKENS 32

/**
 * The image features contain NaN or infinity (the forward is not run).
 */
#define QF_ERR_NON_FINITE_INPUT 33

/**
 * A projection output was given to a model without a language projection.
 */
#define QF_ERR_NO_PROJECTION 34

/**
 * The image features are not a whole number of tokens of d_v floats.
 */
#define QF_ERR_IMAGE_SHAPE 35

/**
 * The hidden state overflowed to NaN or infinity (features too large for f32 arithmetic);
 * the outputs are not valid.
 */
#define QF_ERR_NON_FINITE_ACTIVATION 36

/**
 * An instruction was given to a blob without text parts (BLIP-2, MiniGPT-4).
 */
#define QF_ERR_NO_TEXT 37

/**
 * The instruction has more ids than `qf_model_max_text_tokens`.
 */
#define QF_ERR_TEXT_TOKENS 38

/**
 * A token id is not below the vocabulary size.
 */
#define QF_ERR_TOKEN_ID 39

/**
 * An attention mask value is neither 0 nor 1.
 */
#define QF_ERR_MASK 40

/**
 * The encoded image was made by another model.
 */
#define QF_ERR_FOREIGN_IMAGE 41

/**
 * The instruction cannot be tokenized into the ids given (fewer than 2, for `[CLS]` and `[SEP]`).
 */
#define QF_ERR_TOKENIZE 42

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Validates the blob (`blob_len` bytes at `blob`, 16-byte aligned: the whole `.qfb` file,
 * e.g. in flash) and fills `model`. It checks the CRC-32 of the whole blob and every tensor,
 * so it reads every byte once (3.7 M instructions for the 814 KiB MCU model on a Cortex-M55).
 * The model points into the blob: keep the blob valid and unchanged as long as `model` is
 * used. On failure `model` is left not initialized (every other call on it returns
 * `QF_ERR_NOT_INITIALIZED` or 0).
 *
 * # Safety
 * `model` is NULL or points to a writable `qf_model`; `blob` is NULL or points to `blob_len`
 * readable bytes that stay valid and unchanged as long as `model` (or a copy) is used.
 */
qf_status qf_model_init(struct qf_model *model, const void *blob, size_t blob_len);

/**
 * Exact bytes of the arena `qf_forward` needs (0 if `model` is not initialized).
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`.
 */
size_t qf_model_arena_bytes(const struct qf_model *model);

/**
 * Floats per image token, d_v (0 if `model` is not initialized).
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`.
 */
size_t qf_model_image_width(const struct qf_model *model);

/**
 * Most image tokens M a forward accepts (0 if `model` is not initialized).
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`.
 */
size_t qf_model_max_image_tokens(const struct qf_model *model);

/**
 * Floats of the query output, N * d (0 if `model` is not initialized).
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`.
 */
size_t qf_model_output_len(const struct qf_model *model);

/**
 * Floats of the language projection, N * d_llm (0 without a projection, or if `model` is not
 * initialized).
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`.
 */
size_t qf_model_projected_len(const struct qf_model *model);

/**
 * Longest instruction in tokens (InstructBLIP), 0 for a blob without text parts (BLIP-2,
 * MiniGPT-4) or if `model` is not initialized.
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`.
 */
size_t qf_model_max_text_tokens(const struct qf_model *model);

/**
 * Bytes of the cache buffer `qf_encode_image` writes (0 if `model` is not initialized).
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`.
 */
size_t qf_model_encoded_image_bytes(const struct qf_model *model);

/**
 * The config of `model` into `*config`.
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`; `config` is NULL or points to a writable
 * `qf_config`.
 */
qf_status qf_model_config(const struct qf_model *model, struct qf_config *config);

/**
 * The names of the kernels `model` runs with into `*kernels`: on bare metal those compiled
 * for the target (`dsp_*` on a Cortex-M4/M7, `helium_*` on a Cortex-M55 built with the
 * `helium` feature), on Linux the best this CPU runs (detected by `qf_model_init`).
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`; `kernels` is NULL or points to a writable
 * `qf_kernels`.
 */
qf_status qf_model_kernels(const struct qf_model *model, struct qf_kernels *kernels);

/**
 * The sizes a blob's header states, without validating the blob (no checksum, no table;
 * any alignment): for a build step that sizes a static arena, or to check a flash region
 * before `qf_model_init`. `blob_len` may be just the header's 128 bytes.
 *
 * # Safety
 * `blob` is NULL or points to `blob_len` readable bytes; `sizes` is NULL or points to a
 * writable `qf_sizes`.
 */
qf_status qf_header_sizes(const void *blob, size_t blob_len, struct qf_sizes *sizes);

/**
 * Runs the Q-Former on one image without an instruction: `image` holds `tokens` x d_v
 * floats (row-major, `qf_model_image_width` per token, 4-byte aligned, finite), `arena`
 * `arena_len` bytes of scratch (16-byte aligned, at least `qf_model_arena_bytes`; its
 * contents need no initialization and mean nothing afterwards), `out` exactly
 * `qf_model_output_len` floats (`[N, d]`), `projected` NULL or exactly
 * `qf_model_projected_len` floats (`[N, d_llm]`; `projected_len` is ignored when it is NULL).
 * No buffer may overlap another. On an InstructBLIP blob this is the queries alone
 * (transformers' `InstructBlipQFormerModel` without `input_ids`). On an error the outputs
 * are unspecified.
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`; every other pointer is NULL or points to as
 * many elements as its length says (`arena`: `arena_len` bytes), readable (`image`) or
 * writable (`arena`, `out`, `projected`), and no other thread uses the arena or the outputs
 * during the call.
 */
qf_status qf_forward(const struct qf_model *model, const float *image, size_t tokens, void *arena, size_t arena_len, float *out, size_t out_len, float *projected, size_t projected_len);

/**
 * `qf_forward` with an InstructBLIP instruction: `ids` holds `ids_len` token ids (4-byte
 * aligned; `[CLS] ... [SEP]` as `qf_tokenize` or transformers' `InstructBlipProcessor` give
 * them, at most `qf_model_max_text_tokens`), `mask` is NULL (every id attended) or `ids_len`
 * bytes of 1 (attended) and 0 (padding). `QF_ERR_NO_TEXT` for a blob without text parts.
 *
 * # Safety
 * As for `qf_forward`; `ids` points to `ids_len` readable `uint32_t`, `mask` is NULL or
 * points to `ids_len` readable bytes.
 */
qf_status qf_forward_text(const struct qf_model *model, const float *image, size_t tokens, const uint32_t *ids, size_t ids_len, const uint8_t *mask, void *arena, size_t arena_len, float *out, size_t out_len, float *projected, size_t projected_len);

/**
 * Tokenizes the instruction `text` (`text_len` bytes of UTF-8, no NUL needed) with the blob's
 * own vocabulary, as transformers' `BertTokenizer` does: `[CLS] ... [SEP]` into `ids`
 * (`ids_cap` ids, 4-byte aligned), truncated to fit on the side the blob's tokenizer
 * truncates; `*result` (may be NULL) gets the count written and the count before
 * truncation. `QF_ERR_NO_TEXT` for a blob without text parts, `QF_ERR_UTF8` for text that
 * is not UTF-8.
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`; `text` is NULL or points to `text_len` readable
 * bytes; `ids` is NULL or points to `ids_cap` writable `uint32_t`; `result` is NULL or points
 * to a writable `qf_tokenized`.
 */
qf_status qf_tokenize(const struct qf_model *model, const char *text, size_t text_len, uint32_t *ids, size_t ids_cap, struct qf_tokenized *result);

/**
 * Projects the cross-attention keys and values of one image (`tokens` x d_v floats at
 * `image`) once into `cache` (`cache_len` bytes, 16-byte aligned, at least
 * `qf_model_encoded_image_bytes`), and fills `*encoded`, for several instructions about the
 * same image (`qf_forward_encoded`: bit-identical to `qf_forward_text` on the features).
 * `arena` is scratch as for `qf_forward`. `encoded` points into `cache`: keep the cache valid
 * and unchanged as long as `encoded` is used.
 *
 * # Safety
 * `model` is NULL or points to a `qf_model`; `image` to `tokens * qf_model_image_width`
 * readable floats; `cache` to `cache_len` writable bytes that stay valid and unchanged as
 * long as `encoded` is used; `arena` to `arena_len` writable bytes; `encoded` is NULL or
 * points to a writable `qf_encoded_image`.
 */
qf_status qf_encode_image(const struct qf_model *model, const float *image, size_t tokens, void *cache, size_t cache_len, void *arena, size_t arena_len, struct qf_encoded_image *encoded);

/**
 * `qf_forward_text` on an image encoded by `qf_encode_image`: the same output bytes, without
 * projecting the image's keys and values again. `ids` may be NULL with `ids_len` 0 for no
 * instruction (the queries alone). `QF_ERR_FOREIGN_IMAGE` if another model encoded it.
 *
 * # Safety
 * As for `qf_forward_text`; `encoded` is NULL or points to a `qf_encoded_image` whose cache
 * buffer is still valid and unchanged.
 */
qf_status qf_forward_encoded(const struct qf_model *model, const struct qf_encoded_image *encoded, const uint32_t *ids, size_t ids_len, const uint8_t *mask, void *arena, size_t arena_len, float *out, size_t out_len, float *projected, size_t projected_len);

/**
 * A short English description of `status` (a static NUL-terminated string; never NULL:
 * `"unknown status"` for a value this library does not define).
 */
const char *qf_status_str(qf_status status);

/**
 * The library's version, e.g. `"0.1.0"` (static, NUL-terminated).
 */
const char *qf_version(void);

/**
 * The firmware's panic hook (header: `qf_panic_handler`); weak default below.
 */
extern void qf_panic_handler(void);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* QFORMER_H */

#if defined(__cplusplus)
extern "C" {
#endif

/**
 * Bare metal only: called if the library panics (a bug: no input makes it panic). It must not
 * return. Define it in the firmware to log and reset; the library's weak default executes a
 * permanently undefined instruction (`udf`), which raises a HardFault on Cortex-M (a synchronous
 * exception on AArch64). On Linux it is never called: a panic is returned as QF_ERR_PANIC.
 */
void qf_panic_handler(void);

#if defined(__cplusplus)
}  /* extern "C" */
#endif
