/* startup_ctorlib.c: a shared library whose constructor allocates while the
 * program is still being loaded, possibly before ebbmalloc's own constructor
 * has run. It is not linked with ebbmalloc: ebb_* (and, in EBB_OVERRIDE
 * builds, malloc) are found in the program's global scope at load time. */
#include "startup_ctorlib.h"

static struct api_ctor_record g_lib_record;

const struct api_ctor_record *api_ctorlib_record(void)
{
	return &g_lib_record;
}

__attribute__((constructor)) static void api_ctorlib_init(void)
{
	api_ctor_allocate(&g_lib_record, 1);
}
