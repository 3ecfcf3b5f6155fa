// The group commit: every waiting append in one transaction (one COPY for the batch; a
// savepoint per append only when that fails), with offsets the writer assigns under a
// transaction-level advisory lock.
//
// Why the lock: a sequence hands out offsets at INSERT, but transactions commit in another
// order, so a reader could see offset N + 1 before N commits and never come back for N.
// Here a writer takes `offset_lock_key` first, then reads the highest committed offset,
// and keeps the lock until its COMMIT is visible (PostgreSQL releases locks after the
// commit becomes visible). The next writer, in this process or another, reads the head
// only after that: commits become visible in offset order and offsets have no holes.
//
// Under the lock the highest seqs the writer reads stay true until its commit, so it checks
// every append's expected seq itself and loads the rest of the batch with `COPY ... FROM
// STDIN` per chunk, the events and then their tags (`fast_path`). If that write fails
// anyway, the batch is rolled back to a savepoint and written again with INSERTs, one
// savepoint per append, as one multi-statement query: a failing statement makes the server
// skip the rest, the writer rolls back that append's savepoint, and sends the remaining
// appends again, numbered from where the failed one started.

#include <charconv>
#include <cstring>
#include <map>
#include <utility>

#include <caf/make_message.hpp>

#include "annals/persistence/audit.hpp"
#include "internal/validate.hpp"
#include "postgres/schema.hpp"
#include "postgres/state.hpp"

namespace annals::persistence::postgres {

namespace {

// Beyond this many bytes of SQL (or COPY rows), the rest of the batch goes in the next
// query.
constexpr std::size_t chunk_bytes = std::size_t{8} << 20;

struct outcome {
  caf::error err;
  append_result res;
  event_hash chain{}; // the chain's value after this append's last event
  bool done = false;  // answered (failed, or written inside the open transaction)
};

std::string join_tags(const std::vector<std::string>& tags) {
  std::string out;
  for (const auto& tag : tags) {
    if (!out.empty())
      out += '\x1f';
    out += tag;
  }
  return out;
}

bool parse_hash(std::string_view text, event_hash& out) {
  if (text.size() != 2 + 2 * out.size() || text.substr(0, 2) != "\\x")
    return false;
  for (std::size_t i = 0; i < out.size(); ++i) {
    auto [ptr, ec] = std::from_chars(text.data() + 2 + 2 * i, text.data() + 4 + 2 * i, out[i], 16);
    if (ec != std::errc{} || ptr != text.data() + 4 + 2 * i)
      return false;
  }
  return true;
}

// `invalid_request` for text PostgreSQL cannot store; empty if the append is storable.
caf::error check_storable(const append_request& req) {
  bool nul = has_nul(req.persistence_id) || has_nul(req.metadata.command_id)
             || has_nul(req.metadata.correlation_id);
  for (const auto& ev : req.events) {
    nul = nul || has_nul(ev.name) || has_nul(ev.payload);
    for (const auto& tag : ev.tags)
      nul = nul || has_nul(tag);
  }
  if (nul)
    return make_error(journal_errc::invalid_request,
                      "append to persistence id " + req.persistence_id
                        + " holds a NUL byte, which PostgreSQL text cannot store; nothing was "
                          "written");
  return {};
}

void append_optional(std::string& sql, const std::string& s) {
  if (s.empty())
    sql += "NULL";
  else
    append_literal(sql, s);
}

constexpr const char* insert_events =
  "INSERT INTO events (global_offset, persistence_id, seq, name, version, payload, tags, "
  "timestamp_us, command_id, correlation_id, hash) VALUES ";

template <class Int>
void append_number(std::string& out, Int x) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), x);
  out.append(buf, end);
}

// Numbers the events of `req` from `offset`, chains them from `chain`, and calls
// `row(event, offset, seq, hash)` for each; fills `out.res` and `out.chain` as if the append
// succeeds.
template <class F>
void for_each_row(const append_request& req, std::uint64_t offset, const event_hash& chain,
                  std::int64_t ts, outcome& out, F&& row) {
  auto h = chain;
  auto seq = req.expected_seq;
  for (std::size_t i = 0; i < req.events.size(); ++i) {
    const auto& ev = req.events[i];
    auto off = offset + i;
    ++seq;
    h = internal::chain_hash(h, off, req.persistence_id, seq, ev.name, ev.version, ev.payload,
                             ev.tags, ts, req.metadata.command_id, req.metadata.correlation_id);
    row(ev, off, seq, h);
  }
  out.res.first_seq = req.expected_seq + 1;
  out.res.last_seq = seq;
  out.res.first_offset = offset;
  out.res.last_offset = offset + req.events.size() - 1;
  out.res.timestamp_us = ts;
  out.chain = h;
}

// Appends the rows of one append to `rows` (events) and `tag_rows` as the VALUES lists of
// INSERTs; see `for_each_row`.
void append_insert_rows(std::string& rows, std::string& tag_rows, const append_request& req,
                        std::uint64_t offset, const event_hash& chain, std::int64_t ts,
                        outcome& out) {
  for_each_row(
    req, offset, chain, ts, out,
    [&](const encoded_event& ev, std::uint64_t off, std::uint64_t seq, const event_hash& h) {
      rows += rows.empty() ? "(" : ", (";
      rows += std::to_string(off) + ", ";
      append_literal(rows, req.persistence_id);
      rows += ", " + std::to_string(seq) + ", ";
      append_literal(rows, ev.name);
      rows += ", " + std::to_string(ev.version) + ", ";
      append_literal(rows, ev.payload);
      rows += ", ";
      append_optional(rows, join_tags(ev.tags));
      rows += ", " + std::to_string(ts) + ", ";
      append_optional(rows, req.metadata.command_id);
      rows += ", ";
      append_optional(rows, req.metadata.correlation_id);
      rows += ", ";
      append_bytea(rows, h.data(), h.size());
      rows += ')';
      for (const auto& tag : ev.tags) {
        tag_rows += tag_rows.empty() ? "(" : ", (";
        append_literal(tag_rows, tag);
        tag_rows += ", " + std::to_string(off) + ")";
      }
    });
}

// A nullable text field of COPY's text format: `\N` for the empty string (NULL, as
// `append_optional` writes it).
void append_copy_optional(std::string& out, std::string_view s) {
  if (s.empty())
    out += "\\N";
  else
    append_copy_text(out, s);
}

constexpr const char* copy_events =
  "COPY events (global_offset, persistence_id, seq, name, version, payload, tags, "
  "timestamp_us, command_id, correlation_id, hash) FROM STDIN";

constexpr const char* copy_event_tags = "COPY event_tags (tag, global_offset) FROM STDIN";

// Appends the rows of one append to `rows` (events) and `tag_rows` in COPY's text format,
// with the same values as `append_insert_rows`; see `for_each_row`.
void append_copy_rows(std::string& rows, std::string& tag_rows, const append_request& req,
                      std::uint64_t offset, const event_hash& chain, std::int64_t ts,
                      outcome& out) {
  for_each_row(
    req, offset, chain, ts, out,
    [&](const encoded_event& ev, std::uint64_t off, std::uint64_t seq, const event_hash& h) {
      append_number(rows, off);
      rows += '\t';
      append_copy_text(rows, req.persistence_id);
      rows += '\t';
      append_number(rows, seq);
      rows += '\t';
      append_copy_text(rows, ev.name);
      rows += '\t';
      append_number(rows, ev.version);
      rows += '\t';
      append_copy_text(rows, ev.payload);
      rows += '\t';
      // The tags joined by U+001F (validation refuses empty tags); NULL for none.
      if (ev.tags.empty()) {
        rows += "\\N";
      } else {
        for (std::size_t k = 0; k < ev.tags.size(); ++k) {
          if (k > 0)
            rows += '\x1f';
          append_copy_text(rows, ev.tags[k]);
        }
      }
      rows += '\t';
      append_number(rows, ts);
      rows += '\t';
      append_copy_optional(rows, req.metadata.command_id);
      rows += '\t';
      append_copy_optional(rows, req.metadata.correlation_id);
      rows += '\t';
      append_copy_bytea(rows, h.data(), h.size());
      rows += '\n';
      for (const auto& tag : ev.tags) {
        append_copy_text(tag_rows, tag);
        tag_rows += '\t';
        append_number(tag_rows, off);
        tag_rows += '\n';
      }
    });
}

// Appends the statements of one append, in a savepoint of its own and with the check of
// its expected seq, to `sql` (the path for a batch whose one-statement write failed).
void build_append(std::string& sql, const append_request& req, std::uint64_t offset,
                  const event_hash& chain, std::int64_t ts, outcome& out) {
  sql += "SAVEPOINT annals_append; SELECT annals_expect_seq(";
  append_literal(sql, req.persistence_id);
  sql += ", " + std::to_string(req.expected_seq) + "); ";
  std::string rows, tag_rows;
  append_insert_rows(rows, tag_rows, req, offset, chain, ts, out);
  sql += insert_events + rows + "; ";
  if (!tag_rows.empty())
    sql += "INSERT INTO event_tags (tag, global_offset) VALUES " + tag_rows + "; ";
  sql += "RELEASE annals_append; ";
}

// The error of append `req` whose statement failed with `res`.
caf::error append_failure(const connection& conn, const result& res, const append_request& req) {
  auto state = res.sqlstate();
  if (state == seq_mismatch_state) {
    std::string msg = PQresultErrorField(res.get(), PG_DIAG_MESSAGE_PRIMARY);
    return make_error(journal_errc::conflict, msg);
  }
  if (state == "23505")
    return make_error(journal_errc::conflict,
                      "persistence id " + req.persistence_id + ": seq "
                        + std::to_string(req.expected_seq + 1)
                        + " was taken by another writer at the same time (expected seq "
                        + std::to_string(req.expected_seq) + ")");
  return conn.failure(res, "appending to persistence id " + req.persistence_id);
}

// Fails every append of `idx` not answered yet with `err`, naming its persistence id.
void fail_open(std::vector<append_item>& batch, std::vector<outcome>& out, const caf::error& err,
               bool committed_ones_too) {
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (out[i].done && (out[i].err || !committed_ones_too))
      continue;
    out[i].done = true;
    out[i].err = caf::error{
      err.code(), err.category(),
      caf::make_message("persistence id " + batch[i].req.persistence_id + ": " + context_of(err))};
  }
}

class writer {
public:
  writer(postgres_journal::impl& st, connection conn) : st_(st), conn_(std::move(conn)) {}

  void process(std::vector<append_item>& batch) {
    std::vector<outcome> out(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i)
      if (auto err = check_storable(batch[i].req)) {
        out[i].err = std::move(err);
        out[i].done = true;
      }
    run(batch, out);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (out[i].err)
        batch[i].done(std::move(out[i].err));
      else
        batch[i].done(out[i].res);
    }
  }

private:
  caf::error ensure_connection() {
    if (conn_.alive())
      return {};
    conn_.reset();
    auto c = connection::open(st_.opts.conninfo, st_.opts.connect_timeout);
    if (!c)
      return std::move(c.error());
    conn_ = std::move(*c);
    return conn_.run("SET synchronous_commit = on", "setting synchronous_commit");
  }

  void run(std::vector<append_item>& batch, std::vector<outcome>& out) {
    if (auto err = ensure_connection()) {
      fail_open(batch, out, err, false);
      return;
    }
    auto head = conn_.exec(std::string{"BEGIN; SELECT pg_advisory_xact_lock("}
                           + std::to_string(postgres_journal::offset_lock_key)
                           + "); SELECT global_offset, hash FROM events ORDER BY global_offset "
                             "DESC LIMIT 1");
    if (!head.ok()) {
      auto err = conn_.failure(head, "starting a write transaction; nothing was written");
      abort_transaction();
      fail_open(batch, out, err, false);
      return;
    }
    std::uint64_t next = 1;
    event_hash chain{};
    if (head.rows() == 1) {
      next = head.u64(0, 0) + 1;
      if (!parse_hash(head.text(0, 1), chain)) {
        auto err = make_error(journal_errc::corrupt_row,
                              conn_.where() + ": the event at offset " + std::to_string(next - 1)
                                + " has no valid hash; nothing was written");
        abort_transaction();
        fail_open(batch, out, err, false);
        return;
      }
    }
    auto ts = internal::now_us();
    bool any = false;
    if (fast_path(batch, out, next, chain, ts, any))
      return commit(batch, out, any);
    if (!conn_.alive())
      return;
    std::size_t start = 0;
    while (start < batch.size()) {
      if (out[start].done) {
        ++start;
        continue;
      }
      // One query: the appends from `start` on, until the chunk is full.
      std::string sql;
      std::vector<std::size_t> sent;
      auto offset = next;
      auto h = chain;
      for (auto i = start; i < batch.size() && sql.size() < chunk_bytes; ++i) {
        if (out[i].done)
          continue;
        build_append(sql, batch[i].req, offset, h, ts, out[i]);
        offset = out[i].res.last_offset + 1;
        h = out[i].chain;
        sent.push_back(i);
      }
      std::size_t released = 0;
      result failed;
      if (PQsendQuery(conn_.get(), sql.c_str()) == 0) {
        auto err = conn_.failure(result{}, "sending appends; nothing was committed");
        abort_transaction();
        fail_open(batch, out, err, true);
        return;
      }
      while (PGresult* r = PQgetResult(conn_.get())) {
        result res{r};
        if (!res.ok()) {
          if (!failed)
            failed = std::move(res);
        } else if (std::strcmp(PQcmdStatus(res.get()), "RELEASE") == 0) {
          ++released;
        }
      }
      for (std::size_t k = 0; k < released; ++k) {
        auto i = sent[k];
        out[i].done = true;
        next = out[i].res.last_offset + 1;
        chain = out[i].chain;
        any = true;
      }
      if (released == sent.size()) {
        start = sent.back() + 1;
        continue;
      }
      auto i = sent[released];
      if (!conn_.alive()) {
        auto err = conn_.failure(failed, "appending; nothing was committed");
        fail_open(batch, out, err, true);
        conn_.reset();
        return;
      }
      out[i].err = append_failure(conn_, failed, batch[i].req);
      out[i].done = true;
      auto undo = conn_.exec("ROLLBACK TO SAVEPOINT annals_append; RELEASE annals_append");
      if (!undo.ok()) {
        auto err = conn_.failure(undo, "rolling back a failed append; nothing was committed");
        abort_transaction();
        fail_open(batch, out, err, true);
        return;
      }
      start = i + 1;
    }
    commit(batch, out, any);
  }

  // Commits the open transaction if any append of it succeeded (and notifies listeners).
  void commit(std::vector<append_item>& batch, std::vector<outcome>& out, bool any) {
    if (!any) {
      abort_transaction();
      return;
    }
    auto commit = conn_.exec(std::string{"NOTIFY "} + postgres_journal::channel + "; COMMIT");
    if (!commit.ok()) {
      auto err = conn_.failure(commit, "committing");
      if (is(err, journal_errc::unavailable))
        err = make_error(journal_errc::unavailable,
                         context_of(err)
                           + "; COMMIT was sent, so the outcome of this append is unknown: read "
                             "the stream's highest seq before writing again");
      abort_transaction();
      fail_open(batch, out, err, true);
    }
  }

  // The whole batch in one COPY per table and chunk: under the advisory lock the highest seqs
  // read here stay true until the commit (every annals writer takes that lock), so the
  // seq checks happen here, and a conflict fails its append alone. True if the batch was
  // handled; false if a write failed anyway (a writer that ignores the lock, or an error
  // of the server): then nothing of it stays, `out` is as before, and the caller writes
  // the appends one savepoint at a time. On a lost connection, fails every append.
  bool fast_path(std::vector<append_item>& batch, std::vector<outcome>& out, std::uint64_t& next,
                 event_hash& chain, std::int64_t ts, bool& any) {
    std::string ids;
    std::map<std::string, std::uint64_t> highest;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (out[i].done || !highest.emplace(batch[i].req.persistence_id, 0).second)
        continue;
      if (!ids.empty())
        ids += ", ";
      append_literal(ids, batch[i].req.persistence_id);
    }
    if (highest.empty())
      return true;
    auto found = conn_.exec("SAVEPOINT annals_batch; SELECT persistence_id, max(seq) FROM events "
                            "WHERE persistence_id IN ("
                            + ids + ") GROUP BY persistence_id");
    if (!found.ok()) {
      lost_or_rolled_back(batch, out, conn_.failure(found, "appending; nothing was committed"));
      return false;
    }
    for (int row = 0; row < found.rows(); ++row)
      highest[std::string{found.text(row, 0)}] = found.u64(row, 1);
    auto saved = out;
    auto offset = next;
    auto h = chain;
    std::string rows, tag_rows;
    auto flush = [&]() -> bool {
      if (rows.empty())
        return true;
      const std::string what = "appending; nothing was committed";
      auto err = conn_.copy(copy_events, rows, what);
      if (!err && !tag_rows.empty())
        err = conn_.copy(copy_event_tags, tag_rows, what);
      rows.clear();
      tag_rows.clear();
      if (!err)
        return true;
      out = saved;
      lost_or_rolled_back(batch, out, err);
      return false;
    };
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (out[i].done)
        continue;
      const auto& req = batch[i].req;
      auto& top = highest[req.persistence_id];
      out[i].done = true;
      if (top != req.expected_seq) {
        out[i].err = internal::conflict_error(req.persistence_id, req.expected_seq, top);
        continue;
      }
      append_copy_rows(rows, tag_rows, req, offset, h, ts, out[i]);
      offset = out[i].res.last_offset + 1;
      h = out[i].chain;
      top = out[i].res.last_seq;
      if (rows.size() + tag_rows.size() > chunk_bytes && !flush())
        return false;
    }
    if (!flush())
      return false;
    for (std::size_t i = 0; i < batch.size(); ++i)
      any = any || (out[i].done && !out[i].err && !saved[i].done);
    next = offset;
    chain = h;
    return true;
  }

  // After a failed statement of the fast path (`err`): rolls back to the batch's
  // savepoint, or fails every append with `err` if the connection is gone (or with the
  // rollback's error if that fails).
  void lost_or_rolled_back(std::vector<append_item>& batch, std::vector<outcome>& out,
                           const caf::error& err) {
    if (conn_.alive()) {
      auto undo = conn_.exec("ROLLBACK TO SAVEPOINT annals_batch; RELEASE annals_batch");
      if (undo.ok())
        return;
      auto undo_err = conn_.failure(undo, "rolling back a batch; nothing was committed");
      abort_transaction();
      fail_open(batch, out, undo_err, true);
      conn_.reset();
      return;
    }
    fail_open(batch, out, err, true);
    conn_.reset();
  }

  void abort_transaction() {
    if (conn_.alive())
      conn_.exec("ROLLBACK");
    else
      conn_.reset();
  }

  postgres_journal::impl& st_;
  connection conn_;
};

} // namespace

} // namespace annals::persistence::postgres

namespace annals::persistence {

bool postgres_journal::impl::submit_write(postgres::append_item& item) {
  {
    std::lock_guard guard{write_mtx};
    if (write_stop)
      return false;
    write_queue.push_back(std::move(item));
  }
  write_cv.notify_one();
  return true;
}

void postgres_journal::impl::writer_loop(postgres::connection conn) {
  postgres::writer w{*this, std::move(conn)};
  std::vector<postgres::append_item> batch;
  for (;;) {
    {
      std::unique_lock lk{write_mtx};
      write_cv.wait(lk, [&] { return !write_queue.empty() || write_stop; });
      if (write_queue.empty())
        return;
      auto n = std::min(write_queue.size(), std::max<std::size_t>(opts.max_batch, 1));
      for (std::size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(write_queue.front()));
        write_queue.pop_front();
      }
    }
    w.process(batch);
    batch.clear();
  }
}

} // namespace annals::persistence
