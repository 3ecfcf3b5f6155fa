#include "postgres/schema.hpp"

#include <charconv>
#include <limits>

namespace annals::persistence::postgres {

namespace {

// The key of the advisory lock that serialises schema creation.
constexpr const char* schema_lock = "SELECT pg_advisory_xact_lock(4705519084453740546)";

// Version 1 of the schema. Offsets come from the writer (see writer.cpp), not from a
// sequence: a sequence hands out numbers at INSERT, in another order than commits.
constexpr const char* schema_v1 = R"sql(
CREATE TABLE annals_schema (
  name text PRIMARY KEY,
  version integer NOT NULL
);
CREATE TABLE events (
  global_offset bigint PRIMARY KEY CHECK (global_offset > 0),
  persistence_id text NOT NULL CHECK (persistence_id <> ''),
  seq bigint NOT NULL CHECK (seq > 0),
  name text NOT NULL CHECK (name <> ''),
  version integer NOT NULL CHECK (version > 0),
  payload text NOT NULL,
  tags text,
  timestamp_us bigint NOT NULL,
  command_id text,
  correlation_id text,
  hash bytea NOT NULL CHECK (length(hash) = 32),
  UNIQUE (persistence_id, seq)
);
CREATE TABLE event_tags (
  tag text NOT NULL,
  global_offset bigint NOT NULL REFERENCES events (global_offset),
  PRIMARY KEY (tag, global_offset)
);
CREATE TABLE snapshots (
  persistence_id text NOT NULL,
  seq bigint NOT NULL,
  name text NOT NULL,
  version integer NOT NULL,
  payload text NOT NULL,
  timestamp_us bigint NOT NULL,
  PRIMARY KEY (persistence_id, seq)
);
CREATE FUNCTION annals_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'annals: % on table % refused: the journal is append-only', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
  FOR EACH ROW EXECUTE FUNCTION annals_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
  FOR EACH STATEMENT EXECUTE FUNCTION annals_refuse_change();
CREATE TRIGGER event_tags_append_only BEFORE UPDATE OR DELETE ON event_tags
  FOR EACH ROW EXECUTE FUNCTION annals_refuse_change();
CREATE TRIGGER event_tags_no_truncate BEFORE TRUNCATE ON event_tags
  FOR EACH STATEMENT EXECUTE FUNCTION annals_refuse_change();
CREATE FUNCTION annals_expect_seq(pid text, expected bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  found bigint;
BEGIN
  SELECT coalesce(max(seq), 0) INTO found FROM events WHERE persistence_id = pid;
  IF found <> expected THEN
    RAISE EXCEPTION 'persistence id % expected seq %, found %', pid, expected, found
      USING ERRCODE = 'AN001';
  END IF;
END $$;
INSERT INTO annals_schema (name, version) VALUES ('journal', 1);
)sql";

} // namespace

caf::error ensure_schema(const connection& conn, postgres_journal_info& info) {
  if (auto err = conn.run(std::string{"BEGIN; "} + schema_lock, "locking the schema"))
    return err;
  auto rollback = [&] { conn.exec("ROLLBACK"); };
  auto probe = conn.exec("SELECT to_regclass('annals_schema') IS NOT NULL, "
                         "to_regclass('events') IS NOT NULL");
  if (!probe.ok()) {
    auto err = conn.failure(probe, "checking the schema");
    rollback();
    return err;
  }
  bool has_marker = probe.text(0, 0) == "t";
  bool has_events = probe.text(0, 1) == "t";
  if (has_marker) {
    auto version = conn.exec("SELECT version FROM annals_schema WHERE name = 'journal'");
    if (!version.ok()) {
      auto err = conn.failure(version, "reading the schema version");
      rollback();
      return err;
    }
    rollback();
    if (version.rows() != 1)
      return make_error(journal_errc::not_a_journal,
                        conn.where() + " has a table annals_schema without a journal row");
    auto v = version.u64(0, 0);
    if (v > postgres_journal::schema_version)
      return make_error(journal_errc::newer_schema,
                        conn.where() + " has journal schema version " + std::to_string(v)
                          + ", this build reads up to "
                          + std::to_string(postgres_journal::schema_version));
    info.schema_version = static_cast<std::uint32_t>(v);
    return {};
  }
  if (has_events) {
    rollback();
    return make_error(journal_errc::not_a_journal,
                      conn.where()
                        + " has a table events but no annals_schema marker: it is not an "
                          "annals journal; nothing was changed");
  }
  if (auto err = conn.run(schema_v1, "creating the journal schema")) {
    rollback();
    return err;
  }
  if (auto err = conn.run("COMMIT", "committing the journal schema"))
    return err;
  info.schema_version = postgres_journal::schema_version;
  info.created = true;
  return {};
}

namespace {

bool parse_int(std::string_view t, std::int64_t& out) {
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), out);
  return ec == std::errc{} && ptr == t.data() + t.size();
}

std::vector<std::string> split_tags(std::string_view stored) {
  std::vector<std::string> out;
  for (;;) {
    auto sep = stored.find('\x1f');
    out.emplace_back(stored.substr(0, sep));
    if (sep == std::string_view::npos)
      return out;
    stored.remove_prefix(sep + 1);
  }
}

} // namespace

caf::error read_row(const result& res, int row, const std::string& where, event_record& rec) {
  std::int64_t offset = 0, seq = 0, version = 0, ts = 0;
  bool ok = parse_int(res.text(row, 0), offset);
  rec.offset = static_cast<std::uint64_t>(offset);
  rec.persistence_id = res.text(row, 1);
  ok = ok && parse_int(res.text(row, 2), seq);
  rec.seq = static_cast<std::uint64_t>(seq);
  rec.name = res.text(row, 3);
  ok = ok && parse_int(res.text(row, 4), version) && version > 0
       && version <= std::numeric_limits<std::uint32_t>::max();
  rec.version = static_cast<std::uint32_t>(version);
  rec.payload = res.text(row, 5);
  rec.tags.clear();
  if (!res.null(row, 6))
    rec.tags = split_tags(res.text(row, 6));
  ok = ok && parse_int(res.text(row, 7), ts);
  rec.timestamp_us = ts;
  rec.metadata.command_id = res.null(row, 8) ? std::string{} : std::string{res.text(row, 8)};
  rec.metadata.correlation_id = res.null(row, 9) ? std::string{} : std::string{res.text(row, 9)};
  if (!ok)
    return make_error(journal_errc::corrupt_row, where + ": the event at offset "
                                                   + std::string{res.text(row, 0)}
                                                   + " does not read back (a column is malformed)");
  return {};
}

} // namespace annals::persistence::postgres
