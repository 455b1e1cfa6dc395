// cxx_new.cpp: C++ operator new and delete in every standard form, on the
// same fast paths as malloc and free. A failed new calls the new-handler
// until it succeeds or there is none, then throws std::bad_alloc (the nothrow
// forms return nullptr instead). Built only with EBB_OVERRIDE.
#include <cstddef>
#include <cstdint>
#include <new>

#include "core/base/track.h"
#include "core/process/prof.h"
#include "core/runtime/report.h"
#include "ebbmalloc.h"
#include "os/os_prof.h"
#include "tcache/tcache.h"

// The C++ runtime that the slow path below needs (the new-handler, throwing
// and catching std::bad_alloc) is referenced weakly, and the library is
// linked with the C driver, so libebbmalloc.so does not load libstdc++ (and
// libm, libgcc_s: about 1 MiB of RSS) into every C program it is preloaded
// into. A program that calls operator new has a C++ runtime loaded, which
// resolves these references; the build links with --no-undefined, so a
// reference missing from this list fails the build rather than the load.
// (Not covered: a C program that loads C++ code with dlopen after starting.
// Its references stay unresolved, so a failed new there aborts with a
// message instead of throwing.)
asm(".weak _ZSt15get_new_handlerv\n"
    ".weak _ZNSt9bad_allocD1Ev\n"
    ".weak _ZTVSt9bad_alloc\n"
    ".weak _ZTISt9bad_alloc\n"
    ".weak _ZTVN10__cxxabiv117__class_type_infoE\n"
    ".weak _ZTVN10__cxxabiv120__si_class_type_infoE\n"
    ".weak __cxa_allocate_exception\n"
    ".weak __cxa_begin_catch\n"
    ".weak __cxa_end_catch\n"
    ".weak __cxa_throw\n"
    ".weak __gxx_personality_v0\n");

// The same symbol under a name of our own, so that its address can be
// tested: the compiler assumes std::get_new_handler itself is never null.
extern "C" void *ebb_cxx_runtime_probe() __asm__("_ZSt15get_new_handlerv") __attribute__((weak));

#if defined(__x86_64__)
// Sizes above TCACHE_DIRECT_MAX for the prof variants (core/api/api.c).
extern "C" void *api_prof_alloc_mid(std::size_t size);
#endif
// free's prof variant, which delete jumps to with prof on (core/api/api.c).
extern "C" void api_prof_free(void *p);

namespace {

// The fast paths, or (in the valgrind build) the entry points that tell
// memcheck about each block (core/base/track.h).
// patched: the prof variants' (their cache pointer from
// prof_tcache_patched, core/process/prof.h).
inline void *cxx_alloc(std::size_t n, bool patched = false)
{
	if (EBB_VALGRIND)
		return ebb_malloc(n);
#if defined(__x86_64__)
	if (patched)
		return n <= TCACHE_DIRECT_MAX ? tcache_alloc_direct(static_cast<tcache_t *>(prof_tcache_patched()), n)
					      : api_prof_alloc_mid(n);
#endif
	return tcache_alloc(n);
}

inline void cxx_free(void *p) noexcept
{
	if (EBB_VALGRIND)
		ebb_free(p);
	else
		tcache_free(p);
}

// The loop the standard prescribes for a failed allocation.
template <typename Alloc>
void *new_retry(Alloc alloc, bool nothrow)
{
	for (;;) {
		void *p = alloc();
		if (p != nullptr)
			return p;
		if (ebb_cxx_runtime_probe == nullptr) {
			// operator new called with no C++ runtime in the process
			// (a C program calling the mangled name): nothing to throw.
			if (nothrow)
				return nullptr;
			report_fatal("operator new(): out of memory, and no C++ runtime to throw std::bad_alloc");
		}
		std::new_handler handler = std::get_new_handler();
		if (handler == nullptr) {
			if (nothrow)
				return nullptr;
			throw std::bad_alloc();
		}
		if (nothrow) {
			try {
				handler();
			} catch (...) {
				return nullptr;
			}
		} else {
			handler();
		}
	}
}

[[gnu::noinline]] void *new_slow(std::size_t n, bool nothrow)
{
	return new_retry([n] { return ebb_malloc(n); }, nothrow);
}

[[gnu::noinline]] void *new_aligned(std::size_t n, std::align_val_t al, bool nothrow)
{
	std::size_t a = static_cast<std::size_t>(al);
	return new_retry([n, a] { return ebb_aligned_alloc(a, n); }, nothrow);
}

inline void *new_fast(std::size_t n, bool patched = false)
{
	void *p = cxx_alloc(n, patched);
	if (EBB_LIKELY(p != nullptr))
		return p;
	return new_slow(n, false);
}

inline void *new_fast_nothrow(std::size_t n, bool patched = false) noexcept
{
	void *p = cxx_alloc(n, patched);
	if (EBB_LIKELY(p != nullptr))
		return p;
	return new_slow(n, true);
}

// The heap profiler's variants (core/process/prof.h, core/api/api.c):
// sample, then the same paths. Reached by a tail call, so that the return
// address is the operator's caller, where the recorded stack starts.
[[gnu::noinline]] void *new_prof_slow(std::size_t n, bool nothrow)
{
	if (prof_should_sample(n)) {
		if (n > EBB_SMALL_MAX)
			tcache_large_tick(); // as the unsampled operator's would count
		void *p = prof_alloc(n, EBB_MIN_ALIGN, false, __builtin_return_address(0));
		if (p != nullptr)
			return p;
		return new_slow(n, nothrow);
	}
	return nothrow ? new_fast_nothrow(n) : new_fast(n);
}

} // namespace

// The operators' code: new, new nothrow and delete in every form are three
// functions under several names (the extra arguments of the other forms are
// ignored, which the x86-64 and AArch64 calling conventions allow). With
// prof on, api_cxx_prof_redirect makes new and new nothrow jump to their
// prof variants.
extern "C" {
[[gnu::noinline]] static PROF_PATCHED void *cxx_new_plain(std::size_t n) { return new_fast(n); }
[[gnu::noinline]] static PROF_PATCHED void *cxx_new_nothrow_plain(std::size_t n) noexcept { return new_fast_nothrow(n); }
[[gnu::noinline]] static PROF_PATCHED void cxx_delete_plain(void *p) noexcept { cxx_free(p); }

static PROF_PATCHED void *cxx_new_prof(std::size_t n)
{
	if (prof_tick_patched(n))
		return new_prof_slow(n, false);
	return new_fast(n, true);
}

static PROF_PATCHED void *cxx_new_nothrow_prof(std::size_t n) noexcept
{
	if (prof_tick_patched(n))
		return new_prof_slow(n, true);
	return new_fast_nothrow(n, true);
}

// delete jumps to free's prof variant (api_prof_free, core/api/api.c),
// which finds the profiler's inner samples on its slow path.
bool api_cxx_prof_redirect(void)
{
	return !EBB_VALGRIND && os_code_redirect((void *)cxx_new_plain, (void *)cxx_new_prof) &&
	       os_code_redirect((void *)cxx_new_nothrow_plain, (void *)cxx_new_nothrow_prof) &&
	       os_code_redirect((void *)cxx_delete_plain, (void *)api_prof_free);
}
}

#define EBB_CXX_API __attribute__((visibility("default")))
#define EBB_CXX_ALIAS(name) __attribute__((alias(#name)))
#pragma GCC diagnostic ignored "-Wattribute-alias"

EBB_CXX_API void *operator new(std::size_t n) EBB_CXX_ALIAS(cxx_new_plain);
EBB_CXX_API void *operator new[](std::size_t n) EBB_CXX_ALIAS(cxx_new_plain);
EBB_CXX_API void *operator new(std::size_t n, const std::nothrow_t &) noexcept EBB_CXX_ALIAS(cxx_new_nothrow_plain);
EBB_CXX_API void *operator new[](std::size_t n, const std::nothrow_t &) noexcept EBB_CXX_ALIAS(cxx_new_nothrow_plain);

EBB_CXX_API void operator delete(void *p) noexcept EBB_CXX_ALIAS(cxx_delete_plain);
EBB_CXX_API void operator delete[](void *p) noexcept EBB_CXX_ALIAS(cxx_delete_plain);
EBB_CXX_API void operator delete(void *p, const std::nothrow_t &) noexcept EBB_CXX_ALIAS(cxx_delete_plain);
EBB_CXX_API void operator delete[](void *p, const std::nothrow_t &) noexcept EBB_CXX_ALIAS(cxx_delete_plain);
EBB_CXX_API void operator delete(void *p, std::size_t) noexcept EBB_CXX_ALIAS(cxx_delete_plain);
EBB_CXX_API void operator delete[](void *p, std::size_t) noexcept EBB_CXX_ALIAS(cxx_delete_plain);

EBB_CXX_API void *operator new(std::size_t n, std::align_val_t a) { return new_aligned(n, a, false); }
EBB_CXX_API void *operator new[](std::size_t n, std::align_val_t a) { return new_aligned(n, a, false); }
EBB_CXX_API void *operator new(std::size_t n, std::align_val_t a, const std::nothrow_t &) noexcept
{
	return new_aligned(n, a, true);
}
EBB_CXX_API void *operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t &) noexcept
{
	return new_aligned(n, a, true);
}

EBB_CXX_API void operator delete(void *p, std::align_val_t) noexcept EBB_CXX_ALIAS(cxx_delete_plain);
EBB_CXX_API void operator delete[](void *p, std::align_val_t) noexcept EBB_CXX_ALIAS(cxx_delete_plain);
EBB_CXX_API void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept
	EBB_CXX_ALIAS(cxx_delete_plain);
EBB_CXX_API void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept
	EBB_CXX_ALIAS(cxx_delete_plain);
EBB_CXX_API void operator delete(void *p, std::size_t, std::align_val_t) noexcept EBB_CXX_ALIAS(cxx_delete_plain);
EBB_CXX_API void operator delete[](void *p, std::size_t, std::align_val_t) noexcept EBB_CXX_ALIAS(cxx_delete_plain);
