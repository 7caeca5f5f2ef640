/* Startup of the C firmware for Cortex-M4 (mps2-an386) and Cortex-M55 (mps3-an547): vector
 * table, reset (FPU/MVE on before any compiler-generated FP code, .data copied, .bss zeroed),
 * SysTick wrap counter, fault handlers that report and exit, and semihosting output and exit. */
#include <stdint.h>

#include "board.h"

extern uint32_t _data_start[], _data_end[], _data_load[], _bss_start[], _bss_end[], _stack_top[];
int main(void);

void reset_handler(void);
void c_start(void);
static void fault_handler(void);
static void systick_handler(void);

/* Initial stack pointer and the handlers up to SysTick (exception 15). */
__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))_stack_top, reset_handler, fault_handler, fault_handler, fault_handler, fault_handler,
    fault_handler, 0, 0, 0, 0, fault_handler, fault_handler, 0, fault_handler, systick_handler,
};

/* CPACR: full access to CP10 and CP11 (FPU, and MVE on the M55) before any C runs. */
__attribute__((naked, noreturn)) void reset_handler(void) {
    __asm volatile(
        "ldr r0, =0xE000ED88\n"
        "ldr r1, [r0]\n"
        "orr r1, r1, #(0xF << 20)\n"
        "str r1, [r0]\n"
        "dsb\n"
        "isb\n"
        "b c_start\n");
}

void c_start(void) {
    for (uint32_t *s = _data_load, *d = _data_start; d < _data_end;) *d++ = *s++;
    for (uint32_t *d = _bss_start; d < _bss_end;) *d++ = 0;
    semihosting_exit(main());
}

/* ---- Semihosting (bkpt 0xab) ---- */

static uint32_t semihosting(uint32_t op, const void *arg) {
    register uint32_t r0 __asm("r0") = op;
    register const void *r1 __asm("r1") = arg;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void put(const char *s) {
    semihosting(0x04, s); /* SYS_WRITE0 */
}

void put_u(uint64_t v) {
    char buf[24], *p = buf + sizeof buf - 1;
    *p = 0;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(p);
}

void put_hex(uint32_t v) {
    char buf[11] = "0x";
    for (int i = 0; i < 8; i++) buf[2 + i] = "0123456789abcdef"[(v >> (28 - 4 * i)) & 0xf];
    buf[10] = 0;
    put(buf);
}

void semihosting_exit(int status) {
    /* SYS_EXIT_EXTENDED: ADP_Stopped_ApplicationExit with the exit status. */
    uint32_t block[2] = {0x20026, (uint32_t)status};
    semihosting(0x20, block);
    for (;;) {
    }
}

static void fault_handler(void) {
    put("FAIL: fault (HardFault or another fault handler)\n");
    semihosting_exit(1);
}

/* The library's panic hook (a panic is a bug in it): report and exit 1. */
void qf_panic_handler(void) {
    put("FAIL: libqformer panicked\n");
    semihosting_exit(1);
}

/* ---- SysTick: a 24-bit down counter at the core clock; its wraps counted here ---- */

#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)

static volatile uint32_t wraps;

static void systick_handler(void) {
    wraps++;
}

void ticks_start(void) {
    SYST_RVR = 0xFFFFFF;
    SYST_CVR = 0;
    SYST_CSR = 7; /* processor clock, interrupt, enable */
}

uint64_t ticks(void) {
    uint32_t w, v;
    do {
        w = wraps;
        v = SYST_CVR;
    } while (w != wraps);
    return (uint64_t)w * 0x1000000u + (0xFFFFFFu - v);
}

void *_stack_top_addr(void) {
    return _stack_top;
}
