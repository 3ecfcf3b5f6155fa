// The process the NATS publisher's crash test kills: publishes the bank's public events of a
// journal file until the journal's head, in pages of 4 events, and with `kill` raises
// SIGKILL right after the first batch was acknowledged (or flushed), before its offset is
// stored.
//
//   annals_nats_publish_child JOURNAL OFFSETS SERVERS STREAM jetstream|core HEAD kill|run
//
// Exit code 0 once the head is published, 1 on any failure.

#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "account/public_contract.hpp"
#include "annals/actors/nats_publisher.hpp"
#include "annals/actors/system.hpp"
#include "annals/error.hpp"
#include "annals/persistence/sqlite_journal.hpp"

int main(int argc, char** argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: %s JOURNAL OFFSETS SERVERS STREAM MODE HEAD kill|run\n", argv[0]);
    return 1;
  }
  namespace aa = annals::actors;
  auto journal = annals::persistence::sqlite_journal::open_read_only(argv[1]);
  if (!journal)
    return 1;
  caf::actor_system_config cfg;
  aa::configure(cfg);
  caf::actor_system sys{cfg};
  aa::nats_publisher_options opts{.servers = argv[3],
                                  .offsets_path = argv[2],
                                  .mode = std::string_view{argv[5]} == "core"
                                            ? aa::nats_publish_mode::core
                                            : aa::nats_publish_mode::jetstream,
                                  .stream = argv[4]};
  if (std::string_view{argv[7]} == "kill")
    opts.before_offset_stored = [](std::uint64_t) { ::raise(SIGKILL); };
  auto sink = aa::make_nats_publisher(bank::public_contract(), std::move(opts));
  if (!sink) {
    std::fprintf(stderr, "%s\n", annals::render(sink.error()).c_str());
    return 1;
  }
  auto proj = aa::spawn_projection(sys, *journal, std::move(*sink),
                                   aa::sink_options{.name = "publisher", .page_size = 4});
  auto done = proj.await_offset(std::stoull(argv[6]), std::chrono::seconds{20});
  if (!done)
    std::fprintf(stderr, "%s\n", annals::render(done.error()).c_str());
  proj.stop();
  return done ? 0 : 1;
}
