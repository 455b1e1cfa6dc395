/* consumer.c: a C program built with pkg-config against the installed copy. */
#include "consumer.h"

int main(int argc, char **argv)
{
	(void)argc;
	consumer_check_malloc(argv[0]);
	return 0;
}
