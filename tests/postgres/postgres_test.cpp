// What the PostgreSQL journal adds to the contract: no reader skips an offset under
// concurrent writers, the event tables refuse changes, two journals on one database agree
// on one winner per seq, acknowledged appends survive an immediate restart of the server,
// the hash chain, and clear errors.

#include <latch>
#include <map>
#include <optional>
#include <set>

#include "postgres/pg_fixture.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

// Collects what a listener sees; `wait_for_offset` blocks until offset `n` arrived.
struct follower {
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<std::uint64_t> offsets;
  std::vector<event_record> records;

  commit_listener listener() {
    return [this](const std::vector<event_record>& batch) {
      std::lock_guard guard{mtx};
      for (const auto& rec : batch)
        offsets.push_back(rec.offset);
      records.insert(records.end(), batch.begin(), batch.end());
      cv.notify_all();
    };
  }
  bool wait_for_offset(std::uint64_t n) {
    std::unique_lock lk{mtx};
    return cv.wait_for(lk, bound, [&] { return !offsets.empty() && offsets.back() >= n; });
  }
};

std::vector<std::uint64_t> one_to(std::uint64_t n) {
  std::vector<std::uint64_t> out;
  for (std::uint64_t i = 1; i <= n; ++i)
    out.push_back(i);
  return out;
}

// A raw libpq connection, for what the journal itself never does.
struct raw_conn {
  explicit raw_conn(const std::string& conninfo) : conn(PQconnectdb(conninfo.c_str())) {
    REQUIRE(PQstatus(conn) == CONNECTION_OK);
  }
  ~raw_conn() {
    PQfinish(conn);
  }
  raw_conn(const raw_conn&) = delete;
  raw_conn& operator=(const raw_conn&) = delete;
  std::string run(const std::string& sql) {
    return run_sql(conn, sql);
  }
  PGconn* conn;
};

// The offsets of `records` are 1, 2, ..., n.
bool offsets_equal_one_to(const std::vector<event_record>& records) {
  for (std::size_t i = 0; i < records.size(); ++i)
    if (records[i].offset != i + 1)
      return false;
  return true;
}

} // namespace

TEST_CASE("no subscriber skips an offset while eight journals append concurrently", "[postgres]") {
  auto conninfo = shared_server().create_database();
  follower seen; // declared first: outlives the journal that calls it
  auto watcher = open_pg(conninfo);
  watcher->subscribe(seen.listener());
  constexpr int writers = 8;
  constexpr int per_writer = 150;
  std::vector<std::shared_ptr<postgres_journal>> journals;
  for (int w = 0; w < writers; ++w)
    journals.push_back(open_pg(conninfo));
  countdown done;
  std::atomic<int> failures{0};
  std::latch start{writers};
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      start.arrive_and_wait();
      std::uint64_t seqs[4] = {};
      for (int i = 0; i < per_writer; ++i) {
        auto k = i % 4;
        auto n = static_cast<std::size_t>(i % 3 + 1);
        append_request req{"w" + std::to_string(w) + "-" + std::to_string(k),
                           seqs[k],
                           std::vector<encoded_event>(n, ev("e", "{}", {"all"})),
                           {}};
        seqs[k] += n;
        journals[static_cast<std::size_t>(w)]->append(std::move(req),
                                                      [&](caf::expected<append_result> res) {
                                                        if (!res)
                                                          ++failures;
                                                        done.arrive();
                                                      });
      }
    });
  }
  for (auto& t : threads)
    t.join();
  REQUIRE(done.wait(writers * per_writer));
  CHECK(failures == 0);
  auto head = head_offset(*watcher);
  REQUIRE(head);
  std::uint64_t total = 0;
  for (int i = 0; i < per_writer; ++i)
    total += writers * static_cast<std::uint64_t>(i % 3 + 1);
  CHECK(*head == total);
  REQUIRE(seen.wait_for_offset(*head));
  auto all = read_all(*watcher);
  REQUIRE(all);
  std::lock_guard guard{seen.mtx};
  CHECK(seen.offsets == one_to(total));
  CHECK(seen.records == *all);
}

TEST_CASE("the event tables refuse UPDATE, DELETE and TRUNCATE", "[postgres]") {
  auto conninfo = shared_server().create_database();
  auto j = open_pg(conninfo);
  REQUIRE(append(*j, "acc-1", 0, {ev("opened", "{}", {"t"}), ev("deposited")}));
  raw_conn raw{conninfo};
  for (const char* sql :
       {"UPDATE events SET payload = '{\"forged\":1}'", "DELETE FROM events WHERE seq = 2",
        "TRUNCATE events CASCADE", "UPDATE event_tags SET tag = 'u'", "DELETE FROM event_tags",
        "TRUNCATE event_tags"}) {
    INFO(sql);
    auto err = raw.run(sql);
    CHECK_THAT(err, Catch::Contains("refused: the journal is append-only"));
  }
  auto records = read_stream(*j, "acc-1");
  REQUIRE(records);
  REQUIRE(records->size() == 2);
  CHECK((*records)[0].payload == "{}");
  CHECK(read_tagged(*j, "t")->size() == 1);
  auto report = postgres_journal::verify(conninfo);
  REQUIRE(report);
  CHECK_FALSE(report->first_break);
}

TEST_CASE("text with tabs, newlines, backslashes, quotes and unicode round-trips through one "
          "batch, and a conflict in it fails alone",
          "[postgres]") {
  auto conninfo = shared_server().create_database();
  auto j = open_pg(conninfo);
  const std::vector<std::string> awkward = {
    "tab\there",     "line\nbreak",
    "cr\r\nlf",      "back\\slash",
    "\\N",           "\\.",
    "end\n\\.\nof",  "quote ' and \" ",
    "\\x41\\\\x",    "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x8e\x89",
    "\t\n\\\r mixed"};
  std::vector<append_request> reqs;
  for (std::size_t i = 0; i < awkward.size(); ++i) {
    const auto& s = awkward[i];
    event_metadata md;
    if (i % 2 == 0) {
      md.command_id = "cmd " + s;
      md.correlation_id = s + " corr";
    }
    std::vector<encoded_event> events{
      encoded_event{"name " + s, 2, R"({"text":")" + s + R"("})", {s, "plain", "t " + s}},
      ev("no-tags", s)};
    reqs.push_back({"id " + s, 0, std::move(events), std::move(md)});
  }
  // Only COPY may load rows here: the INSERT fallback would hide an escaping mistake.
  raw_conn raw{conninfo};
  REQUIRE(raw
            .run(R"sql(
CREATE FUNCTION test_copy_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_query() NOT LIKE 'COPY %' THEN
    RAISE EXCEPTION 'not loaded by COPY: %', current_query();
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER events_copy_only BEFORE INSERT ON events
  FOR EACH STATEMENT EXECUTE FUNCTION test_copy_only();
CREATE TRIGGER event_tags_copy_only BEFORE INSERT ON event_tags
  FOR EACH STATEMENT EXECUTE FUNCTION test_copy_only();
)sql")
            .empty());
  // Hold the writers' lock so that the appends after the first queue up into one batch.
  raw_conn lock_holder{conninfo};
  REQUIRE(lock_holder
            .run("BEGIN; SELECT pg_advisory_xact_lock("
                 + std::to_string(postgres_journal::offset_lock_key) + ")")
            .empty());
  std::vector<std::optional<caf::expected<append_result>>> results(reqs.size() + 1);
  countdown done;
  auto submit = [&](append_request req, std::size_t slot) {
    j->append(std::move(req), [&, slot](caf::expected<append_result> res) {
      results[slot].emplace(std::move(res));
      done.arrive();
    });
  };
  for (std::size_t i = 0; i < reqs.size(); ++i)
    submit(reqs[i], i);
  // A stale expected seq, in the same batch.
  submit({"id " + awkward[3], 5, {ev("stale")}, {}}, reqs.size());
  REQUIRE(lock_holder.run("COMMIT").empty());
  REQUIRE(done.wait(static_cast<int>(results.size())));
  REQUIRE(results.back());
  REQUIRE_FALSE(*results.back());
  CHECK(is(results.back()->error(), journal_errc::conflict));
  std::vector<event_record> expected;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    INFO(i);
    REQUIRE(results[i]);
    REQUIRE(*results[i]);
    const auto& res = **results[i];
    CHECK(res.first_seq == 1);
    CHECK(res.last_seq == 2);
    for (std::size_t k = 0; k < 2; ++k) {
      const auto& e = reqs[i].events[k];
      expected.push_back({res.first_offset + k, reqs[i].persistence_id, k + 1, e.name, e.version,
                          e.payload, e.tags, res.timestamp_us, reqs[i].metadata});
    }
  }
  std::sort(expected.begin(), expected.end(),
            [](const auto& a, const auto& b) { return a.offset < b.offset; });
  auto all = read_all(*j);
  REQUIRE(all);
  CHECK(offsets_equal_one_to(*all));
  CHECK(*all == expected);
  for (const auto& s : awkward) {
    INFO(s);
    auto stream = read_stream(*j, "id " + s);
    REQUIRE(stream);
    REQUIRE(stream->size() == 2);
    CHECK((*stream)[0].payload == R"({"text":")" + s + R"("})");
    CHECK((*stream)[1].payload == s);
    auto tagged = read_tagged(*j, s);
    REQUIRE(tagged);
    REQUIRE(tagged->size() == 1);
    CHECK((*tagged)[0].persistence_id == "id " + s);
    CHECK(read_tagged(*j, "t " + s)->size() == 1);
  }
  CHECK(read_tagged(*j, "plain")->size() == awkward.size());
  // Absent tags and metadata are stored as NULL, as the INSERT path stores them.
  PGresult* nulls =
    PQexec(raw.conn, "SELECT count(*) FILTER (WHERE tags IS NULL), count(*) FILTER (WHERE "
                     "command_id IS NULL), count(*) FILTER (WHERE correlation_id IS NULL) FROM "
                     "events");
  REQUIRE(PQresultStatus(nulls) == PGRES_TUPLES_OK);
  CHECK(std::string{PQgetvalue(nulls, 0, 0)} == std::to_string(awkward.size()));
  CHECK(std::string{PQgetvalue(nulls, 0, 1)} == std::to_string(2 * (awkward.size() / 2)));
  CHECK(std::string{PQgetvalue(nulls, 0, 2)} == std::to_string(2 * (awkward.size() / 2)));
  PQclear(nulls);
  auto report = postgres_journal::verify(conninfo);
  REQUIRE(report);
  CHECK_FALSE(report->first_break);
  CHECK(report->events_checked == 2 * awkward.size());
  CHECK_THAT(raw.run("INSERT INTO event_tags (tag, global_offset) VALUES ('x', 1)"),
             Catch::Contains("not loaded by COPY"));
}

TEST_CASE("two journals appending to one stream agree on exactly one winner per seq and lose "
          "nothing",
          "[postgres]") {
  auto conninfo = shared_server().create_database();
  std::shared_ptr<postgres_journal> js[2] = {open_pg(conninfo), open_pg(conninfo)};
  constexpr int rounds = 120;
  std::map<std::uint64_t, std::string> won; // seq -> payload of the acknowledged winner
  std::mutex won_mtx;
  std::atomic<int> conflicts{0};
  std::atomic<int> others{0};
  std::latch start{2};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      start.arrive_and_wait();
      auto& j = *js[w];
      for (int i = 0; i < rounds; ++i) {
        auto seq = highest_seq(j, "shared");
        if (!seq) {
          ++others;
          continue;
        }
        auto payload = R"({"by":)" + std::to_string(w) + R"(,"i":)" + std::to_string(i) + "}";
        auto res = append(j, "shared", *seq, {ev("e", payload)});
        if (res) {
          std::lock_guard guard{won_mtx};
          CHECK(res->first_seq == *seq + 1);
          CHECK(won.emplace(res->first_seq, payload).second);
        } else if (is(res.error(), journal_errc::conflict)) {
          ++conflicts;
        } else {
          ++others;
        }
      }
    });
  }
  for (auto& t : threads)
    t.join();
  CHECK(others == 0);
  CHECK(won.size() + static_cast<std::size_t>(conflicts.load()) == 2 * rounds);
  auto records = read_stream(*js[0], "shared");
  REQUIRE(records);
  REQUIRE(records->size() == won.size());
  for (const auto& rec : *records) {
    CHECK(rec.offset == rec.seq); // the only stream: offsets and seqs coincide
    CHECK(won[rec.seq] == rec.payload);
  }
  auto report = postgres_journal::verify(conninfo);
  REQUIRE(report);
  CHECK_FALSE(report->first_break);
  CHECK(report->events_checked == won.size());
}

TEST_CASE("acknowledged appends survive an immediate restart of the server, failed ones say "
          "why, and appends work again afterwards",
          "[postgres]") {
  pg_server server; // its own server: this case restarts it
  auto conninfo = server.create_database();
  follower seen; // declared first: outlives the journal that calls it
  auto j = open_pg(conninfo);
  j->subscribe(seen.listener());
  constexpr int appenders = 4;
  std::atomic<bool> restarted{false};
  std::atomic<int> acked{0};
  std::mutex mtx;
  std::vector<std::pair<std::string, append_result>> acks; // pid, where it landed
  std::vector<std::string> errors;
  std::vector<int> after_restart(appenders, 0);
  std::vector<std::thread> threads;
  auto deadline = std::chrono::steady_clock::now() + bound;
  for (int t = 0; t < appenders; ++t) {
    threads.emplace_back([&, t] {
      auto pid = "r" + std::to_string(t);
      std::uint64_t seq = 0;
      while (after_restart[static_cast<std::size_t>(t)] < 20
             && std::chrono::steady_clock::now() < deadline) {
        auto was_restarted = restarted.load();
        auto res = append(*j, pid, seq, {ev("e", R"({"seq":)" + std::to_string(seq + 1) + "}")});
        if (res) {
          seq = res->last_seq;
          ++acked;
          std::lock_guard guard{mtx};
          acks.emplace_back(pid, *res);
          if (was_restarted)
            ++after_restart[static_cast<std::size_t>(t)];
          continue;
        }
        {
          std::lock_guard guard{mtx};
          errors.push_back(render(res.error()));
        }
        // The outcome may be unknown: learn the stream's highest seq before writing again.
        // Pauses between tries while the server is down.
        for (;;) {
          std::this_thread::sleep_for(std::chrono::milliseconds{20});
          auto highest = highest_seq(*j, pid);
          if (highest) {
            seq = *highest;
            break;
          }
          if (std::chrono::steady_clock::now() > deadline)
            return;
        }
      }
    });
  }
  {
    // Restart once appends are flowing.
    auto until = std::chrono::steady_clock::now() + bound;
    while (acked < 100 && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    REQUIRE(acked >= 100);
    server.restart_immediate();
    restarted = true;
  }
  for (auto& t : threads)
    t.join();
  for (int t = 0; t < appenders; ++t)
    CHECK(after_restart[static_cast<std::size_t>(t)] >= 20);
  // Every acknowledged append is stored where its answer said.
  auto all = read_all(*j);
  REQUIRE(all);
  std::map<std::uint64_t, const event_record*> by_offset;
  for (const auto& rec : *all)
    by_offset[rec.offset] = &rec;
  for (const auto& [pid, res] : acks) {
    auto it = by_offset.find(res.first_offset);
    REQUIRE(it != by_offset.end());
    CHECK(it->second->persistence_id == pid);
    CHECK(it->second->seq == res.first_seq);
  }
  CHECK(offsets_equal_one_to(*all));
  for (const auto& msg : errors) {
    INFO(msg);
    CHECK_THAT(msg,
               Catch::StartsWith("journal.unavailable") && Catch::Contains("persistence id r"));
  }
  // The subscription reconnected and delivered every event once, in order.
  REQUIRE(seen.wait_for_offset(all->back().offset));
  std::lock_guard guard{seen.mtx};
  CHECK(seen.offsets == one_to(all->back().offset));
}

TEST_CASE("verify recomputes the hash chain and names the first altered event", "[postgres]") {
  auto conninfo = shared_server().create_database();
  auto j = open_pg(conninfo);
  for (int i = 0; i < 5; ++i)
    REQUIRE(append(*j, "acc-" + std::to_string(i % 2),
                   *highest_seq(*j, "acc-" + std::to_string(i % 2)),
                   {ev("e", R"({"i":)" + std::to_string(i) + "}")}));
  auto clean = postgres_journal::verify(conninfo);
  REQUIRE(clean);
  CHECK_FALSE(clean->first_break);
  CHECK(clean->events_checked == 5);
  CHECK(clean->head_offset == 5);
  // A superuser can switch the trigger off; the chain still shows the edit.
  raw_conn raw{conninfo};
  REQUIRE(raw
            .run("ALTER TABLE events DISABLE TRIGGER events_append_only; "
                 "UPDATE events SET payload = '{\"i\":99}' WHERE global_offset = 3")
            .empty());
  auto tampered = postgres_journal::verify(conninfo);
  REQUIRE(tampered);
  REQUIRE(tampered->first_break);
  CHECK(tampered->first_break->offset == 3);
  CHECK_THAT(tampered->first_break->reason, Catch::Contains("differs from the recomputed"));
  CHECK(tampered->head_offset == 5);
}

TEST_CASE("a database that holds another application's events table, or a newer schema, is "
          "refused without changes",
          "[postgres]") {
  auto foreign = shared_server().create_database();
  {
    raw_conn raw{foreign};
    REQUIRE(raw.run("CREATE TABLE events (id int)").empty());
  }
  auto res = postgres_journal::open({.conninfo = foreign});
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::not_a_journal));
  CHECK_THAT(render(res.error()), Catch::Contains("no annals_schema marker"));
  {
    raw_conn raw{foreign};
    CHECK_THAT(raw.run("SELECT 1 FROM annals_schema"), Catch::Contains("does not exist"));
  }
  auto newer = shared_server().create_database();
  {
    auto j = open_pg(newer);
    CHECK(j->info().created);
    CHECK(j->info().schema_version == postgres_journal::schema_version);
    CHECK(j->info().synchronous_commit == "on");
  }
  {
    raw_conn raw{newer};
    REQUIRE(raw.run("UPDATE annals_schema SET version = 99").empty());
  }
  auto refused = postgres_journal::open({.conninfo = newer});
  REQUIRE_FALSE(refused);
  CHECK(is(refused.error(), journal_errc::newer_schema));
  CHECK_THAT(render(refused.error()), Catch::Contains("version 99"));
}

TEST_CASE("a journal without a server fails to open as unavailable, naming the server",
          "[postgres]") {
  auto port = free_port();
  auto res = postgres_journal::open(
    {.conninfo = "host=127.0.0.1 port=" + std::to_string(port) + " user=annals dbname=none",
     .connect_timeout = std::chrono::milliseconds{2'000}});
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::unavailable));
  CHECK_THAT(render(res.error()), Catch::Contains("port=" + std::to_string(port)));
}

TEST_CASE("a writer that bypasses the offset lock makes only the append it collides with fail",
          "[postgres]") {
  auto conninfo = shared_server().create_database();
  auto j = open_pg(conninfo);
  raw_conn lock_holder{conninfo};
  raw_conn intruder{conninfo};
  // Hold the writers' lock so that the journal's writer waits inside the batch of "z" and
  // the appends to "x" and "y" queue up behind it as one batch.
  REQUIRE(lock_holder
            .run("BEGIN; SELECT pg_advisory_xact_lock("
                 + std::to_string(postgres_journal::offset_lock_key) + ")")
            .empty());
  std::optional<caf::expected<append_result>> z, x, y;
  countdown done;
  auto submit = [&](std::string pid, std::optional<caf::expected<append_result>>& slot) {
    j->append({std::move(pid), 0, {ev("e")}, {}}, [&](caf::expected<append_result> res) {
      slot.emplace(std::move(res));
      done.arrive();
    });
  };
  submit("z", z);
  // An uncommitted row for "x" from a connection that ignores the lock.
  REQUIRE(intruder
            .run("BEGIN; INSERT INTO events (global_offset, persistence_id, seq, name, version, "
                 "payload, timestamp_us, hash) VALUES (1000, 'x', 1, 'intruder', 1, '{}', 1, "
                 "'\\x"
                 + std::string(64, '0') + "')")
            .empty());
  auto waiting_on_lock = [&](const std::string& query_prefix) {
    auto deadline = std::chrono::steady_clock::now() + bound;
    while (std::chrono::steady_clock::now() < deadline) {
      PGresult* res =
        PQexec(lock_holder.conn, ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                                  "'Lock' AND query LIKE '"
                                  + query_prefix + "%'")
                                   .c_str());
      bool found =
        PQresultStatus(res) == PGRES_TUPLES_OK && std::string{PQgetvalue(res, 0, 0)} != "0";
      PQclear(res);
      if (found)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
    return false;
  };
  REQUIRE(waiting_on_lock("BEGIN; SELECT pg_advisory_xact_lock"));
  submit("x", x);
  submit("y", y);
  REQUIRE(lock_holder.run("COMMIT").empty());
  // The writer's COPY for "x" now waits for the intruder's uncommitted row.
  REQUIRE(waiting_on_lock("COPY events"));
  REQUIRE(intruder.run("COMMIT").empty());
  REQUIRE(done.wait(3));
  REQUIRE(*z);
  REQUIRE_FALSE(*x);
  CHECK(is(x->error(), journal_errc::conflict));
  CHECK_THAT(render(x->error()), Catch::Contains("persistence id x"));
  REQUIRE(*y);
  CHECK((*y)->first_offset == (*z)->last_offset + 1);
  auto stored = read_stream(*j, "y");
  REQUIRE(stored);
  CHECK(stored->size() == 1);
}
