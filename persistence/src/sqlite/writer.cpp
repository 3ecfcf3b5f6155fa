#include "sqlite/writer.hpp"

#include <chrono>
#include <cstring>
#include <iterator>

#include <caf/make_message.hpp>

#include "annals/persistence/sqlite_format.hpp"
#include "internal/validate.hpp"
#include "sqlite/inline.hpp"

namespace annals::persistence::sqlite {

caf::error configure_writer(writer_state& w, const sqlite_options& opts,
                            sqlite_journal_info& info) {
  auto db = w.conn.db;
  // Set before anything else runs so that even the schema check cannot grow the file.
  if (opts.max_page_count > 0) {
    auto sql = "PRAGMA max_page_count = " + std::to_string(opts.max_page_count);
    if (auto err = exec(db, sql.c_str(), w.path))
      return err;
  }
  auto mode = query_text(db, "PRAGMA journal_mode = WAL", w.path);
  if (!mode)
    return std::move(mode.error());
  if (*mode != "wal")
    return make_error(journal_errc::storage_error,
                      w.path + ": cannot switch to WAL mode (journal_mode is " + *mode + ")");
  info.journal_mode = *mode;
  auto sync = opts.durability == durability_level::full ? "PRAGMA synchronous = FULL"
                                                        : "PRAGMA synchronous = NORMAL";
  for (const char* sql : {sync, "PRAGMA temp_store = MEMORY", "PRAGMA cache_size = -32768"})
    if (auto err = exec(db, sql, w.path))
      return err;
  auto level = query_int(db, "PRAGMA synchronous", w.path);
  if (!level)
    return std::move(level.error());
  info.synchronous = static_cast<int>(*level);
  return {};
}

caf::error prepare_writer(writer_state& w) {
  struct {
    statement* target;
    const char* sql;
  } list[] = {
    {&w.begin, "BEGIN IMMEDIATE"},
    {&w.commit, "COMMIT"},
    {&w.rollback, "ROLLBACK"},
    {&w.savepoint, "SAVEPOINT annals_write"},
    {&w.release, "RELEASE annals_write"},
    {&w.rollback_to, "ROLLBACK TO annals_write"},
    {&w.max_offset, "SELECT coalesce(max(global_offset), 0) FROM events"},
    {&w.max_seq, "SELECT coalesce(max(seq), 0) FROM events WHERE persistence_id = ?1"},
    {&w.insert_event, sqlite_format::insert_event_sql},
    {&w.head_hash, "SELECT hash FROM events WHERE global_offset = ?1"},
    {&w.insert_tag, sqlite_format::insert_tag_sql},
    {&w.insert_snapshot,
     "INSERT OR REPLACE INTO snapshots (persistence_id, seq, name, version, payload, "
     "timestamp_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"},
    {&w.trim_snapshots,
     "DELETE FROM snapshots WHERE persistence_id = ?1 AND seq < (SELECT min(seq) FROM "
     "(SELECT seq FROM snapshots WHERE persistence_id = ?1 ORDER BY seq DESC LIMIT ?2))"},
  };
  for (auto& entry : list) {
    auto stmt = prepare(w.conn.db, entry.sql, w.path);
    if (!stmt)
      return std::move(stmt.error());
    *entry.target = std::move(*stmt);
  }
  return {};
}

applied fail_step(writer_state& w, caf::error err, bool in_savepoint, outcome& out) {
  out.err = std::move(err);
  if (sqlite3_get_autocommit(w.conn.db))
    return applied::transaction_lost;
  if (in_savepoint) {
    sqlite3_step(w.rollback_to);
    sqlite3_reset(w.rollback_to);
    sqlite3_step(w.release);
    sqlite3_reset(w.release);
  }
  return applied::failed;
}

applied fail_last(writer_state& w, const std::string& what, bool in_savepoint, outcome& out) {
  return fail_step(w, last_failure(w.conn.db, what, w.path), in_savepoint, out);
}

namespace {

caf::expected<std::uint64_t> stored_highest(writer_state& w, const std::string& pid) {
  bind_text(w.max_seq, 1, pid);
  return read_count(w.conn.db, w.max_seq, w.path, "reading the highest seq");
}

applied apply_append(writer_state& w, append_item& item, std::uint64_t& next_offset,
                     std::int64_t timestamp, bool collect, outcome& out) {
  auto& req = item.req;
  auto cached = w.seq_cache.find(req.persistence_id);
  std::uint64_t highest = 0;
  bool from_cache = cached != w.seq_cache.end();
  if (from_cache)
    highest = cached->second;
  // A cached value can only be stale low (another process appended), so a mismatch is
  // confirmed against the file before it is reported. A new stream (expected seq 0)
  // needs no lookup: if it is not new after all, inserting seq 1 hits the unique index.
  if (!from_cache && req.expected_seq == 0) {
    highest = 0;
  } else if (!from_cache || highest != req.expected_seq) {
    auto stored = stored_highest(w, req.persistence_id);
    if (!stored)
      return fail_step(w, std::move(stored.error()), false, out);
    highest = *stored;
  }
  if (highest != req.expected_seq) {
    out.err = internal::conflict_error(req.persistence_id, req.expected_seq, highest);
    if (from_cache)
      cached->second = highest;
    return applied::failed;
  }
  auto needs_savepoint = req.events.size() > 1 || !w.inlines.empty();
  for (const auto& ev : req.events)
    needs_savepoint = needs_savepoint || !ev.tags.empty();
  // A single statement is atomic by itself; only multi-statement writes pay for a
  // savepoint.
  if (needs_savepoint && !step_done(w.savepoint))
    return fail_last(w, "opening a savepoint", false, out);
  auto offset = next_offset;
  auto seq = highest;
  auto chain = w.chain; // becomes the writer's only if the whole append succeeds
  for (auto& ev : req.events) {
    ++seq;
    auto* ins = w.insert_event.ptr;
    bind_u64(ins, 1, offset);
    bind_text(ins, 2, req.persistence_id);
    bind_u64(ins, 3, seq);
    bind_text(ins, 4, ev.name);
    sqlite3_bind_int64(ins, 5, ev.version);
    bind_text(ins, 6, ev.payload);
    if (ev.tags.empty()) {
      sqlite3_bind_null(ins, 7);
    } else {
      w.tags_buf.clear();
      for (const auto& tag : ev.tags) {
        if (!w.tags_buf.empty())
          w.tags_buf += sqlite_format::tag_separator;
        w.tags_buf += tag;
      }
      bind_text(ins, 7, w.tags_buf);
    }
    sqlite3_bind_int64(ins, 8, timestamp);
    bind_optional_text(ins, 9, req.metadata.command_id);
    bind_optional_text(ins, 10, req.metadata.correlation_id);
    chain = internal::chain_hash(chain, offset, req.persistence_id, seq, ev.name, ev.version,
                                 ev.payload, ev.tags, timestamp, req.metadata.command_id,
                                 req.metadata.correlation_id);
    sqlite3_bind_blob(ins, 11, chain.data(), static_cast<int>(chain.size()), SQLITE_STATIC);
    auto rc = sqlite3_step(ins);
    sqlite3_reset(ins);
    if (rc != SQLITE_DONE) {
      w.seq_cache.erase(req.persistence_id);
      if (sqlite3_extended_errcode(w.conn.db) == SQLITE_CONSTRAINT_UNIQUE) {
        // Another process on the same file got there first.
        return fail_step(w,
                         make_error(journal_errc::conflict,
                                    "persistence id " + req.persistence_id + " already has seq "
                                      + std::to_string(seq) + " (expected seq "
                                      + std::to_string(req.expected_seq) + ")"),
                         needs_savepoint, out);
      }
      return fail_last(
        w, "appending seq " + std::to_string(seq) + " to persistence id " + req.persistence_id,
        needs_savepoint, out);
    }
    for (const auto& tag : ev.tags) {
      bind_text(w.insert_tag, 1, tag);
      bind_u64(w.insert_tag, 2, offset);
      if (!step_done(w.insert_tag)) {
        w.seq_cache.erase(req.persistence_id);
        return fail_last(
          w, "tagging seq " + std::to_string(seq) + " of persistence id " + req.persistence_id,
          needs_savepoint, out);
      }
    }
    ++offset;
  }
  // The records of this append, for the commit listeners and the inline projections.
  std::vector<event_record> recs;
  if (collect || !w.inlines.empty()) {
    recs.reserve(req.events.size());
    auto off = next_offset;
    auto s = highest + 1;
    for (const auto& ev : req.events) {
      auto& rec = recs.emplace_back();
      rec.offset = off++;
      rec.persistence_id = req.persistence_id;
      rec.seq = s++;
      rec.name = ev.name;
      rec.version = ev.version;
      rec.payload = ev.payload;
      rec.tags = ev.tags;
      rec.timestamp_us = timestamp;
      rec.metadata = req.metadata;
    }
  }
  if (!w.inlines.empty()) {
    if (auto err = apply_inline(w, recs)) {
      w.seq_cache.erase(req.persistence_id);
      return fail_step(w, std::move(err), true, out);
    }
  }
  if (needs_savepoint && !step_done(w.release))
    return fail_last(w, "releasing a savepoint", true, out);
  w.chain = chain;
  out.res.first_seq = highest + 1;
  out.res.last_seq = seq;
  out.res.first_offset = next_offset;
  out.res.last_offset = offset - 1;
  out.res.timestamp_us = timestamp;
  if (collect)
    out.records = std::move(recs);
  next_offset = offset;
  if (from_cache) {
    cached->second = seq;
  } else {
    if (w.seq_cache.size() >= w.seq_cache_entries)
      w.seq_cache.clear();
    w.seq_cache.emplace(req.persistence_id, seq);
  }
  return applied::ok;
}

// `err` with the persistence id of `item` added to its context, for a failure that
// took a whole transaction down.
caf::error naming_stream(const caf::error& err, const write_item& item) {
  const std::string* pid = nullptr;
  if (auto* a = std::get_if<append_item>(&item))
    pid = &a->req.persistence_id;
  else if (auto* sn = std::get_if<snapshot_item>(&item))
    pid = &sn->snap.persistence_id;
  if (pid == nullptr)
    return err;
  return caf::error{err.code(), err.category(),
                    caf::make_message("persistence id " + *pid + ": " + context_of(err))};
}

// Reads the stored hash of event `head` (the newest) into `w.chain`; zeros for none.
caf::error read_chain_head(writer_state& w, std::uint64_t head) {
  w.chain.fill(0);
  if (head == 0)
    return {};
  auto* stmt = w.head_hash.ptr;
  reset_guard guard{stmt};
  bind_u64(stmt, 1, head);
  auto rc = sqlite3_step(stmt);
  if (rc != SQLITE_ROW)
    return sqlite_failure(rc, w.conn.db, "reading the hash of the newest event", w.path);
  if (sqlite3_column_bytes(stmt, 0) != static_cast<int>(w.chain.size()))
    return make_error(journal_errc::corrupt_row,
                      w.path + ": the event at offset " + std::to_string(head)
                        + " has no valid hash; `annals verify` tells where the chain breaks");
  std::memcpy(w.chain.data(), sqlite3_column_blob(stmt, 0), w.chain.size());
  return {};
}

// Counts the batch, runs the commit listeners, then answers every write.
void deliver(sqlite_journal::impl& st, std::vector<write_item>& batch, std::vector<outcome>& out,
             bool collect) {
  std::uint64_t ok_appends = 0;
  std::uint64_t ok_events = 0;
  std::uint64_t failed = 0;
  std::vector<event_record> records;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (!std::holds_alternative<append_item>(batch[i]))
      continue;
    if (out[i].err) {
      ++failed;
      continue;
    }
    ++ok_appends;
    ok_events += out[i].res.last_seq - out[i].res.first_seq + 1;
    if (collect)
      std::move(out[i].records.begin(), out[i].records.end(), std::back_inserter(records));
  }
  st.appends.fetch_add(ok_appends, std::memory_order_relaxed);
  st.events.fetch_add(ok_events, std::memory_order_relaxed);
  st.failed_appends.fetch_add(failed, std::memory_order_relaxed);
  // Listeners first: by the time an appender hears back, projections have the batch.
  if (!records.empty()) {
    std::vector<std::shared_ptr<commit_listener>> targets;
    {
      std::lock_guard guard{st.listeners_mtx};
      for (auto& [handle, f] : st.listeners)
        targets.push_back(f);
    }
    for (auto& f : targets)
      (*f)(records);
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (auto* app = std::get_if<append_item>(&batch[i])) {
      if (out[i].err)
        app->done(std::move(out[i].err));
      else
        app->done(out[i].res);
    } else if (auto* snap = std::get_if<snapshot_item>(&batch[i])) {
      if (out[i].err)
        snap->done(std::move(out[i].err));
      else
        snap->done(caf::unit);
    }
  }
}

// One group commit: every write of `batch` in one transaction.
void process(sqlite_journal::impl& st, writer_state& w, std::vector<write_item>& batch) {
  std::vector<outcome> out(batch.size());
  std::vector<std::size_t> pending;
  pending.reserve(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (auto* ctl = std::get_if<control_item>(&batch[i])) {
      ctl->run(w);
      out[i].settled = true;
    } else {
      pending.push_back(i);
    }
  }
  bool collect = st.has_listeners.load(std::memory_order_acquire);
  std::size_t committed = 0;
  // Each round is one transaction. A failure that takes the whole transaction down
  // fails only the write that caused it; the others are written again.
  while (!pending.empty()) {
    for (auto i : pending)
      out[i] = outcome{};
    auto started = std::chrono::steady_clock::now();
    auto begin_rc = sqlite3_step(w.begin);
    sqlite3_reset(w.begin);
    if (begin_rc != SQLITE_DONE) {
      auto err = sqlite_failure(begin_rc, w.conn.db, "starting a write transaction", w.path);
      for (auto i : pending)
        out[i].err = err;
      break;
    }
    // A file deleted or replaced under the open connection would take every later commit
    // with it into an unlinked inode: acknowledged appends that no one can read again.
    int moved = 0;
    if (sqlite3_file_control(w.conn.db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK
        && moved != 0) {
      step_done(w.rollback);
      auto err = make_error(journal_errc::storage_error,
                            w.path
                              + " was deleted or replaced while the journal had it open; "
                                "nothing was written (reopen the journal)");
      for (auto i : pending)
        out[i].err = err;
      break;
    }
    auto max_offset = read_count(w.conn.db, w.max_offset, w.path, "reading the head offset");
    if (!max_offset) {
      step_done(w.rollback);
      for (auto i : pending)
        out[i].err = max_offset.error();
      break;
    }
    if (auto err = read_chain_head(w, *max_offset)) {
      step_done(w.rollback);
      for (auto i : pending)
        out[i].err = err;
      break;
    }
    auto next_offset = *max_offset + 1;
    auto timestamp = internal::now_us();
    std::size_t lost_at = pending.size();
    for (std::size_t k = 0; k < pending.size(); ++k) {
      auto i = pending[k];
      auto result = std::visit(
        [&](auto& item) -> applied {
          using item_type = std::decay_t<decltype(item)>;
          if constexpr (std::is_same_v<item_type, append_item>)
            return apply_append(w, item, next_offset, timestamp, collect, out[i]);
          else if constexpr (std::is_same_v<item_type, snapshot_item>)
            return apply_snapshot(w, item, out[i]);
          else
            return applied::ok;
        },
        batch[i]);
      if (result == applied::transaction_lost) {
        lost_at = k;
        break;
      }
    }
    if (lost_at < pending.size()) {
      if (!sqlite3_get_autocommit(w.conn.db))
        step_done(w.rollback);
      w.seq_cache.clear();
      pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(lost_at));
      continue;
    }
    if (!w.inlines.empty() && next_offset > *max_offset + 1) {
      if (auto err = advance_inline(w, next_offset - 1)) {
        if (!sqlite3_get_autocommit(w.conn.db))
          step_done(w.rollback);
        w.seq_cache.clear();
        for (auto i : pending)
          if (!out[i].err)
            out[i].err = naming_stream(err, batch[i]);
        break;
      }
    }
    auto commit_rc = sqlite3_step(w.commit);
    sqlite3_reset(w.commit);
    if (commit_rc != SQLITE_DONE) {
      auto err = sqlite_failure(commit_rc, w.conn.db, "committing", w.path);
      if ((commit_rc & 0xff) == SQLITE_IOERR) {
        // The commit record may already be in the WAL: after a crash these appends can
        // turn out stored. Callers treat it like a timeout (retry with the same
        // idempotency key), never as "certainly not written".
        err = make_error(journal_errc::storage_error,
                         annals::context_of(err) + "; the outcome of this commit is unknown");
      }
      if (!sqlite3_get_autocommit(w.conn.db))
        step_done(w.rollback);
      w.seq_cache.clear();
      for (auto i : pending)
        if (!out[i].err)
          out[i].err = naming_stream(err, batch[i]);
      break;
    }
    committed = pending.size();
    st.transactions.fetch_add(1, std::memory_order_relaxed);
    auto took_us = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                std::chrono::steady_clock::now() - started)
                                                .count());
    st.commit_us_sum.fetch_add(took_us, std::memory_order_relaxed);
    sqlite_journal::impl::count(st.commit_histogram, sqlite_journal_stats::commit_bounds_us,
                                took_us);
    sqlite_journal::impl::count(st.batch_histogram, sqlite_journal_stats::batch_bounds, committed);
    st.batch_writes_sum.fetch_add(committed, std::memory_order_relaxed);
    break;
  }
  if (committed > st.largest_batch.load(std::memory_order_relaxed))
    st.largest_batch.store(committed, std::memory_order_relaxed);
  deliver(st, batch, out, collect);
}

} // namespace

} // namespace annals::persistence::sqlite

namespace annals::persistence {

bool sqlite_journal::impl::submit_write(sqlite::write_item& item) {
  {
    std::lock_guard guard{write_mtx};
    if (write_stop)
      return false;
    write_queue.push_back(std::move(item));
  }
  write_cv.notify_one();
  return true;
}

void sqlite_journal::impl::writer_loop(sqlite::writer_state& w) {
  std::vector<sqlite::write_item> batch;
  for (;;) {
    {
      std::unique_lock lk{write_mtx};
      write_cv.wait(lk, [&] { return !write_queue.empty() || write_stop; });
      if (write_queue.empty())
        return;
      auto n = std::min(write_queue.size(), std::max<std::size_t>(opts.max_batch, 1));
      batch.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(write_queue.front()));
        write_queue.pop_front();
      }
    }
    sqlite::process(*this, w, batch);
    batch.clear();
  }
}

} // namespace annals::persistence
