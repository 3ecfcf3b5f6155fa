#pragma once

// Helpers shared by the benchmarks: percentiles, machine load, SQLite file clean-up, and
// a fatal exit with a message.

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace bench {

[[noreturn]] inline void die(const std::string& what) {
  std::cerr << "bench: " << what << '\n';
  std::exit(1);
}

/// The `p`-quantile (0..1) of `v`, nearest rank below; 0 for an empty set.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty())
    return 0;
  auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg prints them.
inline std::string load_average() {
  std::ifstream in{"/proc/loadavg"};
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

/// Removes an SQLite file with its WAL and shared-memory files.
inline void remove_db(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"})
    std::filesystem::remove(path + suffix);
}

} // namespace bench
