// The NATS publisher against a real nats-server (R1): what it publishes (subjects, ids,
// bodies, headers, order), what it skips, where a restart resumes, the stream it creates
// once, a second instance on the same offset, a broker killed under it, and core mode.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "account/public_contract.hpp"
#include "annals/actors/nats_publisher.hpp"
#include "annals/actors/offset_store.hpp"
#include "annals/actors/system.hpp"
#include "annals/error.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "jetstream/nats_servers.hpp"
#include "nats_publish/nats_reader.hpp"
#include "persistence/journal_fixtures.hpp"

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

// A journal file, an offsets file and a stream name of its own.
struct publish_world {
  pt::temp_dir dir;
  std::shared_ptr<ap::sqlite_journal> journal;
  std::string stream = pt::fresh_stream_name("P");
  std::uint64_t rounds = 0;

  publish_world() {
    auto j = ap::sqlite_journal::open({.path = dir.file("journal.db")});
    REQUIRE(j);
    journal = *j;
  }
  ~publish_world() {
    journal->close();
  }

  // Appends `n` rounds: account a<i> opened and credited (two public events), match m<i>
  // started (not in the contract). Returns the head offset.
  std::uint64_t add_rounds(int n) {
    for (int k = 0; k < n; ++k) {
      auto i = std::to_string(++rounds);
      REQUIRE(pt::append(*journal, "account|a" + i, 0,
                         {pt::ev("bank.opened", R"({"owner":"owner-)" + i + R"("})"),
                          pt::ev("bank.deposited", R"({"cents":)" + i + "00}")}));
      REQUIRE(pt::append(*journal, "match|m" + i, 0, {pt::ev("match.started", "{}")}));
    }
    return head();
  }
  std::uint64_t head() {
    auto h = pt::head_offset(*journal);
    REQUIRE(h);
    return *h;
  }
  // What the contract makes of the whole journal.
  std::vector<aa::published_message> expected() {
    auto all = pt::read_all(*journal);
    REQUIRE(all);
    auto msgs = bank::public_contract().translate(*all);
    REQUIRE(msgs);
    return *msgs;
  }
  aa::nats_publisher_options options(const std::string& servers) {
    return {.servers = servers,
            .offsets_path = dir.file("offsets.db"),
            .stream = stream,
            .retry_for = 10s};
  }
  std::uint64_t stored_offset() {
    auto store = aa::sqlite_offset_store::open({.path = dir.file("offsets.db")});
    REQUIRE(store);
    auto o = (*store)->load("publisher");
    REQUIRE(o);
    return *o;
  }
};

aa::projection spawn(caf::actor_system& sys, publish_world& w, aa::nats_publisher_options o,
                     std::size_t page_size = 5) {
  auto sink = aa::make_nats_publisher(bank::public_contract(), std::move(o));
  REQUIRE(sink);
  CHECK((*sink)->guarantee() == aa::delivery::at_least_once);
  return aa::spawn_projection(sys, w.journal, std::move(*sink),
                              aa::sink_options{.name = "publisher", .page_size = page_size});
}

void await_head(const aa::projection& p, std::uint64_t head) {
  auto st = p.await_offset(head, 20s);
  INFO((st ? std::string{} : annals::render(st.error())));
  REQUIRE(st);
}

// Each message of `got` is the contract's message for its position, with its headers, on
// its subject; `got` holds every one of `want`, once, in log order.
void check_published(const std::vector<nats_test::received>& got,
                     const std::vector<aa::published_message>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("message " << i << ": " << got[i].body);
    auto msg = aa::parse_published(got[i].body);
    REQUIRE(msg);
    CHECK(*msg == want[i]);
    CHECK(got[i].subject == "bank.public." + want[i].type);
    CHECK(got[i].headers.at("Nats-Msg-Id") == want[i].id);
    CHECK(got[i].headers.at("Nats-Msg-Id") == "bank:" + std::to_string(want[i].position));
    CHECK(got[i].headers.at("Annals-Position") == std::to_string(want[i].position));
    CHECK(got[i].headers.at("Annals-Type") == want[i].type);
    CHECK(got[i].headers.at("Annals-Version") == "1");
  }
}

} // namespace

TEST_CASE("the publisher sends each public event to JetStream in log order with its subject, "
          "id, body and headers, and skips events the contract does not map",
          "[nats][publisher]") {
  pt::nats_cluster nats{1};
  publish_world w;
  auto head = w.add_rounds(6); // 18 events, 12 of them public
  config cfg;
  caf::actor_system sys{cfg};
  auto p = spawn(sys, w, w.options(nats.urls()));
  await_head(p, head);
  p.stop();

  nats_test::reader r{nats.server(0).url()};
  auto want = w.expected();
  REQUIRE(want.size() == 12);
  check_published(r.all(w.stream), want);
  CHECK(r.state(w.stream).subject == "bank.public.>");
  CHECK(w.stored_offset() == head);
}

TEST_CASE("a restarted publisher resumes after its stored offset: nothing lost, nothing sent "
          "twice, and the stream is created once and reused",
          "[nats][publisher]") {
  pt::nats_cluster nats{1};
  publish_world w;
  config cfg;
  caf::actor_system sys{cfg};
  std::atomic<int> duplicates{0};
  auto opts = w.options(nats.urls());
  opts.on_acknowledged = [&](std::uint64_t, bool dup) { duplicates += dup ? 1 : 0; };

  auto head = w.add_rounds(5);
  auto first = spawn(sys, w, opts);
  await_head(first, head);
  first.stop();
  nats_test::reader r{nats.server(0).url()};
  auto created = r.state(w.stream).created;
  CHECK(r.state(w.stream).messages == 10);

  head = w.add_rounds(5);
  auto second = spawn(sys, w, opts);
  await_head(second, head);
  second.stop();
  check_published(r.all(w.stream), w.expected());
  CHECK(r.state(w.stream).created == created);
  CHECK(duplicates == 0);
  CHECK(w.stored_offset() == head);
}

TEST_CASE("a second publisher on the same stored offset stops with offset_moved, publishing "
          "nothing twice",
          "[nats][publisher]") {
  pt::nats_cluster nats{1};
  publish_world w;
  config cfg;
  caf::actor_system sys{cfg};
  auto head = w.add_rounds(2);
  auto a = spawn(sys, w, w.options(nats.urls()));
  await_head(a, head);
  auto b = spawn(sys, w, w.options(nats.urls()));
  await_head(b, head); // both opened on the same offset
  head = w.add_rounds(1);
  auto ra = a.await_offset(head, 20s);
  auto rb = b.await_offset(head, 20s);
  CHECK(static_cast<bool>(ra) != static_cast<bool>(rb)); // exactly one goes on
  auto& failed = ra ? rb : ra;
  REQUIRE_FALSE(failed);
  CHECK_THAT(annals::render(failed.error()), Catch::Contains("offset_moved"));
  a.stop();
  b.stop();
  nats_test::reader r{nats.server(0).url()};
  check_published(r.all(w.stream), w.expected()); // the server dropped a repeat by its id
  CHECK(w.stored_offset() == head);
}

TEST_CASE("a broker killed mid-run and restarted: the publisher retries, then goes on, and "
          "skips nothing",
          "[nats][publisher][faults]") {
  pt::nats_cluster nats{1};
  publish_world w;
  config cfg;
  caf::actor_system sys{cfg};
  auto opts = w.options(nats.urls());
  opts.retry_for = 15s;
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<std::string> failures;
  opts.on_publish_failed = [&](const std::string& id, const std::string& subject,
                               const std::string& error) {
    std::lock_guard guard{mtx};
    failures.push_back(id + " " + subject + ": " + error);
    cv.notify_all();
  };
  auto head = w.add_rounds(3);
  auto p = spawn(sys, w, opts);
  await_head(p, head);

  nats.server(0).kill9();
  auto first_new = head + 1;
  head = w.add_rounds(3);
  {
    // The publisher tries while the server is down, and fails.
    std::unique_lock lk{mtx};
    REQUIRE(cv.wait_for(lk, 10s, [&] { return !failures.empty(); }));
    CHECK_THAT(failures.front(), Catch::StartsWith("bank:" + std::to_string(first_new)
                                                   + " bank.public.payments.AccountOpened: "));
  }
  nats.server(0).start();
  REQUIRE(nats.server(0).wait_healthy());
  await_head(p, head);
  p.stop();
  nats_test::reader r{nats.server(0).url()};
  check_published(r.all(w.stream), w.expected());
  CHECK(w.stored_offset() == head);
}

TEST_CASE("a broker that stays down: the publisher fails after retry_for naming the subject "
          "and the NATS error, and its offset stays at the last acknowledged batch",
          "[nats][publisher][faults]") {
  pt::nats_cluster nats{1};
  publish_world w;
  config cfg;
  caf::actor_system sys{cfg};
  auto opts = w.options(nats.urls());
  opts.retry_for = 1s;
  opts.request_timeout = 1s;
  auto acked = w.add_rounds(2);
  auto p = spawn(sys, w, opts);
  await_head(p, acked);

  nats.server(0).kill9();
  auto head = w.add_rounds(1);
  auto st = p.await_offset(head, 20s);
  REQUIRE_FALSE(st);
  auto text = annals::render(st.error());
  CHECK_THAT(text, Catch::Contains("subject bank.public.payments.AccountOpened"));
  CHECK_THAT(text, Catch::Contains("gave up after 1000 ms"));
  CHECK_THAT(text, Catch::Contains("message bank:" + std::to_string(acked + 1)));
  p.stop();
  CHECK(w.stored_offset() == acked);
}

TEST_CASE("a mapped record that does not decode stops the publisher with the contract's error "
          "after the messages before it",
          "[nats][publisher]") {
  pt::nats_cluster nats{1};
  publish_world w;
  auto good = w.add_rounds(1);
  REQUIRE(pt::append(*w.journal, "account|broken", 0, {pt::ev("bank.deposited", "not json")}));
  config cfg;
  caf::actor_system sys{cfg};
  auto p = spawn(sys, w, w.options(nats.urls()), 50);
  auto st = p.await_offset(good + 1, 20s);
  REQUIRE_FALSE(st);
  CHECK_THAT(annals::render(st.error()), Catch::Contains("account|broken"));
  p.stop();
  CHECK(w.stored_offset() == good);
  nats_test::reader r{nats.server(0).url()};
  CHECK(r.state(w.stream).messages == 2);
}

TEST_CASE("in core mode the publisher delivers every public event to a plain subscriber, in "
          "log order",
          "[nats][publisher]") {
  pt::nats_cluster nats{1};
  publish_world w;
  nats_test::reader r{nats.server(0).url()};
  r.subscribe("bank.public.>");
  auto head = w.add_rounds(4);
  config cfg;
  caf::actor_system sys{cfg};
  auto opts = w.options(nats.urls());
  opts.mode = aa::nats_publish_mode::core;
  auto p = spawn(sys, w, opts);
  await_head(p, head);
  p.stop();
  auto want = w.expected();
  std::vector<nats_test::received> got;
  while (got.size() < want.size()) {
    auto m = r.next(10s);
    REQUIRE(m);
    got.push_back(*m);
  }
  check_published(got, want);
  CHECK_FALSE(r.next(200ms)); // nothing more
  CHECK(w.stored_offset() == head);
}

TEST_CASE("on a three-server cluster the publisher creates a stream with three replicas and "
          "publishes into it",
          "[nats][publisher][cluster]") {
  pt::nats_cluster nats{3};
  publish_world w;
  auto head = w.add_rounds(3);
  config cfg;
  caf::actor_system sys{cfg};
  auto opts = w.options(nats.urls());
  opts.replicas = 3;
  auto p = spawn(sys, w, opts);
  await_head(p, head);
  p.stop();
  nats_test::reader r{nats.server(1).url()};
  check_published(r.all(w.stream), w.expected());
  CHECK(r.state(w.stream).replicas == 3);
}

TEST_CASE("the publish URL of annals-bank: servers, stream, replicas and mode", "[nats]") {
  auto o = aa::parse_nats_publish_url("nats://a:4222,b:4223?stream=S&replicas=3&mode=core",
                                      {.offsets_path = "x.db"});
  REQUIRE(o);
  CHECK(o->servers == "nats://a:4222,nats://b:4223");
  CHECK(o->stream == "S");
  CHECK(o->replicas == 3);
  CHECK(o->mode == aa::nats_publish_mode::core);
  CHECK(o->offsets_path == "x.db");
  CHECK_FALSE(aa::parse_nats_publish_url("redis://a:1", {}));
  CHECK_FALSE(aa::parse_nats_publish_url("nats://a", {}));
  auto bad = aa::parse_nats_publish_url("nats://a:1?replicas=9", {});
  REQUIRE_FALSE(bad);
  CHECK_THAT(annals::render(bad.error()), Catch::Contains("replicas=9"));
}
