// libFuzzer target: the Accept header (untrusted) and the format argument
// never make wants_prometheus() read out of bounds, and its answer does not
// depend on anything but the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>

#include "core/status.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // An exact-size heap copy so ASan sees any read past the end; the first
    // byte splits the input into the format argument and the header.
    std::unique_ptr<char[]> buf(new char[size ? size : 1]);
    if (size) std::memcpy(buf.get(), data, size);
    std::string_view all(buf.get(), size);
    std::size_t cut = size ? static_cast<unsigned char>(all[0]) % (size + 1) : 0;
    std::string_view format = all.substr(0, cut), accept = all.substr(cut);
    bool a = referral::wants_prometheus(format, accept);
    if (a != referral::wants_prometheus(format, accept)) std::abort();
    // the argument decides alone when it names a format
    if (format == "prometheus" && !a) std::abort();
    if (format == "json" && a) std::abort();
    return 0;
}
