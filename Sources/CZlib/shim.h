#include <zlib.h>

// deflateInit2 / inflateInit2 are macros that Swift cannot import.
static inline int halley_deflateInit2(z_streamp strm, int level, int method, int windowBits,
                                      int memLevel, int strategy) {
    return deflateInit2(strm, level, method, windowBits, memLevel, strategy);
}
static inline int halley_inflateInit2(z_streamp strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}
