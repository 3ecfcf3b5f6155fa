// The child process of the Redis kill -9 test (tests/redis/kill_test.cpp): projects the
// SQLite journal at PATH (opened read-only) into Redis at URL with the recording model of
// tests/redis/recording_model.hpp, as projection `seen`, PAGE events per batch.
//
//   annals_redis_projector PATH URL PAGE
//
// Exits 0 once the projection has reached the journal's head, 3 when the projection fails
// (its error on stderr), 2 on bad arguments or an unreadable journal. The test SIGKILLs it
// at random moments before that.

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "annals/actors/redis_projection.hpp"
#include "annals/actors/system.hpp"
#include "annals/persistence/blocking.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "redis/recording_model.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: annals_redis_projector PATH URL PAGE\n");
    return 2;
  }
  namespace ap = annals::persistence;
  auto j = ap::sqlite_journal::open({.path = argv[1], .read_only = true});
  if (!j) {
    std::fprintf(stderr, "cannot open %s: %s\n", argv[1], annals::render(j.error()).c_str());
    return 2;
  }
  auto head = ap::wait_for<std::uint64_t>(
    [&](ap::callback<std::uint64_t> done) { (*j)->head_offset(std::move(done)); },
    std::chrono::seconds{30});
  if (!head) {
    std::fprintf(stderr, "cannot read the head: %s\n", annals::render(head.error()).c_str());
    return 2;
  }
  caf::actor_system_config cfg;
  annals::actors::configure(cfg);
  caf::actor_system sys{cfg};
  auto proj = annals::actors::spawn_projection(
    sys, *j, std::make_shared<ap::test::recording_model>(),
    annals::actors::redis_projection_options{
      .name = "seen", .url = argv[2], .page_size = std::stoul(argv[3])});
  auto st = proj.await_offset(*head, std::chrono::minutes{5});
  if (!st) {
    std::fprintf(stderr, "projection failed: %s\n", annals::render(st.error()).c_str());
    return 3;
  }
  std::printf("caught up at %llu\n", static_cast<unsigned long long>(st->offset));
  return 0;
}
