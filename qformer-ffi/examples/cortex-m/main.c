/* The int8 Q-Former from C on a Cortex-M: the blob in flash (read in place), the arena and
 * the outputs in static RAM sized at compile time from the blob's header (model_sizes.h, made
 * by qf_sizes), the image features in flash. Checks the compiled kernels, runs qf_forward,
 * compares the output with the host's (expected.f32) bit for bit and exits through semihosting
 * with status 0 only if all is well. CPU_NAME, KERNEL_PREFIX and CLOCK_MHZ come from the Makefile. */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "model_sizes.h"
#include "qformer.h"

/* blob.S: the model in section .qfb (flash, 16-byte aligned), the features and the expected
 * output in .rodata (flash). */
extern const uint8_t qf_blob[], qf_blob_end[];
extern const float qf_input[];
extern const uint8_t qf_input_end[], qf_expected[], qf_expected_end[];
extern uint32_t _stack_bottom[];

static qf_model model;
static _Alignas(QF_ALIGN) uint8_t arena[MODEL_ARENA_BYTES];
static float out[MODEL_OUTPUT_LEN + MODEL_PROJECTED_LEN];

#define PAINT 0xccccccccu

/* Instructions under QEMU -icount shift=0 (1 ns each) from SysTick ticks at CLOCK_MHZ. */
static uint64_t instructions(uint64_t t) {
    return t * 1000u / CLOCK_MHZ;
}

static uint32_t crc32(const uint8_t *p, uint32_t n) {
    uint32_t c = 0xffffffffu;
    for (uint32_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static int starts_with(const char *s, const char *prefix) {
    while (*prefix)
        if (*s++ != *prefix++) return 0;
    return 1;
}

static int fail(const char *what, qf_status s) {
    put("FAIL: ");
    put(what);
    put(": ");
    put(qf_status_str(s));
    put("\n");
    return 1;
}

int main(void) {
    /* Paint the free stack (from the end of .bss to just below here) to measure its peak. */
    uintptr_t sp;
    __asm volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *p = _stack_bottom; (uintptr_t)p < sp - 256; p++) *p = PAINT;
    ticks_start();
    size_t blob_len = (size_t)(qf_blob_end - qf_blob);
    size_t tokens = (size_t)(qf_input_end - (const uint8_t *)qf_input) / (MODEL_IMAGE_WIDTH * sizeof(float));

    put("qformer (C) on " CPU_NAME ": blob ");
    put_u(blob_len);
    put(" B at ");
    put_hex((uint32_t)qf_blob);
    put(" (flash), arena ");
    put_u(sizeof arena);
    put(" B at ");
    put_hex((uint32_t)arena);
    put(" (RAM)\n");

    uint64_t t0 = ticks();
    qf_status s = qf_model_init(&model, qf_blob, blob_len);
    uint64_t t1 = ticks();
    if (s != QF_OK) return fail("qf_model_init", s);
    qf_config c;
    qf_kernels k;
    qf_model_config(&model, &c);
    qf_model_kernels(&model, &k);
    put("model: ");
    put_u(c.num_layers);
    put(" layers, d ");
    put_u(c.hidden);
    put(", ");
    put_u(c.num_heads);
    put(" heads, ffn ");
    put_u(c.intermediate);
    put(", ");
    put_u(c.num_queries);
    put(" queries, image ");
    put_u(c.max_image_tokens);
    put(" x ");
    put_u(c.encoder_hidden);
    put(", projection ");
    put_u(c.projection_dim);
    put("; kernels ");
    put(k.q8);
    put(", ");
    put(k.f);
    put(", ");
    put(k.quant);
    put("\nqf_model_init (CRC-32 of the blob, table checks): ");
    put_u(instructions(t1 - t0));
    put(" instructions\n");

    int ok = 1;
    /* The compile-time sizes must be the model's (a blob swapped without rebuilding). */
    if (qf_model_arena_bytes(&model) != sizeof arena || qf_model_output_len(&model) != MODEL_OUTPUT_LEN ||
        qf_model_projected_len(&model) != MODEL_PROJECTED_LEN) {
        put("FAIL: model_sizes.h is not this blob's\n");
        return 1;
    }
    if (!starts_with(k.q8, KERNEL_PREFIX) || !starts_with(k.f, KERNEL_PREFIX) || !starts_with(k.quant, KERNEL_PREFIX)) {
        put("FAIL: the compiled kernels are not all " KERNEL_PREFIX "* ones\n");
        ok = 0;
    }

    t0 = ticks();
    s = qf_forward(&model, qf_input, tokens, arena, sizeof arena, out, MODEL_OUTPUT_LEN, out + MODEL_OUTPUT_LEN,
                   MODEL_PROJECTED_LEN);
    t1 = ticks();
    if (s != QF_OK) return fail("qf_forward", s);
    uint64_t forward = instructions(t1 - t0);
    uint32_t crc = crc32((const uint8_t *)out, sizeof out);
    put("forward: ");
    put_u(forward);
    put(" instructions\noutput: ");
    put_u(sizeof out / sizeof out[0]);
    put(" floats, crc32 ");
    put_hex(crc);
    put("\n");

    uint32_t *p = _stack_bottom;
    while (*p == PAINT) p++;
    uint32_t stack = (uint32_t)((uint8_t *)_stack_top_addr() - (uint8_t *)p);
    put("peak stack: ");
    put_u(stack);
    put(" B\n");

    size_t expected_len = (size_t)(qf_expected_end - qf_expected);
    if (expected_len != sizeof out || memcmp(out, qf_expected, sizeof out) != 0) {
        put("FAIL: the output differs from the host's (expected.f32)\n");
        ok = 0;
    } else {
        put("ok: ");
        put_u(sizeof out);
        put(" output bytes equal the host's bit for bit\n");
    }
    put("summary: cpu=" CPU_NAME_TOKEN " ok=");
    put(ok ? "true" : "false");
    put(" crc32=");
    put_hex(crc);
    put(" forward_instructions=");
    put_u(forward);
    put(" stack=");
    put_u(stack);
    put(" arena=");
    put_u(sizeof arena);
    put("\n");
    return ok ? 0 : 1;
}
