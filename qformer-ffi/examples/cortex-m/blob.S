/* The model, the image features and the host's output, from firmware/models/mcu (the
 * Makefile puts that directory on the assembler's include path). The blob goes in .qfb, which
 * the linker script places in flash (16-byte aligned): the library reads it in place. */
    .section .qfb, "a"
    .balign 16
    .global qf_blob, qf_blob_end
qf_blob:
    .incbin "model.qfb"
qf_blob_end:

    .section .rodata.qf_input, "a"
    .balign 16
    .global qf_input, qf_input_end
qf_input:
    .incbin "input.f32"
qf_input_end:

    .section .rodata.qf_expected, "a"
    .balign 16
    .global qf_expected, qf_expected_end
qf_expected:
    .incbin "expected.f32"
qf_expected_end:

    .section .note.GNU-stack, "", %progbits
