// The NATS publisher killed with SIGKILL right after the broker acknowledged a batch and
// before its offset was stored (annals_nats_publish_child, a process of its own): the
// restarted publisher sends that batch again with the same Nats-Msg-Id values, and a
// consumer sees every public event exactly once.
//
// - JetStream: the server drops the repeats itself (they fall inside the stream's duplicate
//   window, two minutes by default) and acknowledges each of them as a duplicate; the
//   stream holds every message once.
// - Core NATS: the subscriber receives the repeats; de-duplicating by Nats-Msg-Id leaves
//   every public event once.

#include <atomic>
#include <csignal>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include "account/public_contract.hpp"
#include "annals/actors/nats_publisher.hpp"
#include "annals/actors/offset_store.hpp"
#include "annals/actors/system.hpp"
#include "annals/error.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "jetstream/nats_servers.hpp"
#include "nats_publish/nats_reader.hpp"
#include "persistence/journal_fixtures.hpp"

#ifdef ANNALS_NATS_PUBLISH_CHILD

namespace aa = annals::actors;
namespace ap = annals::persistence;
namespace pt = annals::persistence::test;
using namespace std::chrono_literals;

namespace {

struct config : caf::actor_system_config {
  config() {
    aa::configure(*this);
  }
};

// 5 accounts opened and credited, each with an unmapped event between: 15 events, 10
// public. The child's first batch (4 events) holds 3 public ones.
std::uint64_t write_journal(const std::string& path) {
  auto j = ap::sqlite_journal::open({.path = path});
  REQUIRE(j);
  for (int i = 1; i <= 5; ++i) {
    auto id = std::to_string(i);
    REQUIRE(pt::append(**j, "account|c" + id, 0,
                       {pt::ev("bank.opened", R"({"owner":"o"})"),
                        pt::ev("bank.deposited", R"({"cents":)" + id + "}")}));
    REQUIRE(pt::append(**j, "match|x" + id, 0, {pt::ev("match.started")}));
  }
  auto head = pt::head_offset(**j);
  REQUIRE(head);
  (*j)->close();
  return *head;
}

// Runs the child to its end; returns the signal that ended it, or -exit code.
int run_child(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::string bin = ANNALS_NATS_PUBLISH_CHILD;
  argv.push_back(bin.data());
  std::vector<std::string> copy = args;
  for (auto& a : copy)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  auto pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFSIGNALED(status) ? WTERMSIG(status) : -WEXITSTATUS(status);
}

std::uint64_t stored_offset(const std::string& path) {
  auto store = aa::sqlite_offset_store::open({.path = path});
  REQUIRE(store);
  auto o = (*store)->load("publisher");
  REQUIRE(o);
  return *o;
}

// Publishes the rest in this process, counting duplicate acknowledgements.
int publish_rest(const std::string& journal_path, aa::nats_publisher_options opts,
                 std::uint64_t head) {
  std::atomic<int> duplicates{0};
  opts.on_acknowledged = [&](std::uint64_t, bool dup) { duplicates += dup ? 1 : 0; };
  auto journal = ap::sqlite_journal::open_read_only(journal_path);
  REQUIRE(journal);
  config cfg;
  caf::actor_system sys{cfg};
  auto sink = aa::make_nats_publisher(bank::public_contract(), std::move(opts));
  REQUIRE(sink);
  auto p = aa::spawn_projection(sys, *journal, std::move(*sink),
                                aa::sink_options{.name = "publisher", .page_size = 4});
  auto st = p.await_offset(head, 20s);
  INFO((st ? std::string{} : annals::render(st.error())));
  REQUIRE(st);
  p.stop();
  return duplicates;
}

} // namespace

TEST_CASE("a publisher killed between the broker's acknowledgement and its offset publishes "
          "that batch again under the same ids, and JetStream keeps each message once",
          "[nats][publisher][crash][processes]") {
#if ANNALS_TEST_TSAN
  WARN("ThreadSanitizer build: the forked publisher is skipped");
  return;
#endif
  pt::nats_cluster nats{1};
  pt::temp_dir dir;
  auto journal = dir.file("journal.db");
  auto offsets = dir.file("offsets.db");
  auto stream = pt::fresh_stream_name("C");
  auto head = write_journal(journal);

  REQUIRE(
    run_child({journal, offsets, nats.urls(), stream, "jetstream", std::to_string(head), "kill"})
    == SIGKILL);
  CHECK(stored_offset(offsets) == 0); // killed before the offset of the first batch
  nats_test::reader r{nats.server(0).url()};
  auto before = r.all(stream);
  REQUIRE(before.size() == 3); // the first batch was acknowledged

  auto duplicates = publish_rest(
    journal, {.servers = nats.urls(), .offsets_path = offsets, .stream = stream}, head);
  CHECK(duplicates == 3); // the repeated batch, acknowledged as duplicates
  CHECK(stored_offset(offsets) == head);
  auto all = r.all(stream);
  REQUIRE(all.size() == 10);
  std::set<std::string> ids;
  std::uint64_t last_position = 0;
  for (const auto& m : all) {
    CHECK(ids.insert(m.headers.at("Nats-Msg-Id")).second);
    auto position = std::stoull(m.headers.at("Annals-Position"));
    CHECK(position > last_position); // log order
    last_position = position;
  }
}

TEST_CASE("in core mode a consumer that de-duplicates by Nats-Msg-Id sees every public event "
          "exactly once across a kill between the flush and the offset",
          "[nats][publisher][crash][processes]") {
#if ANNALS_TEST_TSAN
  WARN("ThreadSanitizer build: the forked publisher is skipped");
  return;
#endif
  pt::nats_cluster nats{1};
  pt::temp_dir dir;
  auto journal = dir.file("journal.db");
  auto offsets = dir.file("offsets.db");
  auto head = write_journal(journal);
  nats_test::reader r{nats.server(0).url()};
  r.subscribe("bank.public.>");

  REQUIRE(run_child({journal, offsets, nats.urls(), "unused", "core", std::to_string(head), "kill"})
          == SIGKILL);
  CHECK(stored_offset(offsets) == 0);
  publish_rest(
    journal, {.servers = nats.urls(), .offsets_path = offsets, .mode = aa::nats_publish_mode::core},
    head);

  // 3 messages of the killed batch, then all 10 again from the stored offset 0.
  std::map<std::string, int> seen;
  int received = 0;
  while (received < 13) {
    auto m = r.next(10s);
    REQUIRE(m);
    ++received;
    ++seen[m->headers.at("Nats-Msg-Id")];
  }
  CHECK_FALSE(r.next(200ms));
  CHECK(seen.size() == 10); // after de-duplication: each public event once
  int repeated = 0;
  for (const auto& [id, n] : seen)
    repeated += n - 1;
  CHECK(repeated == 3);
}

#endif // ANNALS_NATS_PUBLISH_CHILD
