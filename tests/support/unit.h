/* unit.h: shared set-up of the unit tests (internal API, fake os). */
#ifndef EBB_TESTS_UNIT_H
#define EBB_TESTS_UNIT_H

#include <cstring>

#include "core/process/init.h"
#include "core/runtime/options.h"
#include "tests/support/os_fake.h"

/* Initializes the allocator core once (on the fake os) and sets an option. */
inline void unit_init()
{
	static bool done = init_slow();
	(void)done;
}

inline void unit_option(const char *name, const char *value)
{
	unit_init();
	options_set(name, std::strlen(name), value, std::strlen(value), false);
}

#endif
