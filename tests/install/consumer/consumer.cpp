/* consumer.cpp: a C++ program built with find_package(ebbmalloc): malloc and
 * also operator new/delete are ebbmalloc's. */
#include "consumer.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

int main(int argc, char **argv)
{
	(void)argc;
	consumer_check_malloc(argv[0]);

	/* new: 112-byte class for 100 bytes, as for malloc. */
	std::unique_ptr<char[]> a(new char[100]);
	CONSUMER_CHECK(ebb_malloc_usable_size(a.get()) == 112);

	const size_t big = (size_t)16 << 20;
	ebb_stats_t before, during, after;
	ebb_stats_get(&before);
	auto *v = new std::vector<char>(big, 1);
	ebb_stats_get(&during);
	delete v;
	ebb_stats_get(&after);
	CONSUMER_CHECK(during.allocated >= before.allocated + big);
	CONSUMER_CHECK(after.allocated + big <= during.allocated + (1 << 20)); /* small blocks come and go */

	std::map<int, std::string> m;
	for (int i = 0; i < 10000; i++)
		m[i] = std::string(40, (char)('a' + i % 26));
	CONSUMER_CHECK(m.size() == 10000 && m[9999][0] == 'a' + 9999 % 26);
	printf("%s: operator new/delete are ebbmalloc's too\n", argv[0]);
	return 0;
}
