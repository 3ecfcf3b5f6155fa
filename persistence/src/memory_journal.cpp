#include "annals/persistence/memory_journal.hpp"

#include <algorithm>
#include <limits>

#include "internal/validate.hpp"

namespace annals::persistence {

memory_journal::memory_journal(std::size_t max_append_bytes)
  : max_append_bytes_(max_append_bytes) {}

memory_journal::~memory_journal() = default;

void memory_journal::append(append_request req, callback<append_result> done) {
  if (auto err = internal::validate(req, max_append_bytes_)) {
    done(std::move(err));
    return;
  }
  append_result res;
  caf::error failure;
  {
    std::lock_guard guard{mtx_};
    auto i = streams_.find(req.persistence_id);
    auto highest = i == streams_.end() ? std::size_t{0} : i->second.size();
    if (injected_failure_)
      failure = injected_failure_;
    else if (req.expected_seq != highest)
      failure = internal::conflict_error(req.persistence_id, req.expected_seq, highest);
    else
      commit(req, res);
  }
  // Callbacks never run under the lock, so that they may call back into the journal.
  if (failure) {
    done(std::move(failure));
    return;
  }
  deliver_pending();
  done(res);
}

void memory_journal::commit(append_request& req, append_result& res) {
  auto& stream = streams_[req.persistence_id];
  res.timestamp_us = internal::now_us();
  res.first_seq = stream.size() + 1;
  res.first_offset = events_.size() + 1;
  std::vector<event_record> batch;
  batch.reserve(listeners_.empty() ? 0 : req.events.size());
  for (auto& ev : req.events) {
    event_record rec;
    rec.offset = events_.size() + 1;
    rec.persistence_id = req.persistence_id;
    rec.seq = stream.size() + 1;
    rec.name = std::move(ev.name);
    rec.version = ev.version;
    rec.payload = std::move(ev.payload);
    rec.tags = std::move(ev.tags);
    rec.timestamp_us = res.timestamp_us;
    rec.metadata = req.metadata;
    auto index = events_.size();
    for (const auto& tag : rec.tags)
      tagged_[tag].push_back(index);
    stream.push_back(index);
    if (!listeners_.empty())
      batch.push_back(rec);
    events_.push_back(std::move(rec));
  }
  res.last_seq = stream.size();
  res.last_offset = events_.size();
  ids_[req.persistence_id] = res.last_seq;
  if (!batch.empty())
    undelivered_.push_back(std::move(batch));
}

void memory_journal::deliver_pending() {
  // Whoever finds no delivery in progress delivers every queued batch, in commit order;
  // listeners run without the lock so that they may append (the batch is queued and the
  // loop below picks it up instead of recursing).
  std::unique_lock lk{mtx_};
  if (delivering_)
    return;
  delivering_ = true;
  while (!undelivered_.empty()) {
    auto batch = std::move(undelivered_.front());
    undelivered_.pop_front();
    std::vector<std::shared_ptr<commit_listener>> targets;
    targets.reserve(listeners_.size());
    for (auto& [handle, f] : listeners_)
      targets.push_back(f);
    lk.unlock();
    for (auto& f : targets)
      (*f)(batch);
    lk.lock();
  }
  delivering_ = false;
}

void memory_journal::read_stream(std::string persistence_id, std::uint64_t from_seq,
                                 std::uint64_t to_seq, std::size_t max,
                                 callback<std::vector<event_record>> done) {
  std::vector<event_record> result;
  {
    std::lock_guard guard{mtx_};
    if (auto i = streams_.find(persistence_id); i != streams_.end()) {
      const auto& stream = i->second;
      auto first = std::max<std::uint64_t>(from_seq, 1);
      for (auto seq = first; seq <= stream.size() && seq <= to_seq && result.size() < max; ++seq)
        result.push_back(events_[stream[seq - 1]]);
    }
  }
  done(std::move(result));
}

void memory_journal::read_all(std::uint64_t from_offset, std::size_t max,
                              callback<std::vector<event_record>> done) {
  std::vector<event_record> result;
  {
    std::lock_guard guard{mtx_};
    auto first = std::max<std::uint64_t>(from_offset, 1);
    for (auto off = first; off <= events_.size() && result.size() < max; ++off)
      result.push_back(events_[off - 1]);
  }
  done(std::move(result));
}

void memory_journal::read_tagged(std::string tag, std::uint64_t from_offset, std::size_t max,
                                 callback<std::vector<event_record>> done) {
  std::vector<event_record> result;
  {
    std::lock_guard guard{mtx_};
    if (auto i = tagged_.find(tag); i != tagged_.end()) {
      const auto& indices = i->second;
      auto first =
        std::lower_bound(indices.begin(), indices.end(), from_offset,
                         [](std::size_t index, std::uint64_t off) { return index + 1 < off; });
      for (; first != indices.end() && result.size() < max; ++first)
        result.push_back(events_[*first]);
    }
  }
  done(std::move(result));
}

void memory_journal::highest_seq(std::string persistence_id, callback<std::uint64_t> done) {
  std::uint64_t result = 0;
  {
    std::lock_guard guard{mtx_};
    if (auto i = ids_.find(persistence_id); i != ids_.end())
      result = i->second;
  }
  done(result);
}

void memory_journal::head_offset(callback<std::uint64_t> done) {
  std::uint64_t result = 0;
  {
    std::lock_guard guard{mtx_};
    result = events_.size();
  }
  done(result);
}

void memory_journal::persistence_ids(std::string after, std::size_t max,
                                     callback<std::vector<std::string>> done) {
  std::vector<std::string> result;
  {
    std::lock_guard guard{mtx_};
    for (auto i = ids_.upper_bound(after); i != ids_.end() && result.size() < max; ++i)
      result.push_back(i->first);
  }
  done(std::move(result));
}

std::uint64_t memory_journal::subscribe(commit_listener f) {
  std::lock_guard guard{mtx_};
  auto handle = next_listener_++;
  listeners_.emplace(handle, std::make_shared<commit_listener>(std::move(f)));
  return handle;
}

void memory_journal::unsubscribe(std::uint64_t handle) {
  std::lock_guard guard{mtx_};
  listeners_.erase(handle);
}

void memory_journal::fail_appends_with(caf::error err) {
  std::lock_guard guard{mtx_};
  injected_failure_ = std::move(err);
}

// -- memory_snapshot_store ------------------------------------------------------------

memory_snapshot_store::memory_snapshot_store(std::size_t keep)
  : keep_(std::max<std::size_t>(keep, 1)) {}

memory_snapshot_store::~memory_snapshot_store() = default;

void memory_snapshot_store::save(snapshot_record snap, callback<caf::unit_t> done) {
  if (auto err = internal::validate(snap)) {
    done(std::move(err));
    return;
  }
  {
    std::lock_guard guard{mtx_};
    if (snap.timestamp_us == 0)
      snap.timestamp_us = internal::now_us();
    auto& snaps = snaps_[snap.persistence_id];
    auto seq = snap.seq;
    snaps.insert_or_assign(seq, std::move(snap));
    while (snaps.size() > keep_)
      snaps.erase(snaps.begin());
  }
  done(caf::unit);
}

void memory_snapshot_store::load(std::string persistence_id,
                                 callback<std::vector<snapshot_record>> done) {
  std::vector<snapshot_record> result;
  {
    std::lock_guard guard{mtx_};
    if (auto i = snaps_.find(persistence_id); i != snaps_.end())
      for (auto j = i->second.rbegin(); j != i->second.rend(); ++j)
        result.push_back(j->second);
  }
  done(std::move(result));
}

} // namespace annals::persistence
