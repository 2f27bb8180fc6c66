/*
 * Runs a fuzz target without libFuzzer: over the files (or directories of
 * files) given, and then over random mutations of them for a number of
 * rounds (the seed makes runs repeatable). CI runs this under ASan/UBSan.
 *   replay [-r ROUNDS] [-s SEED] [-w FILE] FILE|DIR...
 * -w writes each input to FILE before running it: after a crash, FILE
 * holds the input that crashed (for libFuzzer or a debugger).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, as for libFuzzer: a target that needs a VM makes it here (and
 * exits 77 when it cannot, which the test harness counts as a skip). */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define MAX_SEEDS 256
static uint8_t *seeds[MAX_SEEDS];
static size_t lens[MAX_SEEDS];
static unsigned nseeds;

static void load(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		perror(path);
		exit(2);
	}
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		struct dirent *e;
		while (d && (e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			char p[4096];
			snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
			load(p);
		}
		if (d)
			closedir(d);
		return;
	}
	FILE *f = fopen(path, "rb");
	if (!f || nseeds == MAX_SEEDS) {
		perror(path);
		exit(2);
	}
	uint8_t *b = malloc((size_t)st.st_size + 1);
	size_t n = b ? fread(b, 1, (size_t)st.st_size, f) : 0;
	fclose(f);
	seeds[nseeds] = b;
	lens[nseeds++] = n;
}

static const char *save;

static void run(const uint8_t *b, size_t len)
{
	if (save) {
		FILE *f = fopen(save, "wb");
		if (!f || fwrite(b, 1, len, f) != len || fclose(f)) {
			perror(save);
			exit(2);
		}
	}
	LLVMFuzzerTestOneInput(b, len);
}

static uint64_t rng;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int main(int argc, char **argv)
{
	unsigned long rounds = 10000;
	rng = 0x9e3779b97f4a7c15ull;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i += 2) {
		if (i + 1 >= argc)
			return 2;
		if (!strcmp(argv[i], "-r"))
			rounds = strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "-w"))
			save = argv[i + 1];
		else if (!strcmp(argv[i], "-s"))
			rng = strtoull(argv[i + 1], NULL, 0) | 1;
		else
			return 2;
	}
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (; i < argc; i++)
		load(argv[i]);
	if (!nseeds) {
		fprintf(stderr, "replay: no inputs\n");
		return 2;
	}
	for (unsigned k = 0; k < nseeds; k++)
		run(seeds[k], lens[k]);
	for (unsigned long r = 0; r < rounds; r++) {
		unsigned k = (unsigned)(next() % nseeds);
		size_t len = lens[k];
		switch (next() % 4) {
		case 0: len = len ? next() % len : 0; break;	/* truncate */
		case 1: len += next() % 64; break;		/* extend */
		default: break;
		}
		uint8_t *b = malloc(len ? len : 1);
		for (size_t j = 0; j < len; j++)
			b[j] = j < lens[k] ? seeds[k][j] : (uint8_t)next();
		for (unsigned flips = (unsigned)(next() % 16); flips-- && len;) {
			size_t at = next() % len;
			switch (next() % 3) {
			case 0: b[at] ^= (uint8_t)(1u << (next() % 8)); break;
			case 1: b[at] = (uint8_t)next(); break;
			default: b[at] = (uint8_t[]){ 0, 0xff, 0x7f, 0x80, 1 }[next() % 5];
			}
		}
		run(b, len);
		free(b);
	}
	printf("replay: %u inputs and %lu mutations, no failure\n", nseeds, rounds);
	return 0;
}
