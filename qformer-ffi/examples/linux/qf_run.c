/* qf_run: runs a qformer blob on image features with libqformer and compares the output with
 * an expected file bit for bit.
 *
 *     qf_run MODEL.qfb INPUT.f32 [EXPECTED.f32]
 *
 * INPUT.f32: the image features, M x d_v little-endian floats. EXPECTED.f32: the query output
 * (N x d floats), optionally followed by the projection (N x d_llm). Exit status 0 when the
 * output equals EXPECTED bit for bit (or when none is given), 1 otherwise. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qformer.h"

/* The whole file at `path` in a 16-byte aligned buffer (the blob needs 16; floats need 4). */
static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = aligned_alloc(QF_ALIGN, ((size_t)n + QF_ALIGN - 1) / QF_ALIGN * QF_ALIGN);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: cannot read\n", path);
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static uint32_t crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL.qfb INPUT.f32 [EXPECTED.f32]\n", argv[0]);
        return 2;
    }
    size_t blob_len, input_len, expected_len = 0;
    void *blob = read_file(argv[1], &blob_len);
    float *image = read_file(argv[2], &input_len);
    uint8_t *expected = argc == 4 ? read_file(argv[3], &expected_len) : NULL;
    if (!blob || !image || (argc == 4 && !expected)) return 1;

    qf_model model; /* caller storage: QF_MODEL_BYTES on the stack */
    qf_status s = qf_model_init(&model, blob, blob_len);
    if (s != QF_OK) {
        fprintf(stderr, "%s: %s (status %d)\n", argv[1], qf_status_str(s), s);
        return 1;
    }
    qf_config c;
    qf_kernels k;
    qf_model_config(&model, &c);
    qf_model_kernels(&model, &k);
    size_t width = qf_model_image_width(&model);
    size_t out_len = qf_model_output_len(&model), proj_len = qf_model_projected_len(&model);
    size_t arena_len = qf_model_arena_bytes(&model);
    printf("qformer %s: %u layers, d %u, %u heads, %u queries, image up to %u x %u, projection %u, %s; arena %zu B\n",
           qf_version(), c.num_layers, c.hidden, c.num_heads, c.num_queries, c.max_image_tokens, c.encoder_hidden,
           c.projection_dim, c.precision == QF_PRECISION_INT8 ? "int8" : c.precision == QF_PRECISION_FP16 ? "fp16" : "f32",
           arena_len);
    printf("kernels: int8 GEMM %s, float GEMM %s, quantizer %s\n", k.q8, k.f, k.quant);
    if (input_len % (width * sizeof(float)) != 0) {
        fprintf(stderr, "%s: %zu bytes is not a whole number of %zu-float tokens\n", argv[2], input_len, width);
        return 1;
    }
    size_t tokens = input_len / (width * sizeof(float));

    void *arena = aligned_alloc(QF_ALIGN, (arena_len + QF_ALIGN - 1) / QF_ALIGN * QF_ALIGN);
    /* Query output, then the projection: the layout of the expected files. */
    float *out = calloc(out_len + proj_len, sizeof(float));
    if (!arena || !out) return 1;
    s = qf_forward(&model, image, tokens, arena, arena_len, out, out_len, proj_len ? out + out_len : NULL, proj_len);
    if (s != QF_OK) {
        fprintf(stderr, "qf_forward: %s (status %d)\n", qf_status_str(s), s);
        return 1;
    }
    size_t bytes = (out_len + proj_len) * sizeof(float);
    printf("output: %zu floats (%zu image tokens), crc32 0x%08x\n", out_len + proj_len, tokens,
           crc32((const uint8_t *)out, bytes));
    int ok = 1;
    if (expected) {
        size_t n = expected_len == out_len * sizeof(float) ? out_len * sizeof(float) : bytes;
        ok = expected_len == n && memcmp(out, expected, n) == 0;
        if (ok) {
            printf("ok: %zu output bytes equal %s bit for bit\n", n, argv[3]);
        } else {
            printf("FAIL: the output differs from %s (%zu bytes there, %zu here)\n", argv[3], expected_len, n);
        }
    }
    free(out);
    free(arena);
    free(expected);
    free(image);
    free(blob); /* after the model's last use */
    return ok ? 0 : 1;
}
