/*
 * uml-xstate-shim.c: LD_PRELOAD library for User-Mode Linux on hosts with a large
 * XSAVE area (tools/run-in-esp-kernel.sh builds and uses it).
 *
 * UML saves and restores its guest processes' FPU state with
 * ptrace(PTRACE_GETREGSET / PTRACE_SETREGSET, NT_X86_XSTATE) through a buffer of a
 * fixed size.  Linux accepts a SETREGSET of that regset only with the whole
 * user XSAVE area (arch/x86/kernel/fpu/regset.c: anything else is EFAULT), which
 * on a host with AVX-512 and AMX is several KiB, larger than UML's buffer: UML
 * then panics when it starts init ("ptrace set fp regs failed, errno = 14").
 *
 * This library wraps ptrace() for that one regset: a GET reads the whole area and
 * gives the caller its first iov_len octets; a SET reads the whole area, lays the
 * caller's octets over its beginning and writes the whole area back.  The parts
 * UML does not know (AVX-512, AMX state) stay as the task left them.  Every other
 * ptrace request passes through unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif

typedef long (*ptrace_fn)(enum __ptrace_request, pid_t, void *, void *);

/* larger than any XSAVE area (AMX: about 11 KiB); the kernel says how much it used */
static __thread unsigned char whole[65536] __attribute__((aligned(64)));

long ptrace(enum __ptrace_request req, ...)
{
    static ptrace_fn real;
    va_list ap;
    pid_t pid;
    void *addr, *data;

    va_start(ap, req);
    pid = va_arg(ap, pid_t);
    addr = va_arg(ap, void *);
    data = va_arg(ap, void *);
    va_end(ap);
    if (!real)
        real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    if ((req == PTRACE_GETREGSET || req == PTRACE_SETREGSET)
        && (unsigned long)addr == NT_X86_XSTATE && data != NULL) {
        struct iovec *iov = data;
        struct iovec all = { whole, sizeof whole };
        size_t n;
        long r = real(PTRACE_GETREGSET, pid, addr, &all);

        if (r < 0)
            return r;
        n = iov->iov_len < all.iov_len ? iov->iov_len : all.iov_len;
        if (req == PTRACE_GETREGSET) {
            memcpy(iov->iov_base, whole, n);
            iov->iov_len = n;
            return 0;
        }
        memcpy(whole, iov->iov_base, n);
        return real(PTRACE_SETREGSET, pid, addr, &all);
    }
    return real(req, pid, addr, data);
}
