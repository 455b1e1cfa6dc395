/* prof_reload_lib.c: the two libraries of tests/prof/prof_reload.c, built
 * from this one file as libprof_reload_a.so (RELOAD_B undefined) and
 * libprof_reload_b.so (RELOAD_B defined). Their code and .eh_frame differ
 * only in immediates of the same length, so the return address inside
 * reload_site lands at the same offset in both, with a different rule:
 *
 *   a: frame of 0x18 bytes (CFA = rsp + 0x20, return address at rsp + 0x18)
 *   b: frame of 0x28 bytes (CFA = rsp + 0x30), and it stores at rsp + 0x18
 *      a return address into reload_stop, whose CFI says "no caller".
 *
 * A walker that applies a's cached rule to b's frame therefore ends the
 * stack at reload_stop instead of going on into the program's main: the
 * stale rule gives a whole, wrong stack rather than one the walker gives
 * up on (which libgcc would then take correctly).
 *
 * void reload_site(void (*fn)(void)) calls fn from that frame. */
#ifdef RELOAD_B
#define RELOAD_FRAME "0x28"
#define RELOAD_DECOY "0x18"
#else
#define RELOAD_FRAME "0x18"
#define RELOAD_DECOY "0x8"
#endif

__asm__(".text\n"
	".globl reload_site\n"
	".type reload_site, @function\n"
	".p2align 4\n"
	"reload_site:\n"
	".cfi_startproc\n"
	"sub $" RELOAD_FRAME ", %rsp\n"
	".cfi_adjust_cfa_offset " RELOAD_FRAME "\n"
	"lea reload_stop+1(%rip), %rax\n"
	"mov %rax, " RELOAD_DECOY "(%rsp)\n"
	"call *%rdi\n"
	"add $" RELOAD_FRAME ", %rsp\n"
	".cfi_adjust_cfa_offset -" RELOAD_FRAME "\n"
	"ret\n"
	".cfi_endproc\n"
	".size reload_site, .-reload_site\n"
	".p2align 4\n"
	".type reload_stop, @function\n"
	"reload_stop:\n"
	".cfi_startproc\n"
	".cfi_undefined rip\n"
	"nop\n"
	"nop\n"
	"ud2\n"
	".cfi_endproc\n"
	".size reload_stop, .-reload_stop\n");
