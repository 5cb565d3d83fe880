// Runs a fuzz target over files without libFuzzer, so a compiler without
// -fsanitize=fuzzer (GCC) can replay a corpus as a regression test:
//   assembler_fuzz_replay FILE_OR_DIR...
// With --generate N SEED it runs N pseudo-random inputs instead.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

void RunFile(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)), {});
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()),
                         bytes.size());
}

}  // namespace

int main(int argc, char** argv) {
  LLVMFuzzerInitialize(&argc, &argv);
  if (argc == 4 && std::string(argv[1]) == "--generate") {
    const long n = std::strtol(argv[2], nullptr, 10);
    std::mt19937 rng(static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10)));
    std::printf("replay: %ld random inputs, seed %s\n", n, argv[3]);
    for (long i = 0; i < n; ++i) {
      std::vector<uint8_t> input(rng() % 2048);
      for (uint8_t& b : input) b = static_cast<uint8_t>(rng());
      input.empty() ? void() : void(input[0] |= 1);  // mostly opcode inputs
      LLVMFuzzerTestOneInput(input.data(), input.size());
    }
    return 0;
  }
  long files = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path p(argv[i]);
    if (std::filesystem::is_directory(p)) {
      for (const auto& e : std::filesystem::recursive_directory_iterator(p)) {
        if (e.is_regular_file()) {
          RunFile(e.path());
          ++files;
        }
      }
    } else {
      RunFile(p);
      ++files;
    }
  }
  std::printf("replay: %ld inputs, no crash\n", files);
  return 0;
}
