/* The library's version, for programs that check what they run against. */
#include "fdvm/version.h"

const char *fdvm_version(void)
{
	return FDVM_VERSION_STRING;
}
