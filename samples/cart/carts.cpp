// annals-carts: the shopping-cart sample's history generator and its after-the-fact
// analysis.
//
//   annals-carts generate --db FILE [--carts N] [--seed S]
//       writes a new SQLite journal FILE with the history of N carts (default 10000)
//   annals-carts analyse --db FILE [--top K]
//       runs the removed-items projection over the whole history and prints, per sku, how
//       often it was added and how often taken out again before a checkout, most removed
//       first (K rows, default 20), and the events scanned per second

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "annals/actors/projection.hpp"
#include "annals/actors/system.hpp"
#include "annals/error.hpp"
#include "annals/persistence/blocking.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "cart/history.hpp"
#include "cart/removed_items.hpp"

namespace {

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "annals-carts: %s\n"
               "usage: annals-carts generate --db FILE [--carts N] [--seed S]\n"
               "       annals-carts analyse --db FILE [--top K]\n",
               why.c_str());
  std::exit(2);
}

struct flags {
  std::string db;
  unsigned long carts = 10'000;
  unsigned long seed = 1;
  unsigned long top = 20;
};

unsigned long number(std::string_view flag, const char* text) {
  char* end = nullptr;
  errno = 0;
  auto v = std::strtoul(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v > 100'000'000)
    usage(std::string{flag} + " needs a number up to 100000000");
  return v;
}

flags parse(int argc, char** argv) {
  flags f;
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    if (i + 1 >= argc)
      usage(std::string{a} + " needs a value");
    const char* v = argv[++i];
    if (a == "--db")
      f.db = v;
    else if (a == "--carts")
      f.carts = number(a, v);
    else if (a == "--seed")
      f.seed = number(a, v);
    else if (a == "--top")
      f.top = number(a, v);
    else
      usage("unknown argument " + std::string{a});
  }
  if (f.db.empty())
    usage("--db FILE is required");
  return f;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int generate(const flags& f) {
  if (std::filesystem::exists(f.db)) {
    std::fprintf(stderr, "annals-carts: %s exists; generate writes a new journal\n", f.db.c_str());
    return 1;
  }
  auto j = annals::persistence::sqlite_journal::open(
    {.path = f.db, .durability = annals::persistence::durability_level::normal});
  if (!j) {
    std::fprintf(stderr, "annals-carts: %s\n", annals::render(j.error()).c_str());
    return 1;
  }
  auto t0 = std::chrono::steady_clock::now();
  auto h =
    shop::generate_history(**j, {.carts = f.carts, .seed = static_cast<std::uint32_t>(f.seed)});
  if (!h) {
    std::fprintf(stderr, "annals-carts: generating failed: %s\n",
                 annals::render(h.error()).c_str());
    return 1;
  }
  auto secs = seconds_since(t0);
  std::printf("%lu carts (%zu checked out, %zu abandoned): %zu commands, %zu refused, "
              "%llu events in %.2f s (%.0f events/s) into %s\n",
              f.carts, h->checked_out, h->abandoned, h->commands.size(), h->refused,
              static_cast<unsigned long long>(h->events), secs,
              static_cast<double>(h->events) / secs, f.db.c_str());
  return 0;
}

int analyse(const flags& f) {
  auto j = annals::persistence::sqlite_journal::open(
    {.path = f.db, .must_exist = true, .read_only = true});
  if (!j) {
    std::fprintf(stderr, "annals-carts: %s\n", annals::render(j.error()).c_str());
    return 1;
  }
  auto head = annals::persistence::wait_for<std::uint64_t>(
    [&](annals::persistence::callback<std::uint64_t> done) { (*j)->head_offset(std::move(done)); },
    std::chrono::seconds{30});
  if (!head) {
    std::fprintf(stderr, "annals-carts: %s\n", annals::render(head.error()).c_str());
    return 1;
  }
  annals::actors::actor_system sys;
  auto model = std::make_shared<shop::removed_items_projection>();
  auto t0 = std::chrono::steady_clock::now();
  auto proj = annals::actors::spawn_projection(
    sys, *j, model,
    {.name = "removed-items",
     .filter = annals::actors::event_filter::aggregate_type<shop::cart>(),
     .page_size = 4096});
  auto st = proj.await_offset(*head, std::chrono::minutes{30});
  auto secs = seconds_since(t0);
  if (!st) {
    std::fprintf(stderr, "annals-carts: the projection failed: %s\n",
                 annals::render(st.error()).c_str());
    return 1;
  }
  auto rows = model->table();
  std::printf("%-8s %24s %8s %8s\n", "sku", "removed before checkout", "added", "share");
  for (std::size_t i = 0; i < rows.size() && i < f.top; ++i) {
    const auto& r = rows[i];
    std::printf("%-8s %24llu %8llu %7.1f%%\n", r.sku.c_str(),
                static_cast<unsigned long long>(r.removed_before_checkout),
                static_cast<unsigned long long>(r.added),
                r.added == 0 ? 0.0
                             : 100.0 * static_cast<double>(r.removed_before_checkout)
                                 / static_cast<double>(r.added));
  }
  std::printf("scanned %llu events (%llu applied) in %.3f s: %.0f events/s\n",
              static_cast<unsigned long long>(*head), static_cast<unsigned long long>(st->applied),
              secs, static_cast<double>(*head) / secs);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2)
    usage("a subcommand is required");
  std::string_view cmd = argv[1];
  if (cmd == "--help" || cmd == "-h")
    usage("the shopping-cart sample");
  auto f = parse(argc, argv);
  if (cmd == "generate")
    return generate(f);
  if (cmd == "analyse" || cmd == "analyze")
    return analyse(f);
  usage("unknown subcommand " + std::string{cmd});
}
