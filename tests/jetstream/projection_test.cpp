// Projections on a JetStream journal (offsets with gaps between appends): a projection
// catches up, follows the appends of two journals on one stream (two processes), applies
// every event once in the stream's order, and reaches the offset an append returned.

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "annals/actors/projection.hpp"
#include "annals/actors/system.hpp"
#include "jetstream/nats_fixture.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

struct test_system {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  test_system() : sys{(actors::configure(cfg), cfg)} {}
};

/// Records the offsets and ids it is handed.
class recording_handler : public actors::projection_handler {
public:
  void apply(const event_record& rec) override {
    std::lock_guard guard{mtx_};
    seen_.push_back(rec);
  }
  void reset() override {
    std::lock_guard guard{mtx_};
    seen_.clear();
  }
  std::vector<event_record> seen() const {
    std::lock_guard guard{mtx_};
    return seen_;
  }

private:
  mutable std::mutex mtx_;
  std::vector<event_record> seen_;
};

std::shared_ptr<jetstream_journal> open_or_fail(jetstream_options opts) {
  auto res = jetstream_journal::open(std::move(opts));
  if (!res)
    FAIL(render(res.error()));
  return *res;
}

} // namespace

TEST_CASE("a projection on a JetStream journal applies the appends of two journals on one "
          "stream once each, in the stream's order",
          "[jetstream]") {
  auto& servers = jetstream_r1_backend::servers();
  auto stream = fresh_stream_name();
  auto a = open_or_fail({.servers = servers.urls(), .stream = stream});
  auto b = open_or_fail({.servers = servers.urls(), .stream = stream});
  REQUIRE_FALSE(a->gapless_offsets());
  for (std::uint64_t i = 0; i < 5; ++i) // before the projection starts: caught up by reads
    REQUIRE(append(*a, "account|a", 2 * i, {ev("e"), ev("f")}));
  test_system ts;
  auto handler = std::make_shared<recording_handler>();
  auto proj = actors::spawn_projection(ts.sys, a, handler, {.name = "js", .page_size = 3});
  std::uint64_t seq_a = 10, seq_b = 0, last_offset = 0;
  for (int i = 0; i < 40; ++i) { // live: half through the other journal, as another process
    auto res = i % 2 ? append(*a, "account|a", seq_a, {ev("e")})
                     : append(*b, "account|b", seq_b, {ev("e"), ev("f"), ev("g")});
    REQUIRE(res);
    (i % 2 ? seq_a : seq_b) = res->last_seq;
    last_offset = res->last_offset;
  }
  auto st = proj.await_offset(last_offset, bound);
  if (!st)
    FAIL(render(st.error()));
  CHECK(st->offset == last_offset);
  CHECK(st->state != actors::projection_state::failed); // running, or reading on a notice
  auto all = read_all(*a);
  REQUIRE(all);
  CHECK(all->size() == 10 + 20 + 60);
  CHECK(handler->seen() == *all);
}
