/* gen: write numbered lines as fast as possible (benchmark load generator).
 *
 *   gen N        N lines "out 0000001" .. to stdout
 *   gen N M      N lines to stdout and M lines "err 0000001" .. to stderr,
 *                interleaved one by one (each stream is block-buffered, so the
 *                two pipes receive alternating 64 KiB chunks)
 *
 * Numbers are 7+ digits, zero padded, starting at 1; the last line of each
 * stream therefore is "out %07d" / "err %07d" with N / M.
 */
#include <stdio.h>
#include <stdlib.h>

static char obuf[1 << 16], ebuf[1 << 16];

static void line(FILE *f, const char *tag, long n) {
    char b[32];
    int i = 31;
    b[i--] = '\n';
    for (int d = 0; d < 7 || n; d++) { b[i--] = (char)('0' + n % 10); n /= 10; }
    b[i--] = ' ';
    for (int k = 2; k >= 0; k--) b[i--] = tag[k];
    fwrite(b + i + 1, 1, (size_t)(31 - i), f);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    long m = argc > 2 ? atol(argv[2]) : 0;
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    setvbuf(stderr, ebuf, _IOFBF, sizeof ebuf);
    for (long i = 1; i <= n || i <= m; i++) {
        if (i <= n) line(stdout, "out", i);
        if (i <= m) line(stderr, "err", i);
    }
    if (fflush(stdout) || fflush(stderr)) return 1;
    return 0;
}
