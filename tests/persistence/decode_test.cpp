// Bad rows name where they live: decoding raw rows through the framework's codec.

#include <sqlite3.h>

#include <boost/describe/class.hpp>

#include "annals/codec.hpp"
#include "annals/persistence/decode.hpp"
#include "persistence/journal_fixtures.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace decode_test {

struct deposited {
  static constexpr auto name = "test.deposited";
  std::int64_t cents = 0;
};
BOOST_DESCRIBE_STRUCT(deposited, (), (cents))

struct account_state {
  static constexpr auto name = "test.account_state";
  std::int64_t balance = 0;
};
BOOST_DESCRIBE_STRUCT(account_state, (), (balance))

using codec = event_codec<deposited>;

} // namespace decode_test

namespace {

void insert_raw(const std::string& path, const std::string& values) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  auto sql = "INSERT INTO events (global_offset, persistence_id, seq, name, version, payload, "
             "timestamp_us) VALUES "
             + values;
  char* msg = nullptr;
  auto rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg);
  std::string text = msg ? msg : "";
  sqlite3_free(msg);
  sqlite3_close(db);
  INFO(text);
  REQUIRE(rc == SQLITE_OK);
}

} // namespace

TEST_CASE("decoding a row with invalid JSON or an unknown name fails naming its persistence "
          "id and seq",
          "[decode]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto opened = sqlite_journal::open({.path = path});
  REQUIRE(opened);
  auto j = *opened;
  REQUIRE(append(*j, "acc-9", 0, {decode_test::codec::encode(decode_test::deposited{250})}));
  insert_raw(path, "(2, 'acc-9', 2, 'test.deposited', 1, '{\"cents\": 1', 0), "
                   "(3, 'acc-9', 3, 'test.refunded', 1, '{}', 0), "
                   "(4, 'acc-9', 4, 'test.deposited', 7, '{\"cents\": 1}', 0)");
  auto rows = read_stream(*j, "acc-9");
  REQUIRE(rows);
  REQUIRE(rows->size() == 4);
  decode_test::codec codec;
  auto good = decode_record(codec, (*rows)[0]);
  REQUIRE(good);
  CHECK(std::get<decode_test::deposited>(*good).cents == 250);

  auto bad_json = decode_record(codec, (*rows)[1]);
  REQUIRE_FALSE(bad_json);
  CHECK(is(bad_json.error(), errc::decode_failed));
  CHECK_THAT(render(bad_json.error()),
             Catch::StartsWith("annals.decode_failed: persistence id acc-9, seq 2 (offset 2): "));

  auto unknown = decode_record(codec, (*rows)[2]);
  REQUIRE_FALSE(unknown);
  CHECK(is(unknown.error(), errc::unknown_event));
  CHECK_THAT(render(unknown.error()), Catch::Contains("persistence id acc-9, seq 3"));
  CHECK_THAT(render(unknown.error()), Catch::Contains("test.refunded"));

  auto newer = decode_record(codec, (*rows)[3]);
  REQUIRE_FALSE(newer);
  CHECK(is(newer.error(), errc::newer_version));
  CHECK_THAT(render(newer.error()), Catch::Contains("persistence id acc-9, seq 4"));
}

TEST_CASE("decoding a snapshot that does not fit its codec fails naming its persistence id "
          "and seq",
          "[decode]") {
  type_codec<decode_test::account_state> codec;
  snapshot_record good{"acc-1", 10, "test.account_state", 1, R"({"balance":5})", 0};
  auto state = decode_snapshot(codec, good);
  REQUIRE(state);
  CHECK(state->balance == 5);
  auto broken = good;
  broken.payload = "{";
  auto res = decode_snapshot(codec, broken);
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), errc::decode_failed));
  CHECK_THAT(render(res.error()), Catch::Contains("snapshot of persistence id acc-1 at seq 10"));
  auto renamed = good;
  renamed.name = "test.other_state";
  auto wrong = decode_snapshot(codec, renamed);
  REQUIRE_FALSE(wrong);
  CHECK(is(wrong.error(), errc::unknown_event));
}
