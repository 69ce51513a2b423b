/* The breakpoint instruction libdispatch executes when it detects misuse (macOS), for the lab's
 * breakpoint-trap scenario: int3 on x86-64, brk #0x1 on arm64. The loop makes the trap final:
 * a debugger that resumes without delivering SIGTRAP only reaches the same instruction again. */

void lab_breakpoint_trap(void) {
    for (;;) {
#if defined(__x86_64__) || defined(__i386__)
        __asm__ volatile("int3");
#elif defined(__aarch64__)
        __asm__ volatile("brk #0x1");
#else
#error "lab_breakpoint_trap: no breakpoint instruction known for this architecture"
#endif
    }
}
