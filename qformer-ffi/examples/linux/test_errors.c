/* The C API's error contract, from C: every kind of bad argument returns its own status.
 *
 *     test_errors MODEL.qfb INPUT.f32 [INSTRUCT.qfb [NOPROJ.qfb]]
 *
 * MODEL.qfb: a BLIP-2-style blob with a projection (the MCU model), INPUT.f32 its image
 * features; INSTRUCT.qfb: an InstructBLIP blob (tokenizer, instructions, encoded images);
 * NOPROJ.qfb: a blob without a language projection. Prints one line per check and
 * "test_errors: N passed, M failed"; exit status 0 when none failed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qformer.h"

static int passed, failed;

static void expect(const char *what, qf_status got, qf_status want) {
    if (got == want) {
        passed++;
        printf("ok   %-58s %s\n", what, qf_status_str(got));
    } else {
        failed++;
        printf("FAIL %-58s got %d (%s), want %d (%s)\n", what, got, qf_status_str(got), want, qf_status_str(want));
    }
}

static void expect_true(const char *what, int cond) {
    expect(what, cond ? QF_OK : QF_ERR_UNKNOWN, QF_OK);
}

/* `path` read into a 16-byte aligned buffer with `slack` spare bytes after it. */
static uint8_t *read_file(const char *path, size_t *len, size_t slack) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = aligned_alloc(QF_ALIGN, (n + slack + QF_ALIGN) / QF_ALIGN * QF_ALIGN);
    if (!buf || fread(buf, 1, n, f) != n) exit(1);
    fclose(f);
    *len = n;
    return buf;
}

static void *aligned(size_t n) {
    void *p = aligned_alloc(QF_ALIGN, (n + QF_ALIGN) / QF_ALIGN * QF_ALIGN + QF_ALIGN);
    if (!p) exit(1);
    memset(p, 0, n);
    return p;
}

/* The status strings: one per code, distinct, never NULL. */
static void statuses(void) {
    static const qf_status all[] = {
        QF_OK, QF_ERR_NULL, QF_ERR_MISALIGNED, QF_ERR_OVERLAP, QF_ERR_NOT_INITIALIZED, QF_ERR_UTF8, QF_ERR_PANIC,
        QF_ERR_UNKNOWN, QF_ERR_TRUNCATED, QF_ERR_TRAILING_BYTES, QF_ERR_BAD_MAGIC, QF_ERR_UNSUPPORTED_VERSION,
        QF_ERR_BAD_HEADER, QF_ERR_CHECKSUM, QF_ERR_INVALID_CONFIG, QF_ERR_SIZE_OVERFLOW, QF_ERR_TENSOR_COUNT,
        QF_ERR_TENSOR, QF_ERR_VOCAB, QF_ERR_ARENA_TOO_SMALL, QF_ERR_BUFFER_SIZE, QF_ERR_IMAGE_TOKENS,
        QF_ERR_NON_FINITE_INPUT, QF_ERR_NO_PROJECTION, QF_ERR_IMAGE_SHAPE, QF_ERR_NON_FINITE_ACTIVATION,
        QF_ERR_NO_TEXT, QF_ERR_TEXT_TOKENS, QF_ERR_TOKEN_ID, QF_ERR_MASK, QF_ERR_FOREIGN_IMAGE, QF_ERR_TOKENIZE,
    };
    size_t n = sizeof all / sizeof all[0];
    int distinct = 1;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (all[i] == all[j] || strcmp(qf_status_str(all[i]), qf_status_str(all[j])) == 0) distinct = 0;
    expect_true("every status has its own code and text", distinct);
    expect_true("qf_status_str of an unknown code", strcmp(qf_status_str(999), "unknown status") == 0);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.qfb INPUT.f32 [INSTRUCT.qfb [NOPROJ.qfb]]\n", argv[0]);
        return 2;
    }
    size_t len, input_len;
    uint8_t *blob = read_file(argv[1], &len, 32);
    float *image = (float *)read_file(argv[2], &input_len, 0);
    statuses();

    /* ---- A null pointer ---- */
    qf_model m;
    expect("init: model NULL", qf_model_init(NULL, blob, len), QF_ERR_NULL);
    expect("init: blob NULL", qf_model_init(&m, NULL, len), QF_ERR_NULL);
    expect("config of a NULL model", qf_model_config(NULL, &(qf_config){0}), QF_ERR_NULL);
    expect_true("sizes of a NULL model are 0", qf_model_arena_bytes(NULL) == 0 && qf_model_output_len(NULL) == 0);

    /* ---- A wrong blob ---- */
    uint8_t *bad = aligned(len + 32);
    memcpy(bad, blob, len);
    bad[0] ^= 1;
    expect("wrong blob: magic", qf_model_init(&m, bad, len), QF_ERR_BAD_MAGIC);
    expect("the model of a failed init", qf_forward(&m, image, 1, bad, len, (float *)bad, 1, NULL, 0),
           QF_ERR_NOT_INITIALIZED);
    memcpy(bad, blob, len);
    bad[8] ^= 0x40; /* the format version */
    expect("wrong blob: version", qf_model_init(&m, bad, len), QF_ERR_UNSUPPORTED_VERSION);
    memcpy(bad, blob, len);
    bad[len / 2] ^= 0x10; /* a bit of the weights */
    expect("wrong blob: one bit flipped", qf_model_init(&m, bad, len), QF_ERR_CHECKSUM);
    memcpy(bad, blob, len);
    expect("wrong blob: truncated", qf_model_init(&m, bad, len - 16), QF_ERR_TRUNCATED);
    expect("wrong blob: header only", qf_model_init(&m, bad, 100), QF_ERR_TRUNCATED);
    expect("wrong blob: trailing bytes", qf_model_init(&m, bad, len + 16), QF_ERR_TRAILING_BYTES);
    memset(bad, 0, len);
    expect("wrong blob: zeros", qf_model_init(&m, bad, len), QF_ERR_BAD_MAGIC);

    /* ---- A misaligned buffer ---- */
    memcpy(bad + 1, blob, len);
    expect("misaligned blob (16 + 1)", qf_model_init(&m, bad + 1, len), QF_ERR_MISALIGNED);
    uint8_t *model_bytes = aligned(sizeof(qf_model) + 8);
    expect("misaligned qf_model", qf_model_init((qf_model *)(model_bytes + 4), blob, len), QF_ERR_MISALIGNED);

    /* ---- A good model ---- */
    qf_model zero;
    memset(&zero, 0, sizeof zero);
    expect("a zeroed (never initialized) model", qf_model_config(&zero, &(qf_config){0}), QF_ERR_NOT_INITIALIZED);
    expect("init", qf_model_init(&m, blob, len), QF_OK);
    size_t width = qf_model_image_width(&m), out_len = qf_model_output_len(&m);
    size_t proj_len = qf_model_projected_len(&m), arena_len = qf_model_arena_bytes(&m);
    size_t tokens = input_len / (width * sizeof(float)), max_tokens = qf_model_max_image_tokens(&m);
    qf_sizes sz;
    expect("qf_header_sizes from the first 128 bytes", qf_header_sizes(blob, 128, &sz), QF_OK);
    expect_true("header sizes equal the model's", sz.arena_bytes == arena_len && sz.image_width == width &&
                                                      sz.output_len == out_len && sz.projected_len == proj_len &&
                                                      sz.blob_bytes == len && sz.max_image_tokens == max_tokens);
    expect("qf_header_sizes of a short header", qf_header_sizes(blob, 64, &sz), QF_ERR_TRUNCATED);
    qf_model copy = m; /* a model may be copied */
    uint8_t *arena = aligned(arena_len + 64);
    float *out = aligned((out_len + proj_len) * sizeof(float) + 64);
    float *proj = out + out_len;
    expect("forward", qf_forward(&m, image, tokens, arena, arena_len, out, out_len, proj, proj_len), QF_OK);
    float *again = aligned((out_len + proj_len) * sizeof(float));
    expect("forward on a copy of the model, arena longer than needed",
           qf_forward(&copy, image, tokens, arena, arena_len + 64, again, out_len, again + out_len, proj_len), QF_OK);
    expect_true("the copy's output is bit-identical", memcmp(out, again, (out_len + proj_len) * sizeof(float)) == 0);

    /* ---- A short arena ---- */
    expect("short arena (one byte less)",
           qf_forward(&m, image, tokens, arena, arena_len - 1, out, out_len, proj, proj_len), QF_ERR_ARENA_TOO_SMALL);
    expect("empty arena", qf_forward(&m, image, tokens, arena, 0, out, out_len, NULL, 0), QF_ERR_ARENA_TOO_SMALL);

    /* ---- Null and misaligned buffers of a forward ---- */
    expect("forward: model NULL", qf_forward(NULL, image, tokens, arena, arena_len, out, out_len, NULL, 0),
           QF_ERR_NULL);
    expect("forward: image NULL", qf_forward(&m, NULL, tokens, arena, arena_len, out, out_len, NULL, 0), QF_ERR_NULL);
    expect("forward: arena NULL", qf_forward(&m, image, tokens, NULL, arena_len, out, out_len, NULL, 0), QF_ERR_NULL);
    expect("forward: out NULL", qf_forward(&m, image, tokens, arena, arena_len, NULL, out_len, NULL, 0), QF_ERR_NULL);
    expect("forward: arena misaligned (16 + 8)",
           qf_forward(&m, image, tokens, arena + 8, arena_len, out, out_len, NULL, 0), QF_ERR_MISALIGNED);
    expect("forward: out misaligned (4 + 2)",
           qf_forward(&m, image, tokens, arena, arena_len, (float *)((uint8_t *)out + 2), out_len, NULL, 0),
           QF_ERR_MISALIGNED);
    float *image_odd = (float *)((uint8_t *)aligned(input_len + 8) + 1);
    memcpy(image_odd, image, input_len);
    expect("forward: image misaligned (4 + 1)",
           qf_forward(&m, image_odd, tokens, arena, arena_len, out, out_len, NULL, 0), QF_ERR_MISALIGNED);

    /* ---- Lengths, overlap, values ---- */
    expect("forward: out_len one short", qf_forward(&m, image, tokens, arena, arena_len, out, out_len - 1, NULL, 0),
           QF_ERR_BUFFER_SIZE);
    expect("forward: projected_len one more",
           qf_forward(&m, image, tokens, arena, arena_len, out, out_len, proj, proj_len + 1), QF_ERR_BUFFER_SIZE);
    expect("forward: 0 image tokens", qf_forward(&m, image, 0, arena, arena_len, out, out_len, NULL, 0),
           QF_ERR_IMAGE_TOKENS);
    expect("forward: max_image_tokens + 1",
           qf_forward(&m, image, max_tokens + 1, arena, arena_len, out, out_len, NULL, 0), QF_ERR_IMAGE_TOKENS);
    expect("forward: SIZE_MAX image tokens",
           qf_forward(&m, image, SIZE_MAX, arena, arena_len, out, out_len, NULL, 0), QF_ERR_IMAGE_TOKENS);
    expect("forward: out inside the arena",
           qf_forward(&m, image, tokens, arena, arena_len, (float *)(arena + 64), out_len, NULL, 0), QF_ERR_OVERLAP);
    expect("forward: projected over out",
           qf_forward(&m, image, tokens, arena, arena_len, out, out_len, out + 1, proj_len), QF_ERR_OVERLAP);
    expect("forward: out over the image", qf_forward(&m, image, tokens, arena, arena_len, image, out_len, NULL, 0),
           QF_ERR_OVERLAP);
    float saved = image[5];
    image[5] = NAN;
    expect("forward: NaN in the features", qf_forward(&m, image, tokens, arena, arena_len, out, out_len, NULL, 0),
           QF_ERR_NON_FINITE_INPUT);
    image[5] = INFINITY;
    expect("forward: infinity in the features",
           qf_forward(&m, image, tokens, arena, arena_len, out, out_len, NULL, 0), QF_ERR_NON_FINITE_INPUT);
    image[5] = saved;
    uint32_t ids[4] = {101, 102, 0, 0};
    expect("instruction for a blob without text parts",
           qf_forward_text(&m, image, tokens, ids, 2, NULL, arena, arena_len, out, out_len, NULL, 0), QF_ERR_NO_TEXT);
    expect("tokenize with a blob without text parts", qf_tokenize(&m, "a cat", 5, ids, 4, NULL), QF_ERR_NO_TEXT);
    qf_kernels k;
    expect("kernel names", qf_model_kernels(&m, &k), QF_OK);
    expect_true("kernel names are NUL-terminated, non-empty", k.q8[0] && memchr(k.q8, 0, sizeof k.q8) && k.f[0] &&
                                                                  k.quant[0]);
    printf("     (kernels: %s, %s, %s)\n", k.q8, k.f, k.quant);

    /* ---- InstructBLIP: tokenizer, instructions, encoded images ---- */
    if (argc > 3) {
        size_t ilen;
        uint8_t *iblob = read_file(argv[3], &ilen, 0);
        qf_model ib;
        expect("InstructBLIP init", qf_model_init(&ib, iblob, ilen), QF_OK);
        size_t iw = qf_model_image_width(&ib), io = qf_model_output_len(&ib), ia = qf_model_arena_bytes(&ib);
        size_t max_text = qf_model_max_text_tokens(&ib), it = qf_model_max_image_tokens(&ib);
        float *feat = aligned(it * iw * sizeof(float));
        for (size_t i = 0; i < it * iw; i++) feat[i] = sinf((float)i * 0.37f) * (i % iw == 7 ? 20.0f : 1.0f);
        uint8_t *iarena = aligned(ia);
        float *o1 = aligned(io * sizeof(float)), *o2 = aligned(io * sizeof(float));
        uint32_t *tid = aligned(max_text * sizeof(uint32_t) + 4);
        qf_tokenized t;
        const char *q = "What is the colour of the car in this picture?";
        expect("tokenize", qf_tokenize(&ib, q, strlen(q), tid, max_text, &t), QF_OK);
        printf("     (%zu ids:", t.len);
        for (size_t i = 0; i < t.len; i++) printf(" %u", tid[i]);
        printf(")\n");
        expect("tokenize: invalid UTF-8", qf_tokenize(&ib, "caf\xc3", 4, tid, max_text, &t), QF_ERR_UTF8);
        expect("tokenize: room for 1 id", qf_tokenize(&ib, q, strlen(q), tid, 1, &t), QF_ERR_TOKENIZE);
        expect("tokenize: text NULL", qf_tokenize(&ib, NULL, 3, tid, max_text, &t), QF_ERR_NULL);
        expect("tokenize: ids misaligned",
               qf_tokenize(&ib, q, strlen(q), (uint32_t *)((uint8_t *)tid + 2), max_text - 1, &t), QF_ERR_MISALIGNED);
        expect("tokenize", qf_tokenize(&ib, q, strlen(q), tid, max_text, &t), QF_OK);
        expect("forward_text",
               qf_forward_text(&ib, feat, it, tid, t.len, NULL, iarena, ia, o1, io, NULL, 0), QF_OK);
        uint8_t *mask = aligned(max_text);
        memset(mask, 1, t.len);
        expect("forward_text with an all-ones mask",
               qf_forward_text(&ib, feat, it, tid, t.len, mask, iarena, ia, o2, io, NULL, 0), QF_OK);
        expect_true("all-ones mask = no mask, bit for bit", memcmp(o1, o2, io * sizeof(float)) == 0);
        mask[1] = 2;
        expect("forward_text: mask value 2",
               qf_forward_text(&ib, feat, it, tid, t.len, mask, iarena, ia, o2, io, NULL, 0), QF_ERR_MASK);
        uint32_t saved_id = tid[1];
        tid[1] = 0xffffffu;
        expect("forward_text: token id beyond the vocabulary",
               qf_forward_text(&ib, feat, it, tid, t.len, NULL, iarena, ia, o2, io, NULL, 0), QF_ERR_TOKEN_ID);
        tid[1] = saved_id;
        expect("forward_text: max_text_tokens + 1 ids",
               qf_forward_text(&ib, feat, it, tid, max_text + 1, NULL, iarena, ia, o2, io, NULL, 0),
               QF_ERR_TEXT_TOKENS);
        expect("forward_text: ids NULL",
               qf_forward_text(&ib, feat, it, NULL, t.len, NULL, iarena, ia, o2, io, NULL, 0), QF_ERR_NULL);
        /* Many questions: the image encoded once. */
        size_t cache_len = qf_model_encoded_image_bytes(&ib);
        uint8_t *cache = aligned(cache_len);
        qf_encoded_image enc, zero_enc;
        memset(&zero_enc, 0, sizeof zero_enc);
        expect("encode_image: short cache",
               qf_encode_image(&ib, feat, it, cache, cache_len - 1, iarena, ia, &enc), QF_ERR_BUFFER_SIZE);
        expect("encode_image: cache misaligned",
               qf_encode_image(&ib, feat, it, cache + 4, cache_len, iarena, ia, &enc), QF_ERR_MISALIGNED);
        expect("encode_image", qf_encode_image(&ib, feat, it, cache, cache_len, iarena, ia, &enc), QF_OK);
        memset(o2, 0, io * sizeof(float));
        expect("forward_encoded",
               qf_forward_encoded(&ib, &enc, tid, t.len, NULL, iarena, ia, o2, io, NULL, 0), QF_OK);
        expect_true("encoded image = features, bit for bit", memcmp(o1, o2, io * sizeof(float)) == 0);
        expect("forward_encoded: never encoded",
               qf_forward_encoded(&ib, &zero_enc, tid, t.len, NULL, iarena, ia, o2, io, NULL, 0),
               QF_ERR_NOT_INITIALIZED);
        expect("forward_encoded: out inside the cache",
               qf_forward_encoded(&ib, &enc, tid, t.len, NULL, iarena, ia, (float *)cache, io, NULL, 0),
               QF_ERR_OVERLAP);
        expect("forward_encoded on another model",
               qf_forward_encoded(&m, &enc, NULL, 0, NULL, arena, arena_len, out, out_len, NULL, 0),
               QF_ERR_FOREIGN_IMAGE);
        expect("forward_encoded, no instruction",
               qf_forward_encoded(&ib, &enc, NULL, 0, NULL, iarena, ia, o2, io, NULL, 0), QF_OK);
        expect("forward, queries alone", qf_forward(&ib, feat, it, iarena, ia, o1, io, NULL, 0), QF_OK);
        expect_true("queries alone: encoded = features, bit for bit", memcmp(o1, o2, io * sizeof(float)) == 0);
    }
    if (argc > 4) {
        size_t nlen;
        uint8_t *nblob = read_file(argv[4], &nlen, 0);
        qf_model np;
        expect("init (no projection)", qf_model_init(&np, nblob, nlen), QF_OK);
        size_t nw = qf_model_image_width(&np), no = qf_model_output_len(&np), na = qf_model_arena_bytes(&np);
        float *nf = aligned(nw * sizeof(float)), *nout = aligned((no + 8) * sizeof(float));
        uint8_t *narena = aligned(na);
        expect_true("projected_len of a model without projection is 0", qf_model_projected_len(&np) == 0);
        expect("forward: projection output without a projection",
               qf_forward(&np, nf, 1, narena, na, nout, no, nout + no, 8), QF_ERR_NO_PROJECTION);
        expect("forward (no projection)", qf_forward(&np, nf, 1, narena, na, nout, no, NULL, 0), QF_OK);
    }
    printf("test_errors: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
