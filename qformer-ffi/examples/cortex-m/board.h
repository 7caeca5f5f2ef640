/* What startup.c gives main.c: semihosting output and exit, the SysTick counter. */
#ifndef BOARD_H
#define BOARD_H
#include <stdint.h>

void put(const char *s);
void put_u(uint64_t v);
void put_hex(uint32_t v);
void semihosting_exit(int status) __attribute__((noreturn));
void ticks_start(void);
uint64_t ticks(void);
/* The initial stack pointer (the top of RAM). */
void *_stack_top_addr(void);

#endif
