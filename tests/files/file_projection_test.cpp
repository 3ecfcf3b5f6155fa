// The files sink: exactly once per file across restarts and replays, a throwing handler,
// file-name validation, rebuild, and one writer per directory.
//
// No sleeps: every wait is `projection::await_offset` or a status read after it, each with
// a bound that only a broken build reaches.

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "annals/actors/file_projection.hpp"
#include "annals/actors/system.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "files/files_fixtures.hpp"
#include "persistence/journal_fixtures.hpp"

using namespace annals;
using namespace annals::actors;
using annals::persistence::event_record;
using annals::persistence::test::bound;
using annals::persistence::test::temp_dir;

namespace {

persistence::journal_ptr open_journal(const temp_dir& tmp) {
  auto j = persistence::sqlite_journal::open({.path = tmp.file("journal.db")});
  if (!j)
    FAIL(render(j.error()));
  return *j;
}

std::uint64_t head_of(persistence::journal& j) {
  auto head = persistence::test::head_offset(j);
  REQUIRE(head);
  return *head;
}

file_projection_options statement_options(const std::string& dir) {
  return {.name = "statement-files", .directory = dir, .page_size = 16, .fsync = false};
}

projection_status reach(const projection& p, std::uint64_t offset) {
  auto st = p.await_offset(offset, bound);
  if (!st)
    FAIL("projection '" << p.name() << "' did not reach offset " << offset << ": "
                        << render(st.error()));
  return *st;
}

std::string error_of(const projection& p, std::uint64_t offset) {
  auto st = p.await_offset(offset, bound);
  REQUIRE_FALSE(st);
  auto status = p.status();
  REQUIRE(status);
  CHECK(status->state == projection_state::failed);
  return status->error;
}

/// Writes what its `writes` say, for each event: (file name, line).
class scripted_files : public file_projection_handler {
public:
  std::function<void(file_batch&, const event_record&)> script;
  int resets = 0;
  void apply(file_batch& files, const event_record& rec) override {
    script(files, rec);
  }
  void reset() override {
    ++resets;
  }
};

} // namespace

TEST_CASE("a files projection applies each event once per file across a restart") {
  temp_dir tmp;
  auto dir = tmp.file("statements");
  actors::actor_system sys;
  auto j = open_journal(tmp);
  files_test::history hist{25, 1};
  REQUIRE(hist.write(*j, 300).empty());
  {
    auto p =
      spawn_projection(sys, j, std::make_shared<bank::statement_files>(), statement_options(dir));
    auto st = reach(p, head_of(*j));
    CHECK(st.applied == 300);
    p.stop();
  }
  CHECK(*read_stored_offset(dir) == head_of(*j));
  REQUIRE(hist.write(*j, 200).empty());
  auto p =
    spawn_projection(sys, j, std::make_shared<bank::statement_files>(), statement_options(dir));
  auto st = reach(p, head_of(*j));
  CHECK(st.applied == 200); // only the events after the stored offset
  auto records = files_test::all_records(*j);
  REQUIRE(records);
  CHECK(files_test::check_statements(dir, files_test::statements_of(*records)) == "");
  auto acc0 = read_model_file(dir, "acc-0.jsonl");
  REQUIRE(acc0);
  CHECK(acc0->content.starts_with(R"({"seq":1,)"));
}

TEST_CASE("a batch replayed after a crash before its offset was stored changes no file twice") {
  temp_dir tmp;
  auto dir = tmp.file("statements");
  auto j = open_journal(tmp);
  REQUIRE(files_test::write_history(*j, 5, 40, 3).empty());
  auto records = files_test::all_records(*j);
  REQUIRE(records);
  std::span<const event_record> all{*records};
  auto opts = statement_options(dir);
  {
    auto sink = make_file_sink(std::make_shared<bank::statement_files>(), opts);
    CHECK(sink->guarantee() == delivery::exactly_once);
    REQUIRE(*sink->open() == 0);
    auto out = sink->apply(all.first(30), 0);
    REQUIRE_FALSE(out.err);
    CHECK(out.last_good == (*records)[29].offset);
  }
  // The model files hold events 1..30; the offset goes back to 10, as if a crash had hit
  // a batch 11..30 after its files were renamed and before its offset was written.
  {
    std::ofstream{dir + "/.annals-offset", std::ios::trunc} << "annals-offset "
                                                            << (*records)[9].offset << "\n";
  }
  auto before = read_model_file(dir, "acc-0.jsonl");
  REQUIRE(before);
  auto sink = make_file_sink(std::make_shared<bank::statement_files>(), opts);
  REQUIRE(*sink->open() == (*records)[9].offset);
  auto out = sink->apply(all.subspan(10), (*records)[9].offset);
  REQUIRE_FALSE(out.err);
  CHECK(out.last_good == records->back().offset);
  CHECK(files_test::check_statements(dir, files_test::statements_of(*records)) == "");
}

TEST_CASE("a throwing files handler stops at the event before, with none of that event's "
          "writes") {
  temp_dir tmp;
  auto dir = tmp.file("model");
  actors::actor_system sys;
  auto j = open_journal(tmp);
  REQUIRE(files_test::write_history(*j, 3, 20, 4).empty());
  auto h = std::make_shared<scripted_files>();
  h->script = [](file_batch& files, const event_record& rec) {
    files.append_line("all.txt", std::to_string(rec.offset));
    if (rec.offset == 12)
      throw std::runtime_error{"boom at twelve"};
    files.append_line("after.txt", std::to_string(rec.offset));
  };
  auto p = spawn_projection(sys, j, h, {.name = "thrower", .directory = dir, .fsync = false});
  auto err = error_of(p, head_of(*j));
  CHECK_THAT(err, Catch::Contains("boom at twelve"));
  CHECK_THAT(err, Catch::Contains("offset 12"));
  CHECK_THAT(err, Catch::Contains("thrower"));
  CHECK(*read_stored_offset(dir) == 11);
  auto all = read_model_file(dir, "all.txt");
  REQUIRE(all);
  CHECK(all->offset == 11);
  CHECK(all->content == "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n");
  auto after = read_model_file(dir, "after.txt");
  REQUIRE(after);
  CHECK(after->offset == 11);
}

TEST_CASE("file names that would leave the directory or hide a file are refused by name") {
  CHECK_FALSE(validate_file_name("acc-1.jsonl"));
  std::vector<std::string> bads{
    "", "a/b", "../x", "..", ".", ".hidden", "a..b", std::string(256, 'x'), std::string{"a\0b", 3}};
  for (const auto& bad : bads) {
    auto err = validate_file_name(bad);
    INFO("name: " << bad);
    CHECK(is(err, projection_errc::read_model_failed));
  }
  CHECK_THAT(render(validate_file_name("a/b")), Catch::Contains("'a/b'") && Catch::Contains("'/'"));
  CHECK_THAT(render(validate_file_name("..")), Catch::Contains("'..'"));

  temp_dir tmp;
  auto dir = tmp.file("model");
  actors::actor_system sys;
  auto j = open_journal(tmp);
  REQUIRE(files_test::write_history(*j, 1, 3, 5).empty());
  auto h = std::make_shared<scripted_files>();
  h->script = [](file_batch& files, const event_record& rec) {
    files.append_line(rec.offset == 2 ? "../escape.txt" : "ok.txt", "x");
  };
  auto p = spawn_projection(sys, j, h, {.name = "escaper", .directory = dir, .fsync = false});
  auto err = error_of(p, head_of(*j));
  CHECK_THAT(err, Catch::Contains("'../escape.txt'"));
  CHECK_THAT(err, Catch::Contains("offset 2"));
  CHECK_FALSE(std::filesystem::exists(tmp.file("escape.txt")));
  CHECK(read_model_file(dir, "ok.txt")->content == "x\n");
}

TEST_CASE("a files rebuild removes the model files, keeps other files, and replays once") {
  temp_dir tmp;
  auto dir = tmp.file("statements");
  actors::actor_system sys;
  auto j = open_journal(tmp);
  REQUIRE(files_test::write_history(*j, 6, 60, 6).empty());
  auto p =
    spawn_projection(sys, j, std::make_shared<bank::statement_files>(), statement_options(dir));
  reach(p, head_of(*j));
  // A model file of an account the journal does not have: a rebuild must remove it.
  {
    std::ofstream{dir + "/acc-99.jsonl"} << "{\"annals_offset\":1}\n{}\n";
    std::ofstream{dir + "/notes.txt"} << "not a model file\n";
  }
  REQUIRE_FALSE(p.rebuild());
  auto st = reach(p, head_of(*j));
  CHECK(st.applied == 120); // counted since the actor started: 60 before, 60 replayed
  CHECK_FALSE(std::filesystem::exists(dir + "/acc-99.jsonl"));
  CHECK(std::filesystem::exists(dir + "/notes.txt"));
  std::filesystem::remove(dir + "/notes.txt");
  auto records = files_test::all_records(*j);
  REQUIRE(records);
  CHECK(files_test::check_statements(dir, files_test::statements_of(*records)) == "");

  // A reset interrupted after its mark: the next start finishes it.
  p.stop();
  { std::ofstream{dir + "/.annals-offset", std::ios::trunc} << "annals-offset 0 reset\n"; }
  auto sink = make_file_sink(std::make_shared<bank::statement_files>(), statement_options(dir));
  REQUIRE(*sink->open() == 0);
  CHECK_FALSE(std::filesystem::exists(dir + "/acc-0.jsonl"));
  CHECK(*read_stored_offset(dir) == 0);
}

TEST_CASE("a second files projection on the same directory is refused, naming the directory") {
  temp_dir tmp;
  auto dir = tmp.file("statements");
  actors::actor_system sys;
  auto j = open_journal(tmp);
  files_test::history hist{2, 7};
  REQUIRE(hist.write(*j, 10).empty());
  auto first =
    spawn_projection(sys, j, std::make_shared<bank::statement_files>(), statement_options(dir));
  reach(first, head_of(*j));
  auto second =
    spawn_projection(sys, j, std::make_shared<bank::statement_files>(), statement_options(dir));
  auto err = error_of(second, head_of(*j));
  CHECK_THAT(err, Catch::Contains("in use by another instance") && Catch::Contains(dir));
  // The first keeps working.
  REQUIRE(hist.write(*j, 5).empty());
  reach(first, head_of(*j));
}

TEST_CASE("a files sink whose stored offset moved stops with offset_moved and writes nothing") {
  temp_dir tmp;
  auto dir = tmp.file("model");
  auto j = open_journal(tmp);
  REQUIRE(files_test::write_history(*j, 2, 10, 9).empty());
  auto records = files_test::all_records(*j);
  REQUIRE(records);
  std::span<const event_record> all{*records};
  auto sink = make_file_sink(std::make_shared<bank::statement_files>(), statement_options(dir));
  REQUIRE(*sink->open() == 0);
  REQUIRE_FALSE(sink->apply(all.first(5), 0).err);
  { std::ofstream{dir + "/.annals-offset", std::ios::trunc} << "annals-offset 7\n"; }
  auto out = sink->apply(all.subspan(5), 5);
  CHECK(is(out.err, projection_errc::offset_moved));
  CHECK(out.last_good == 5);
  CHECK(out.applied == 0);
  CHECK(read_model_file(dir, "acc-0.jsonl")->offset <= 5);
}

TEST_CASE("a files handler writing to a file that is not a model file stops, naming the file") {
  temp_dir tmp;
  auto dir = tmp.file("model");
  std::filesystem::create_directory(dir);
  { std::ofstream{dir + "/notes.txt"} << "written by hand\n"; }
  actors::actor_system sys;
  auto j = open_journal(tmp);
  REQUIRE(files_test::write_history(*j, 1, 2, 10).empty());
  auto h = std::make_shared<scripted_files>();
  h->script = [](file_batch& files, const event_record&) { files.append_line("notes.txt", "x"); };
  auto p = spawn_projection(sys, j, h, {.name = "hand", .directory = dir, .fsync = false});
  auto err = error_of(p, head_of(*j));
  CHECK_THAT(err, Catch::Contains("notes.txt") && Catch::Contains("not a model file"));
  CHECK(persistence::test::slurp(dir + "/notes.txt") == "written by hand\n");
}
